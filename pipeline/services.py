"""The long-lived parts one process needs (catalog, object store, registry, signing keys), opened once."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ocr.models import OcrOptions
from pipeline.catalog import Catalog, load_catalog
from pipeline.settings import Settings, get_settings
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys
from storage.objects import ObjectStore, open_store
from storage.registry import Registry


@dataclass
class Services:
    """Opened lazily so that a command pays only for what it uses."""

    settings: Settings = field(default_factory=get_settings)

    def __post_init__(self) -> None:
        self.settings.ensure_dirs()

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog()

    @cached_property
    def store(self) -> ObjectStore:
        return open_store(self.settings)

    @cached_property
    def registry(self) -> Registry:
        return Registry.from_settings(self.settings)

    @cached_property
    def pki(self) -> DevPki:
        return ensure_dev_pki(
            self.settings.resolved_pki_dir,
            self.settings.pki_passphrase.get_secret_value().encode(),
            agency_name=self.settings.agency_name,
        )

    @cached_property
    def keys(self) -> SigningKeys:
        return SigningKeys(self.pki, self.settings.pki_passphrase.get_secret_value().encode())

    @property
    def ocr_options(self) -> OcrOptions:
        s = self.settings
        return OcrOptions(
            language=s.ocr_language, jobs=s.ocr_jobs, max_image_pixels=s.max_image_pixels, max_pages=s.max_pages
        )
