"""HOSO_MODE=production fails closed: development stand-ins are refused with exit 17 before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support import testpki
from support.servers import SeaweedServer, free_ports

from pipeline.core.errors import ConfigurationError, ExitCode
from pipeline.core.settings import Settings
from pipeline.usecases.services import Services, production_problems, store_protection
from signing.pki import ensure_dev_pki
from storage.objects import LocalObjectStore, S3ObjectStore

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipeline" / "data" / "sample_dossier.pdf"
AGENCY_PASSPHRASE = "agency-passphrase-2f9c"


@pytest.fixture(scope="module")
def agency_pki(tmp_path_factory: pytest.TempPathFactory) -> testpki.TestPki:
    """Keys as an agency receives them from a CA: PKCS#12 per role, not made by hoso (the certomancer PKI)."""
    (port,) = free_ports(1, with_grpc=False)
    return testpki.materialise(tmp_path_factory.mktemp("agency-pki"), port, AGENCY_PASSPHRASE.encode())


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "pki-passphrase").write_text(AGENCY_PASSPHRASE + "\n")
    (folder / "natdb-token").write_text("worker-token-1234\n")
    return folder


def fit(agency_pki: testpki.TestPki, secrets_dir: Path, tmp_path: Path, **changes: object) -> Settings:
    """Production settings that pass every check (S3 named, not contacted), with ``changes``."""
    values: dict[str, object] = dict(
        mode="production", data_dir=tmp_path / "var", store="s3", pki_dir=agency_pki.directory,
        pki_passphrase_file=secrets_dir / "pki-passphrase", trust_roots=[agency_pki.root_cert],
        tsa_url="https://tsa.example.vn/tsa", natdb="http", natdb_url="http://natdb:8700",
        natdb_token_file=secrets_dir / "natdb-token",
    )
    return Settings(**(values | changes))  # type: ignore[arg-type]


def test_development_is_the_default_and_checks_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.mode == "development"
    services = Services(settings)
    services.check_production()  # a no-op: the demo and tests run on the embedded stand-ins
    assert services.keys.signer("officer") is not None
    assert (tmp_path / "pki" / "root-key.pem").is_file()  # the dev PKI, made on demand


def test_production_with_the_defaults_names_every_stand_in(tmp_path: Path) -> None:
    problems = production_problems(Settings(mode="production", data_dir=tmp_path))
    text = "\n".join(problems)
    for expected in ("passphrase is the development default", "no PKCS#12 file for the officer",
                     "HOSO_TRUST_ROOTS is unset", "HOSO_TSA_URL is unset", "HOSO_NATDB=embedded",
                     "HOSO_STORE=local"):
        assert expected in text, text
    services = Services(Settings(mode="production", data_dir=tmp_path))
    for opens in (lambda: services.store, lambda: services.registry, lambda: services.keys,
                  lambda: services.pki, lambda: services.trust_roots, services.national_db):
        with pytest.raises(ConfigurationError) as refused:
            opens()
        assert refused.value.exit_code == ExitCode.configuration
        assert "HOSO_MODE=production" in refused.value.message_vi
    assert not (tmp_path / "pki").exists()  # no development PKI was generated
    assert not (tmp_path / "registry.db").exists()


def test_production_refuses_an_auto_generated_dev_pki(tmp_path: Path, secrets_dir: Path,
                                                     agency_pki: testpki.TestPki) -> None:
    dev = ensure_dev_pki(tmp_path / "pki", AGENCY_PASSPHRASE.encode())  # even under a private passphrase
    settings = fit(agency_pki, secrets_dir, tmp_path, pki_dir=dev.directory, trust_roots=[dev.root_cert])
    problems = "\n".join(production_problems(settings))
    assert "CA keys of an auto-generated development PKI" in problems
    assert "officer.p12 is issued by the hoso development CA" in problems
    assert "is the hoso development root" in problems
    (dev.directory / "root-key.pem").unlink()
    (dev.directory / "intermediate-key.pem").unlink()
    assert "issued by the hoso development CA" in "\n".join(production_problems(settings))


def test_production_accepts_agency_keys_and_credentials(tmp_path: Path, secrets_dir: Path,
                                                        agency_pki: testpki.TestPki) -> None:
    assert production_problems(fit(agency_pki, secrets_dir, tmp_path)) == []
    pkcs11 = fit(agency_pki, secrets_dir, tmp_path, key_source="pkcs11", pki_dir=tmp_path / "nothing")
    assert production_problems(pkcs11) == []  # keys on a token: no PKCS#12 files needed
    services = Services(fit(agency_pki, secrets_dir, tmp_path))
    assert services.keys.signer("seal") is not None  # the agency's PKCS#12, opened with the file's passphrase
    assert not (agency_pki.directory / "root-key.pem").exists()  # nothing generated beside them


