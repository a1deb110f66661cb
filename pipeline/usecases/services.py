"""The long-lived parts one process needs (catalog, object store, registry, signing keys, OCR), opened once.

In production (``HOSO_MODE=production``) the development stand-ins are refused before anything is
opened — see :func:`production_problems` and :meth:`Services.check_production`.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from ocr.models import OcrOptions
from pipeline.core.errors import ConfigurationError
from pipeline.core.settings import DEV_PKI_PASSPHRASE, Settings, get_settings
from pipeline.domain.catalog import Catalog, load_catalog

# The heavy parts (OpenCV and the OCR engine, pyHanko, the national databases, SQLAlchemy, minio) are imported
# where they are first opened, so that `hoso --help`, `hoso status` and registry-only work never load them.
if TYPE_CHECKING:
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509

    from ocr.plugin import OcrEngine
    from ocr.result_cache import OcrResultCache
    from pipeline.domain.applicant import ReuseGuard
    from pipeline.national.db import NationalDb
    from signing.identities import SignerIdentities
    from signing.pki import DevPki
    from signing.signers import SigningKeys
    from signing.tokens import Pkcs11Keys
    from storage.objects import ObjectStore
    from storage.registry import Registry

log = logging.getLogger(__name__)

#: ``signing.pki.ensure_dev_pki`` names its CAs with this organisation; production trusts none of them.
DEV_PKI_ORGANISATION = "hoso (phát triển)"
#: Private keys of the dev PKI's CAs: a folder holding them was made by ``ensure_dev_pki``.
DEV_PKI_CA_KEYS = ("root-key.pem", "intermediate-key.pem")
#: PAdES levels that need an RFC 3161 timestamp server.
TIMESTAMPED_LEVELS = frozenset({"B-T", "B-LT", "B-LTA"})


class Protection(NamedTuple):
    versioning: bool
    object_lock: bool


def store_protection(store: ObjectStore) -> Protection:
    """Whether the store keeps every version of an object and can lock them (S3 versioning, object lock).

    Uses ``store.protection()`` when the store offers it; otherwise asks the S3 client of an
    :class:`storage.objects.S3ObjectStore` directly. A local directory has neither.
    """
    own = getattr(store, "protection", None)
    if callable(own):
        answer = own()
        return Protection(bool(answer.versioning), bool(answer.object_lock))
    client: Any = getattr(store, "_client", None)
    bucket = getattr(store, "bucket", None)
    if client is None or bucket is None:
        return Protection(False, False)
    from minio.error import S3Error

    try:
        versioning = client.get_bucket_versioning(bucket).status == "Enabled"
        try:
            client.get_object_lock_config(bucket)
            locked = True
        except S3Error as err:
            if err.code != "ObjectLockConfigurationNotFoundError":
                raise
            locked = False
    except Exception as err:  # the SDK raises S3Error, urllib3 errors, ValueError on odd XML
        raise ConfigurationError(
            f"cannot read the versioning / object lock configuration of bucket {bucket!r}: "
            f"{type(err).__name__}: {err}",
            "Không kiểm tra được cấu hình bảo vệ dữ liệu (versioning, object lock) của kho lưu trữ.",
        ) from err
    return Protection(versioning, locked)


def _is_dev_ca(cert: x509.Certificate) -> bool:
    from cryptography.x509.oid import NameOID

    names = [*cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
             *cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return any(n.value == DEV_PKI_ORGANISATION for n in names)


def _pkcs12_problems(settings: Settings) -> list[str]:
    from cryptography.hazmat.primitives.serialization import pkcs12

    from signing.pki import ROLES

    problems = []
    try:
        passphrase = settings.resolved_pki_passphrase()
    except ConfigurationError as err:
        return [str(err)]
    if passphrase in ("", DEV_PKI_PASSPHRASE):
        problems.append("the PKCS#12 passphrase is the development default: set HOSO_PKI_PASSPHRASE_FILE")
    folder = settings.resolved_pki_dir
    if any((folder / name).exists() for name in DEV_PKI_CA_KEYS):
        problems.append(f"{folder} holds the CA keys of an auto-generated development PKI")
    for role in ROLES:
        path = folder / f"{role}.p12"
        if not path.is_file():
            problems.append(f"no PKCS#12 file for the {role} at {path} (production never generates keys)")
            continue
        try:
            _, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), passphrase.encode())
        except (OSError, ValueError):
            problems.append(f"{path} cannot be opened with the configured passphrase")
            continue
        if any(_is_dev_ca(c) for c in [*([cert] if cert else []), *extra]):
            problems.append(f"{path} is issued by the hoso development CA")
    return problems


def _trust_problems(settings: Settings) -> list[str]:
    from cryptography import x509

    from signing.verify import load_trust_roots

    if not settings.trust_roots:
        return ["HOSO_TRUST_ROOTS is unset: production does not fall back to the development root"]
    problems = []
    for path in settings.trust_roots:
        try:
            certs = load_trust_roots([path])
        except ConfigurationError as err:
            problems.append(f"trust root {path}: {err}")
            continue
        if any(_is_dev_ca(x509.load_der_x509_certificate(c.dump())) for c in certs):
            problems.append(f"trust root {path} is the hoso development root")
    return problems


def _natdb_problems(settings: Settings) -> list[str]:
    if settings.natdb == "embedded":
        return ["HOSO_NATDB=embedded is the synthetic stand-in: use http (or off)"]
    if settings.natdb == "http":
        if not settings.natdb_url:
            return ["HOSO_NATDB=http needs HOSO_NATDB_URL"]
        try:
            if settings.resolved_natdb_token() is None:
                return ["HOSO_NATDB=http needs this client's token: HOSO_NATDB_TOKEN_FILE or HOSO_NATDB_TOKEN"]
        except ConfigurationError as err:
            return [str(err)]
    return []


def production_problems(settings: Settings) -> list[str]:
    """Why these settings are unfit for production (English, one line each); empty when fit.

    Reads the key, trust-root and token files the settings name; contacts no server (the object store's
    versioning and object lock are checked when it is opened: :meth:`Services.store`).
    """
    problems = []
    if settings.key_source == "pkcs12":
        problems += _pkcs12_problems(settings)
    problems += _trust_problems(settings)
    needs_tsa = {settings.level_digitised, settings.level_result} & TIMESTAMPED_LEVELS
    if needs_tsa and not settings.tsa_url:
        problems.append(f"HOSO_TSA_URL is unset but levels {', '.join(sorted(needs_tsa))} need a timestamp server")
    problems += _natdb_problems(settings)
    if settings.store == "local":
        problems.append("HOSO_STORE=local keeps no versions and cannot lock objects: use s3")
    return problems


def web_problems(settings: Settings) -> list[str]:
    """Why ``hoso serve`` would share the worker's national-database client (English, one line each).

    Over HTTP the web service asks as its own client: HOSO_WEB_NATDB_TOKEN(_FILE) where it shares the
    worker's environment, or its own HOSO_NATDB_TOKEN_FILE where it has an environment of its own (the
    compose file mounts it the web client's token and not the worker's). A web token equal to the
    worker's defeats that."""
    if settings.natdb != "http" or (settings.web_natdb_token_file is None and settings.web_natdb_token is None):
        return []
    try:
        own, worker = settings.resolved_web_natdb_token(), settings.resolved_natdb_token()
    except ConfigurationError as err:
        return [str(err)]
    if own is None:
        return ["HOSO_WEB_NATDB_TOKEN_FILE is empty"]
    if own == worker:
        return ["hoso serve's national-database token is the worker's: issue the web service its own "
                "(python -m pipeline.national.service issue-token --client web …)"]
    return []


