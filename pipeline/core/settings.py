"""One validated settings model for hoso, read from ``HOSO_*`` environment variables."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.core.errors import ConfigurationError

#: The development PKI's passphrase: public (it is in this file), so production refuses it.
DEV_PKI_PASSPHRASE = "hoso-dev"


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret file (a mounted compose/Kubernetes secret), stripped; never logged."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigurationError(
            f"cannot read {what} from {path}: {reason}", f"Không đọc được tệp bí mật cấu hình ({path})."
        ) from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigurationError(f"{what} file {path} is empty", f"Tệp bí mật cấu hình rỗng ({path}).")
    return secret


#: What a stored object is, for how long it is kept (``HOSO_RETENTION``); see storage/records.py.
RecordClass = Literal["input", "digitised", "manifest", "result", "form"]


class RetentionRule(BaseModel):
    """Keep every version of a record class under object lock for ``years`` (+ ``days``) after it is recorded.

    COMPLIANCE binds everyone, the storage administrator included; GOVERNANCE can be lifted by a holder
    of the bypass permission. Retention can be extended, never shortened.
    """

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    years: int = Field(0, ge=0, le=1000)
    days: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _some_time(self) -> RetentionRule:
        if not (self.years or self.days):
            raise ValueError("a retention rule needs years or days")
        return self

    def until(self, start: datetime) -> datetime:
        """When retention that starts at ``start`` ends (calendar years; 29 February becomes 28)."""
        year = start.year + self.years
        try:
            moved = start.replace(year=year)
        except ValueError:
            moved = start.replace(year=year, day=28)
        return moved + timedelta(days=self.days)


DEFAULT_RETENTION: dict[str, dict[str, Any] | None] = {
    "input": {"mode": "GOVERNANCE", "years": 10},
    "digitised": {"mode": "COMPLIANCE", "years": 10},
    "manifest": {"mode": "GOVERNANCE", "years": 10},
    "result": {"mode": "COMPLIANCE", "years": 20},
    "form": {"mode": "GOVERNANCE", "years": 10},
}


def _default_retention() -> dict[RecordClass, RetentionRule | None]:
    rules: dict[Any, RetentionRule | None] = {
        name: None if rule is None else RetentionRule.model_validate(rule) for name, rule in DEFAULT_RETENTION.items()
    }
    return rules


class Settings(BaseSettings):
    """Everything hoso can be configured with; each field is ``HOSO_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOSO_", env_file=None, extra="ignore")

    mode: Literal["development", "production"] = Field(
        "development",
        description="production refuses development stand-ins (dev PKI, default passphrase, embedded national "
        "DB, unauthenticated national DB client, unprotected object store): pipeline/usecases/services.py",
    )
    data_dir: Path = Field(Path("var"), description="Working data folder, created on demand")

    # Object storage
    store: Literal["local", "s3"] = "local"
    store_path: Path | None = Field(None, description="Local store root; default <data_dir>/objects")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "hoso"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_attempts: int = Field(
        3, ge=1, le=20, description="Tries of each S3 call when the server is unreachable or failing (backoff 0.5 s, "
        "doubled); each try has the SDK's own 3 connection tries"
    )

    # Records that last (storage/records.py)
    retention: dict[RecordClass, RetentionRule | None] = Field(
        default_factory=lambda: _default_retention(),
        description="Object lock per record class once recorded, JSON merged over the defaults, e.g. "
        '{"result": {"mode": "COMPLIANCE", "years": 50}, "input": null} (null: not locked)',
    )
    lease_seconds: float = Field(
        120.0, gt=0, description="A desk's hold on a reservation lasts this long unless renewed (renewed as it writes)"
    )
    lease_wait_seconds: float = Field(
        30.0, ge=0, description="How long a second desk with the same input waits for the first before it gives up"
    )
    late_worker_seconds: float = Field(
        120.0,
        ge=0,
        description="How long a finished archive batch waits for its worker runs still starting or ending before it "
        "marks them Cancelled (never started) or Crashed (their worker gone)",
    )

    # Retries of work that a transient error stopped (pipeline/core/retry.py)
    retry_attempts: int = Field(
        4, ge=1, le=50, description="Attempts in all at one dossier when an outage (storage, database) stops it"
    )
    retry_base_delay: float = Field(2.0, ge=0, description="Seconds before the first retry; doubled each time")
    retry_max_delay: float = Field(60.0, ge=0, description="Longest wait between two attempts (jitter: half to all)")

    # Registry database
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/registry.db")

    # Agency identity (dossier codes, receipts, results)
    agency_code: str = "000.00.00.H00"
    agency_name: str = "Trung tâm Phục vụ hành chính công xã (mẫu)"
    timezone: str = "Asia/Ho_Chi_Minh"
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Public base URL of the citizen lookup; printed forms' QR codes point here"
    )

    # OCR
    ocr_engine: str = Field(
        "tesseract", description="Page OCR engine: tesseract, or module:attribute of a plugin (ocr/plugin.py)"
    )
    ocr_language: str = "vie"
    ocr_jobs: int = Field(0, ge=0, description="Page-parallel OCR processes; 0 = number of cores")
    ocr_keep_hours: float = Field(
        24.0, ge=0, description="Keep a dossier's OCR output until it is recorded (<data_dir>/ocr-results), so a "
        "retry after an outage does not OCR it again; at most this long. 0: keep nothing (ocr/result_cache.py)",
    )
    max_image_pixels: int = Field(100_000_000, gt=0, description="Reject page images above this many pixels")
    max_pages: int = Field(2000, gt=0)

    # Signing
    pki_dir: Path | None = Field(None, description="Dev PKI folder; default <data_dir>/pki")
    pki_passphrase: SecretStr = SecretStr(DEV_PKI_PASSPHRASE)
    pki_passphrase_file: Path | None = Field(None, description="File holding the PKCS#12 passphrase (wins)")
    tsa_url: str | None = None
    officer_name: str = "Cán bộ tiếp nhận"
    level_digitised: Literal["B-B", "B-T", "B-LT", "B-LTA"] = Field("B-T", description="PAdES level, desk copy")
    level_result: Literal["B-B", "B-T", "B-LT", "B-LTA"] = Field("B-LTA", description="PAdES level, e-result")
    trust_roots: list[Path] = Field(default_factory=list, description="Trusted roots (PEM); default: dev PKI root")
    key_source: Literal["pkcs12", "pkcs11"] = Field("pkcs12", description="pkcs12: dev PKI files; pkcs11: token")
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    pkcs11_token_label: str = "hoso"
    pkcs11_pin_env: str = Field("HOSO_PKCS11_PIN", description="Name of the env variable holding the token PIN")
    pkcs11_pin_file: Path | None = Field(None, description="File holding the token PIN (wins over the env var)")
    refresh_before_days: int = Field(365, gt=0, description="`hoso signing refresh`: renew this long before expiry")
    seal_image: Path | None = Field(None, description="PNG of the agency seal, drawn in the seal's visible stamp")
    signer_certs: dict[Literal["officer", "approver", "seal"], list[str]] = Field(
        default_factory=dict,
        description="Who may sign in each role: PEM/DER files or SHA-256 fingerprints (JSON); default: key source's",
    )

    # National databases (population DB + citizen's electronic data store), pipeline/national/db.py
    natdb: Literal["embedded", "http", "off"] = Field(
        "embedded", description="embedded: in-process over the registry DB (synthetic seed); http: HOSO_NATDB_URL"
    )
    natdb_url: str | None = Field(None, description="Base URL of the national-database service (natdb=http)")
    natdb_timeout: float = Field(3.0, gt=0, description="Seconds per HTTP attempt")
    natdb_retries: int = Field(2, ge=0, le=10, description="Extra attempts after a transport error or 5xx")
    natdb_token: SecretStr | None = Field(None, description="Bearer token of this client at the service")
    natdb_token_file: Path | None = Field(None, description="File holding the bearer token (wins over natdb_token)")
    natdb_clients_file: Path | None = Field(
        None, description="The service's clients (names, scopes, SHA-256 of tokens): pipeline/national/auth.py"
    )
    web_natdb_token: SecretStr | None = Field(
        None, description="`hoso serve`'s own national-database token: its own client, never the worker's"
    )
    web_natdb_token_file: Path | None = Field(None, description="File holding it (wins over web_natdb_token)")
    lookup_rate: int = Field(
        20, ge=1, description="`hoso serve`: citizen lookups and result checks per minute per client address"
    )
    upload_max_mb: int = Field(50, ge=1, le=2000, description="`hoso serve`: largest scan the desk page accepts")
    verify_max_mb: int = Field(20, ge=1, le=500, description="`hoso serve`: largest PDF the public verify page checks")
    session_hours: float = Field(10.0, gt=0, le=24 * 7, description="`hoso serve`: a staff sign-in lasts this long")

    @field_validator("retention", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        unknown = set(value) - set(DEFAULT_RETENTION)
        if unknown:
            raise ValueError(f"unknown record classes {sorted(unknown)}; known: {sorted(DEFAULT_RETENTION)}")
        return DEFAULT_RETENTION | value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or any(c.isspace() for c in rest):
            raise ValueError(f"HOSO_PUBLIC_URL must be an http(s) URL, not {value!r}")
        return value

    @property
    def resolved_store_path(self) -> Path:
        return self.store_path or self.data_dir / "objects"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'registry.db'}"

    @property
    def resolved_pki_dir(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"

    def resolved_pki_passphrase(self) -> str:
        """The PKCS#12 passphrase: from ``pki_passphrase_file`` if set, else ``pki_passphrase``."""
        if self.pki_passphrase_file is not None:
            return read_secret_file(self.pki_passphrase_file, "the PKCS#12 passphrase")
        return self.pki_passphrase.get_secret_value()

    def resolved_natdb_token(self) -> str | None:
        """This client's national-database token: from ``natdb_token_file`` if set, else ``natdb_token``."""
        if self.natdb_token_file is not None:
            return read_secret_file(self.natdb_token_file, "the national-database token")
        token = self.natdb_token.get_secret_value().strip() if self.natdb_token else ""
        return token or None

    def resolved_web_natdb_token(self) -> str | None:
        """``hoso serve``'s own national-database token: ``web_natdb_token_file`` if set, else ``web_natdb_token``."""
        if self.web_natdb_token_file is not None:
            return read_secret_file(self.web_natdb_token_file, "the web service's national-database token")
        token = self.web_natdb_token.get_secret_value().strip() if self.web_natdb_token else ""
        return token or None

    def for_web(self) -> Settings:
        """These settings as ``hoso serve`` uses them: the national-database client is the web service's own
        (HOSO_WEB_NATDB_TOKEN(_FILE)) in place of the worker's; unchanged when none is set."""
        if self.web_natdb_token_file is None and self.web_natdb_token is None:
            return self
        return self.model_copy(update={"natdb_token": self.web_natdb_token,
                                       "natdb_token_file": self.web_natdb_token_file})

    def ensure_dirs(self) -> None:
        """Create the data folder (and the local store) on demand, readable by this user alone (0700)."""
        _private_dir(self.data_dir)
        if self.store == "local":
            _private_dir(self.resolved_store_path)


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700; an existing folder is left as it is."""
    missing = []
    here = path
    while not here.exists() and here.parent != here:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