@pytest.mark.parametrize("change, expected", [
    ({"pki_passphrase_file": None, "pki_passphrase": "hoso-dev"}, "passphrase is the development default"),
    ({"pki_passphrase_file": Path("/nonexistent/pass")}, "cannot read the PKCS#12 passphrase"),
    ({"pki_passphrase_file": None, "pki_passphrase": "wrong"}, "cannot be opened with the configured passphrase"),
    ({"natdb_token_file": None}, "needs this client's token"),
    ({"natdb_token_file": Path("/nonexistent/token")}, "cannot read the national-database token"),
    ({"natdb_url": None}, "needs HOSO_NATDB_URL"),
    ({"natdb": "embedded"}, "HOSO_NATDB=embedded"),
    ({"store": "local"}, "HOSO_STORE=local"),
    ({"tsa_url": None}, "HOSO_TSA_URL is unset"),
    ({"trust_roots": []}, "HOSO_TRUST_ROOTS is unset"),
])
def test_production_refuses_each_stand_in(tmp_path: Path, secrets_dir: Path, agency_pki: testpki.TestPki,
                                         change: dict[str, object], expected: str) -> None:
    problems = production_problems(fit(agency_pki, secrets_dir, tmp_path, **change))
    assert problems and expected in problems[0], problems  # a wrong passphrase also fails each file


def test_empty_token_file_is_refused(tmp_path: Path, secrets_dir: Path, agency_pki: testpki.TestPki) -> None:
    (secrets_dir / "natdb-token").write_text("\n")
    (problem,) = production_problems(fit(agency_pki, secrets_dir, tmp_path))
    assert "is empty" in problem and "worker-token" not in problem
    assert production_problems(fit(agency_pki, secrets_dir, tmp_path, natdb="off")) == []  # explicit opt-out


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_API_URL"))}
    return subprocess.run([sys.executable, *args], env=clean | env, capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.mark.slow  # `hoso` and worker runs
def test_the_cli_and_the_worker_stop_with_exit_17_before_any_work(tmp_path: Path) -> None:
    env = {"HOSO_MODE": "production", "HOSO_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)}
    ingest = _run(["-m", "pipeline.cli", "ingest", str(SAMPLE), "-p", "business_household_registration"], env,
                  tmp_path)
    assert ingest.returncode == 17, ingest.stderr
    (line,) = ingest.stderr.strip().splitlines()
    assert line.startswith("hoso: lỗi [configuration]: ") and "HOSO_NATDB=embedded" in line
    assert not (tmp_path / "var" / "pki").exists() and not (tmp_path / "var" / "registry.db").exists()
    worker = _run(["-m", "flows.serve"], env | {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, tmp_path)
    assert worker.returncode == 17, worker.stderr
    assert "lỗi [configuration]" in worker.stderr and "HOSO_STORE=local" in worker.stderr


def test_production_store_needs_versioning_and_object_lock(
    seaweedfs: SeaweedServer, tmp_path: Path, secrets_dir: Path, agency_pki: testpki.TestPki
) -> None:
    s3 = dict(s3_endpoint=seaweedfs.endpoint, s3_access_key=seaweedfs.access_key,
              s3_secret_key=seaweedfs.secret_key)
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigurationError, match="has no versioning or object_lock"):
        Services(fit(agency_pki, secrets_dir, tmp_path, s3_bucket=plain, **s3)).store  # noqa: B018
    locked = f"locked-{uuid.uuid4().hex[:8]}"
    probe = S3ObjectStore(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, plain)
    probe._client.make_bucket(locked, object_lock=True)  # what compose's minio-init does (mc mb --with-lock)
    store = Services(fit(agency_pki, secrets_dir, tmp_path, s3_bucket=locked, **s3)).store
    assert store_protection(store) == (True, True)
    assert store_protection(probe) == (False, False)
    assert store_protection(LocalObjectStore(tmp_path / "objects")) == (False, False)
    # development mode does not ask
    assert Services(Settings(data_dir=tmp_path / "dev", store="s3", s3_bucket=plain, **s3)).store  # type: ignore[arg-type]


def test_the_web_service_asks_the_national_databases_as_its_own_client(tmp_path: Path) -> None:
    """``hoso serve`` swaps in its own national-database token (HOSO_WEB_NATDB_TOKEN_FILE); the worker's token
    in its place is refused in production (exit 17) and only logged in development."""
    from pipeline.usecases.services import web_problems, web_services

    (tmp_path / "worker").write_text("worker-token-1234\n")
    (tmp_path / "web").write_text("web-token-5678\n")
    base = {"data_dir": tmp_path / "var", "natdb": "http", "natdb_url": "http://127.0.0.1:9",
            "natdb_token_file": tmp_path / "worker"}
    own = Settings(**base, web_natdb_token_file=tmp_path / "web")
    assert web_problems(own) == []
    assert own.for_web().resolved_natdb_token() == "web-token-5678"
    assert own.resolved_natdb_token() == "worker-token-1234"  # the worker's settings are untouched
    services = web_services(own)
    assert services.settings.resolved_natdb_token() == "web-token-5678"
    shared = Settings(**base, web_natdb_token_file=tmp_path / "worker")
    assert web_problems(shared) and web_services(shared).settings.resolved_natdb_token() == "worker-token-1234"
    with pytest.raises(ConfigurationError) as caught:
        web_services(Settings(**base, mode="production", web_natdb_token_file=tmp_path / "worker"))
    assert caught.value.exit_code == ExitCode.configuration and "worker's" in str(caught.value)
    alone = Settings(**base)  # an environment of its own: its HOSO_NATDB_TOKEN_FILE is its own client's
    assert web_problems(alone) == [] and alone.for_web() is alone
