"""The long-lived parts one process needs (catalog, object store, registry, signing keys), opened once."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from asn1crypto import x509 as asn1_x509

from ocr.models import OcrOptions
from pipeline.core.settings import Settings, get_settings
from pipeline.domain.catalog import Catalog, load_catalog
from pipeline.national.db import NationalDb, open_national_db
from signing.identities import SignerIdentities
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys
from signing.tokens import Pkcs11Keys
from signing.verify import load_trust_roots
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
    def keys(self) -> SigningKeys | Pkcs11Keys:
        """Signers by role: the dev PKI's PKCS#12 files, or a PKCS#11 token (HOSO_KEY_SOURCE=pkcs11)."""
        s = self.settings
        if s.key_source == "pkcs11":
            return Pkcs11Keys(s.pkcs11_module, s.pkcs11_token_label, s.pkcs11_pin_file, s.pkcs11_pin_env)
        return SigningKeys(self.pki, s.pki_passphrase.get_secret_value().encode())

    @cached_property
    def trust_roots(self) -> list[asn1_x509.Certificate]:
        """Configured trust roots (HOSO_TRUST_ROOTS), else the dev PKI's root."""
        paths: list[bytes | Path] = list(self.settings.trust_roots) or [self.pki.root_cert]
        return load_trust_roots(paths)

    @cached_property
    def signer_identities(self) -> SignerIdentities:
        """Who may sign in each role (HOSO_SIGNER_CERTS), else the key source's own certificates per role:
        the token's (HOSO_KEY_SOURCE=pkcs11) or the dev PKI's, with any it has replaced."""
        s = self.settings
        if s.signer_certs:
            return SignerIdentities.from_config(s.signer_certs)
        if s.key_source == "pkcs11" and isinstance(self.keys, Pkcs11Keys):
            return SignerIdentities.from_certificates(self.keys.role_certificates())
        return SignerIdentities.from_config(self.pki.identity_files())

    def national_db(self) -> NationalDb:
        """A connection to the national databases the settings name; the caller closes it."""
        return open_national_db(self.settings, self.registry)

    @property
    def ocr_options(self) -> OcrOptions:
        s = self.settings
        return OcrOptions(
            language=s.ocr_language, jobs=s.ocr_jobs, max_image_pixels=s.max_image_pixels, max_pages=s.max_pages
        )
