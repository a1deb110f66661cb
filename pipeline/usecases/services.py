"""The long-lived parts one process needs (catalog, object store, registry, signing keys, OCR), opened once."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType

from asn1crypto import x509 as asn1_x509

from ocr.engine import page_pool
from ocr.models import OcrOptions
from ocr.plugin import OcrEngine, load_engine
from pipeline.core.settings import Settings, get_settings
from pipeline.domain.catalog import Catalog, load_catalog
from pipeline.national.db import NationalDb, open_national_db
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys
from signing.tokens import Pkcs11Keys
from signing.verify import load_trust_roots
from storage.objects import ObjectStore, open_store
from storage.registry import Registry


@dataclass
class Services:
    """Opened lazily so that a command pays only for what it uses; :meth:`close` (or ``with``) ends them."""

    settings: Settings = field(default_factory=get_settings)
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.settings.ensure_dirs()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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

    def national_db(self) -> NationalDb:
        """A connection to the national databases the settings name; the caller closes it."""
        return open_national_db(self.settings, self.registry)

    @property
    def ocr_options(self) -> OcrOptions:
        s = self.settings
        return OcrOptions(
            language=s.ocr_language, jobs=s.ocr_jobs, max_image_pixels=s.max_image_pixels, max_pages=s.max_pages
        )

    @cached_property
    def ocr_engine(self) -> OcrEngine:
        """The page OCR engine HOSO_OCR_ENGINE names (a bad name is a ConfigurationError)."""
        return load_engine(self.settings.ocr_engine)

    @property
    def ocr_executor(self) -> Executor | None:
        """This process's page-OCR worker pool, made on first use; None when OCR runs one page at a time.

        A pool broken by a dead worker is replaced, so one crashed page does not fail every later dossier.
        """
        jobs = self.settings.ocr_jobs or os.cpu_count() or 1
        if jobs == 1:
            return None
        with self._pool_lock:
            # ProcessPoolExecutor marks itself _broken and then refuses all work; it offers no public test.
            if self._pool is not None and getattr(self._pool, "_broken", False):
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._pool is None:
                self._pool = page_pool(jobs)
            return self._pool

    def close(self) -> None:
        """Stop the OCR workers and release the registry's connections (whatever was opened)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if "registry" in self.__dict__:
            self.registry.close()

