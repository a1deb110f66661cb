"""One validated settings model for hoso, read from ``HOSO_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything hoso can be configured with; each field is ``HOSO_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOSO_", env_file=None, extra="ignore")

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

    # Registry database
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/registry.db")

    # Agency identity (dossier codes, receipts, results)
    agency_code: str = "000.00.00.H00"
    agency_name: str = "Trung tâm Phục vụ hành chính công xã (mẫu)"
    timezone: str = "Asia/Ho_Chi_Minh"

    # OCR
    ocr_engine: str = Field(
        "tesseract", description="Page OCR engine: tesseract, or module:attribute of a plugin (ocr/plugin.py)"
    )
    ocr_language: str = "vie"
    ocr_jobs: int = Field(0, ge=0, description="Page-parallel OCR processes; 0 = number of cores")
    max_image_pixels: int = Field(100_000_000, gt=0, description="Reject page images above this many pixels")
    max_pages: int = Field(2000, gt=0)

    # Signing
    pki_dir: Path | None = Field(None, description="Dev PKI folder; default <data_dir>/pki")
    pki_passphrase: SecretStr = SecretStr("hoso-dev")
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

    # National databases (population DB + citizen's electronic data store), pipeline/national/db.py
    natdb: Literal["embedded", "http", "off"] = Field(
        "embedded", description="embedded: in-process over the registry DB (synthetic seed); http: HOSO_NATDB_URL"
    )
    natdb_url: str | None = Field(None, description="Base URL of the national-database service (natdb=http)")
    natdb_timeout: float = Field(3.0, gt=0, description="Seconds per HTTP attempt")
    natdb_retries: int = Field(2, ge=0, le=10, description="Extra attempts after a transport error or 5xx")

    @property
    def resolved_store_path(self) -> Path:
        return self.store_path or self.data_dir / "objects"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'registry.db'}"

    @property
    def resolved_pki_dir(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"

    def ensure_dirs(self) -> None:
        """Create the data folder (and the local store) on demand."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.store == "local":
            self.resolved_store_path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