def web_services(settings: Settings) -> Services:
    """The Services of ``hoso serve``: the worker's settings with the web service's own national-database
    client. Sharing the worker's is refused in production (exit 17) and logged in development."""
    problems = web_problems(settings)
    if problems and settings.mode == "production":
        raise _production_error(problems)
    for problem in problems:
        log.warning("%s", problem)
    return Services(settings.for_web())


def _production_error(problems: list[str]) -> ConfigurationError:
    return ConfigurationError(
        "HOSO_MODE=production refuses: " + "; ".join(problems),
        "Cấu hình chưa an toàn cho vận hành chính thức (HOSO_MODE=production); hệ thống từ chối chạy.",
    )


@dataclass
class Services:
    """Opened lazily so that a command pays only for what it uses; :meth:`close` (or ``with``) ends them."""

    settings: Settings = field(default_factory=get_settings)
    _production_checked: bool = field(default=False, init=False, repr=False)
    _pool: ProcessPoolExecutor | None = field(default=None, init=False, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.settings.ensure_dirs()

    def check_production(self) -> None:
        """In production mode, refuse settings that fall back on a development stand-in (exit 17).

        Runs (once) before any store, registry, key or national database is opened.
        """
        if self.settings.mode != "production" or self._production_checked:
            return
        problems = production_problems(self.settings)
        if problems:
            raise _production_error(problems)
        self._production_checked = True

    def preflight(self) -> None:
        """Open what a long-running worker needs now, so that bad configuration stops it at start."""
        from signing.pki import ROLES

        self.check_production()
        self.store  # noqa: B018
        self.registry  # noqa: B018
        for role in ROLES:
            self.keys.signer(role)
        self.trust_roots  # noqa: B018

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
        from storage.objects import open_store

        self.check_production()
        store = open_store(self.settings)
        if self.settings.mode == "production":
            protection = store_protection(store)
            if not (protection.versioning and protection.object_lock):
                missing = [name for name, on in protection._asdict().items() if not on]
                raise _production_error([f"bucket {self.settings.s3_bucket!r} has no {' or '.join(missing)}"])
        return store

    @cached_property
    def registry(self) -> Registry:
        from storage.registry import Registry

        self.check_production()
        return Registry.from_settings(self.settings)

    @cached_property
    def pki(self) -> DevPki:
        """The PKCS#12 files: the dev PKI (made on demand) in development; in production only existing files."""
        from signing.pki import ROLES, DevPki, ensure_dev_pki

        self.check_production()
        folder = self.settings.resolved_pki_dir
        if self.settings.mode == "production":
            return DevPki(directory=folder, root_cert=folder / "root.pem",
                          intermediate_cert=folder / "intermediate.pem",
                          p12={role: folder / f"{role}.p12" for role in ROLES},
                          certs={role: folder / f"{role}.pem" for role in ROLES})
        return ensure_dev_pki(
            folder, self.settings.resolved_pki_passphrase().encode(), agency_name=self.settings.agency_name
        )

    @cached_property
    def keys(self) -> SigningKeys | Pkcs11Keys:
        """Signers by role: PKCS#12 files (HOSO_PKI_DIR), or a PKCS#11 token (HOSO_KEY_SOURCE=pkcs11)."""
        from signing.signers import SigningKeys
        from signing.tokens import Pkcs11Keys

        self.check_production()
        s = self.settings
        if s.key_source == "pkcs11":
            return Pkcs11Keys(s.pkcs11_module, s.pkcs11_token_label, s.pkcs11_pin_file, s.pkcs11_pin_env)
        return SigningKeys(self.pki, s.resolved_pki_passphrase().encode())

    @cached_property
    def trust_roots(self) -> list[asn1_x509.Certificate]:
        """Configured trust roots (HOSO_TRUST_ROOTS), else (development only) the dev PKI's root."""
        from signing.verify import load_trust_roots

        self.check_production()
        paths: list[bytes | Path] = list(self.settings.trust_roots) or [self.pki.root_cert]
        return load_trust_roots(paths)

    @cached_property
    def signer_identities(self) -> SignerIdentities:
        """Who may sign in each role (HOSO_SIGNER_CERTS), else the key source's own certificates per role:
        the token's (HOSO_KEY_SOURCE=pkcs11) or the dev PKI's, with any it has replaced."""
        from signing.identities import SignerIdentities

        s = self.settings
        if s.signer_certs:
            return SignerIdentities.from_config(s.signer_certs)
        if s.key_source == "pkcs11" or s.mode == "production":  # the agency's own keys, token or files
            return SignerIdentities.from_certificates(self.keys.role_certificates())
        return SignerIdentities.from_config(self.pki.identity_files())

    def national_db(self) -> NationalDb:
        """A connection to the national databases the settings name; the caller closes it."""
        from pipeline.national.db import open_national_db

        self.check_production()
        return open_national_db(self.settings, self.registry)

    def reuse_guard(self) -> ReuseGuard:
        """What a stored document must pass to be reused in a dossier (domain/applicant.py)."""
        from pipeline.domain.applicant import ReuseGuard

        return ReuseGuard(self.store, [cert.dump() for cert in self.trust_roots], self.signer_identities)

    @property
    def ocr_options(self) -> OcrOptions:
        s = self.settings
        return OcrOptions(
            language=s.ocr_language, jobs=s.ocr_jobs, max_image_pixels=s.max_image_pixels, max_pages=s.max_pages
        )

    @cached_property
    def ocr_results(self) -> OcrResultCache | None:
        """This machine's completed OCR runs kept for retries (:mod:`ocr.result_cache`); None when turned off."""
        from ocr.result_cache import OcrResultCache

        hours = self.settings.ocr_keep_hours
        return OcrResultCache(self.settings.data_dir / "ocr-results", max_age=hours * 3600) if hours else None

    @cached_property
    def ocr_engine(self) -> OcrEngine:
        """The page OCR engine HOSO_OCR_ENGINE names (a bad name is a ConfigurationError)."""
        from ocr.plugin import load_engine

        return load_engine(self.settings.ocr_engine)

    @property
    def ocr_executor(self) -> Executor | None:
        """This process's page-OCR worker pool, made on first use; None when OCR runs one page at a time.

        A pool broken by a dead worker is replaced, so one crashed page does not fail every later dossier.
        """
        jobs = self.settings.ocr_jobs or os.cpu_count() or 1
        if jobs == 1:
            return None
        from ocr.engine import page_pool

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

