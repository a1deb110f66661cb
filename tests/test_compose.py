"""docker-compose.yml cannot run here (no Docker engine); read it against the settings model instead."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest
import yaml
from support import testpki
from support.servers import free_ports

from pipeline.core.settings import Settings
from pipeline.national.auth import add_client
from pipeline.usecases.services import production_problems
from signing.pki import ROLES

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(TEXT)
SERVICES = COMPOSE["services"]
SECRETS_IN_CONTAINER = "/run/secrets"
#: Services that run once and exit (others run for good).
ONE_SHOT = {name for name, s in SERVICES.items() if s.get("restart") == "on-failure"}


#: A .env as an operator writes it (variables that need a particular form); any other becomes ``<VAR>``.
DOT_ENV = {"HOSO_PUBLIC_URL": "https://dichvucong.example.vn", "HOSO_TSA_URL": "https://tsa.example.vn/tsa"}


def _expand(value: str) -> str:
    """Interpolate as compose does: a required ``${VAR:?…}`` from :data:`DOT_ENV`, else ``<VAR>``."""
    value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: DOT_ENV.get(m.group(1), f"<{m.group(1)}>"), str(value))
    return value.replace("$$", "$")


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {k: _expand(v) for k, v in env.items()}


def _settings(env: dict[str, str]) -> Settings:
    """The settings a container with ``env`` (and nothing else of hoso's) reads."""
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("HOSO_")}, clear=True):
        return Settings()


def _mounted_secrets(service: str) -> dict[str, str]:
    """In-container path → secret name, for each secret the service mounts."""
    mounted = {}
    for entry in SERVICES[service].get("secrets", []):
        source, target = (entry, entry) if isinstance(entry, str) else (entry["source"], entry.get("target"))
        target = target or source
        mounted[target if target.startswith("/") else f"{SECRETS_IN_CONTAINER}/{target}"] = source
    return mounted


def test_worker_settings_are_known_fields_and_validate() -> None:
    env = _environment("worker")
    hoso_env = {k: v for k, v in env.items() if k.startswith("HOSO_")}
    known = {f"HOSO_{name.upper()}" for name in Settings.model_fields}
    assert hoso_env, "the worker must be configured through HOSO_* settings"
    assert set(hoso_env) <= known, f"unknown settings: {set(hoso_env) - known}"
    settings = _settings(hoso_env)
    assert settings.mode == "production" and settings.key_source == "pkcs12"
    assert settings.resolved_pki_dir == Path(SECRETS_IN_CONTAINER) and settings.pki_passphrase_file
    assert settings.store == "s3"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")


def test_worker_reaches_the_services_it_names() -> None:
    env = _environment("worker")
    assert env["HOSO_S3_ENDPOINT"].split(":")[0] in SERVICES
    db_host = re.search(r"@([^:/]+)", env["HOSO_DATABASE_URL"]).group(1)  # type: ignore[union-attr]
    assert db_host in SERVICES
    pg_env = _environment(db_host)
    assert f"//{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@" in env["HOSO_DATABASE_URL"]
    assert env["HOSO_DATABASE_URL"].endswith("/" + pg_env["POSTGRES_DB"])
    minio = _environment("minio")
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        env["HOSO_S3_ACCESS_KEY"],
        env["HOSO_S3_SECRET_KEY"],
    )
    assert env["PREFECT_API_URL"].split("//")[1].split(":")[0] in SERVICES
    assert env["PREFECT_API_AUTH_STRING"] == _environment("prefect-server")["PREFECT_SERVER_API_AUTH_STRING"]
    for dep in SERVICES["worker"]["depends_on"]:
        assert dep in SERVICES


def test_worker_command_is_a_real_module() -> None:
    command = SERVICES["worker"]["command"]
    assert command[:2] == ["python", "-m"]
    module = command[2]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("pipeline", "ocr", "signing", "storage", "flows"):
        assert f"COPY {package} {package}" in dockerfile


def test_image_runs_unprivileged_in_production_mode() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER hoso$", dockerfile, re.M)
    assert "HOSO_MODE=production" in dockerfile


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_ports_published_on_loopback_only(service: str) -> None:
    for port in SERVICES[service].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{service} publishes {port} beyond loopback"


def test_no_secret_has_a_fallback() -> None:
    """Every variable must be set (``${VAR:?message}``): no ``:-`` defaults, no 'change-me' passwords."""
    assert "change-me" not in TEXT
    references = re.findall(r"\$\{[^}]*\}", TEXT)
    assert references
    for ref in references:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", ref), f"{ref} can be left unset"
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PREFECT_DB_PASSWORD", "PREFECT_API_PASSWORD",
                 "HOSO_SECRETS"):
        assert f"${{{name}:?" in TEXT


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_restarts_and_reports_its_health(service: str) -> None:
    spec = SERVICES[service]
    if service in ONE_SHOT:  # runs once: others wait for it to complete successfully
        waiting = [s for s in SERVICES.values() if service in s.get("depends_on", {})]
        assert waiting and all(
            s["depends_on"][service]["condition"] == "service_completed_successfully" for s in waiting
        )
        return
    assert spec.get("restart") in ("unless-stopped", "always"), f"{service} has no restart policy"
    test = spec.get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL"), f"{service} has no healthcheck"


def test_health_urls_match_what_the_services_serve() -> None:
    def url(service: str) -> str:
        return re.search(r"http://[^']+", " ".join(SERVICES[service]["healthcheck"]["test"])).group(0)  # type: ignore[union-attr]

    natdb_port = SERVICES["natdb"]["command"][SERVICES["natdb"]["command"].index("--port") + 1]
    assert url("natdb") == f"http://127.0.0.1:{natdb_port}/health"
    assert url("prefect-server") == "http://127.0.0.1:4200/api/health"
    worker = _environment("worker")
    assert url("worker") == (
        f"http://{worker['PREFECT_WORKER_WEBSERVER_HOST']}:{worker['PREFECT_WORKER_WEBSERVER_PORT']}/health"
    )


def test_worker_reaches_the_national_database_service() -> None:
    env = _environment("worker")
    settings = _settings(env)
    assert settings.natdb == "http" and settings.natdb_url and settings.natdb_token_file
    host, port = settings.natdb_url.split("//")[1].rstrip("/").split(":")
    natdb = SERVICES[host]
    command = natdb["command"]
    assert command[:3] == ["python", "-m", "pipeline.national.service"]
    assert (ROOT / "pipeline" / "national" / "service.py").is_file()
    assert command[command.index("--port") + 1] == port
    # backed by the registry database the worker uses
    assert _environment(host)["HOSO_DATABASE_URL"] == env["HOSO_DATABASE_URL"]
    assert host in SERVICES["worker"]["depends_on"]
    # the worker and the service share a network
    assert set(natdb["networks"]) & set(SERVICES["worker"]["networks"])


def test_the_national_database_service_is_private_and_authenticated() -> None:
    natdb = SERVICES["natdb"]
    assert "ports" not in natdb and "expose" not in natdb
    for network in natdb["networks"]:
        assert COMPOSE["networks"][network].get("internal") is True, f"natdb on the non-internal {network}"
    # who else is on its networks: the worker, and the database it needs
    neighbours = {name for name, s in SERVICES.items() if set(s.get("networks", ["default"])) & set(natdb["networks"])}
    assert neighbours == {"natdb", "worker", "web", "postgres"}
    env = _environment("natdb")
    assert env["HOSO_MODE"] == "production"
    assert env["HOSO_NATDB_CLIENTS_FILE"] in _mounted_secrets("natdb")


@pytest.mark.parametrize("service", ["worker", "natdb", "web"])
def test_every_secret_path_is_mounted_from_a_required_folder(service: str) -> None:
    mounted = _mounted_secrets(service)
    env = _environment(service)
    paths = {p for v in env.values() for p in re.findall(rf"{SECRETS_IN_CONTAINER}/[\w.-]+", v)}
    if "HOSO_PKI_DIR" in env:  # the signing keys: <HOSO_PKI_DIR>/<role>.p12
        assert _settings(env).key_source == "pkcs12"
        paths |= {f"{env['HOSO_PKI_DIR']}/{role}.p12" for role in ROLES}
    assert paths, f"{service} reads no secret files"
    assert paths == set(mounted), f"{service}: read, not mounted {paths - set(mounted)}; unused {set(mounted) - paths}"
    for source in mounted.values():
        file = COMPOSE["secrets"][source]["file"]
        assert file.startswith("${HOSO_SECRETS:?"), file


def test_the_bucket_is_created_versioned_and_locked() -> None:
    command = " ".join(SERVICES["minio-init"]["command"])
    bucket = _settings(_environment("worker")).s3_bucket
    assert f"mc mb --ignore-existing --with-lock hoso/{bucket}" in command
    assert SERVICES["worker"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_worker_settings_pass_the_production_checks_once_its_secrets_exist(tmp_path: Path) -> None:
    """Put the files the worker's secrets name in place (agency-like keys, a token) and run the checks."""
    (port,) = free_ports(1, with_grpc=False)
    passphrase = "an-agency-passphrase"
    pki = testpki.materialise(tmp_path / "ca", port, passphrase.encode())
    host_secrets = tmp_path / "secrets"
    host_secrets.mkdir()
    token = add_client(host_secrets / "natdb-clients.yaml", "worker", ["verify", "read", "write"])
    sources = {
        "officer_p12": pki.p12("officer"), "approver_p12": pki.p12("approver"), "seal_p12": pki.p12("seal"),
        "trust_root": pki.root_cert,
    }
    contents = {"pki_passphrase": passphrase + "\n", "natdb_worker_token": token + "\n"}
    for path, source in _mounted_secrets("worker").items():
        target = host_secrets / "run" / Path(path).relative_to(SECRETS_IN_CONTAINER)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source in sources:
            shutil.copyfile(sources[source], target)
        else:
            target.write_text(contents[source])
    env = {k: v.replace(SECRETS_IN_CONTAINER, str(host_secrets / "run")) for k, v in _environment("worker").items()}
    settings = _settings(env | {"HOSO_DATA_DIR": str(tmp_path / "var")})
    assert production_problems(settings) == []
    assert settings.resolved_natdb_token() == token


def test_web_serves_the_workers_settings_on_loopback_with_a_health_check() -> None:
    """``hoso serve`` runs on the worker's settings, keys and national-database client (it runs the desk
    too), answers its healthcheck at /healthz on the port it binds, published on loopback only."""
    web = SERVICES["web"]
    command = web["command"]
    assert command[:4] == ["python", "-m", "pipeline.cli", "serve"]
    assert (ROOT / "pipeline" / "cli" / "__main__.py").is_file() and (ROOT / "pipeline" / "web" / "app.py").is_file()
    port = command[command.index("--port") + 1]
    assert web["ports"] == [f"127.0.0.1:{port}:{port}"]
    test = " ".join(web["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in test
    assert web["restart"] == "unless-stopped"
    hoso = {k: v for k, v in _environment("web").items() if k.startswith("HOSO_")}
    worker = {k: v for k, v in _environment("worker").items() if k.startswith("HOSO_")}
    # its own national-database client (see the next test); a pool worker's OCR processes are its own
    own = {"HOSO_NATDB_TOKEN_FILE", "HOSO_OCR_JOBS"}
    assert {k: v for k, v in hoso.items() if k not in own} == {k: v for k, v in worker.items() if k not in own}
    assert _settings(hoso).mode == "production"
    assert {p: s for p, s in _mounted_secrets("web").items() if "natdb" not in s} == \
        {p: s for p, s in _mounted_secrets("worker").items() if "natdb" not in s}
    for dep in ("postgres", "minio", "minio-init", "natdb"):
        assert dep in web["depends_on"]


def test_web_asks_the_national_databases_as_its_own_client() -> None:
    """The web service's national-database token is its own secret; the worker's (write) token is not
    mounted into it."""
    web, worker = _environment("web"), _environment("worker")
    assert web["HOSO_NATDB_TOKEN_FILE"] != worker["HOSO_NATDB_TOKEN_FILE"]
    web_secrets, worker_secrets = _mounted_secrets("web"), _mounted_secrets("worker")
    assert web_secrets[web["HOSO_NATDB_TOKEN_FILE"]] == "natdb_web_token"
    assert "natdb_worker_token" not in web_secrets.values()
    assert worker_secrets[worker["HOSO_NATDB_TOKEN_FILE"]] == "natdb_worker_token"


def test_workers_scale_on_one_work_pool_that_batches_use() -> None:
    """``docker compose up --scale worker=N``: nothing in the worker may be unique to one container, each runs
    one flow run at a time with one OCR process, on the pool the flows deploy to, with its health served."""
    from flows.worker import DEFAULT_POOL, main

    worker = SERVICES["worker"]
    assert not {"container_name", "ports", "hostname"} & set(worker), "a scaled service cannot fix these"
    command = worker["command"]
    assert command[:3] == ["python", "-m", "flows.worker"]
    pool = command[command.index("--pool") + 1]
    assert pool == DEFAULT_POOL and command[command.index("--limit") + 1] == "1"
    env = _environment("worker")
    assert _settings(env).ocr_jobs == 1
    assert env["PREFECT_WORKER_WEBSERVER_HOST"] == "127.0.0.1"  # health on loopback, inside the container
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    # the worker's command line is what flows.worker parses
    with pytest.raises(SystemExit) as usage:
        main(["--pool", pool, "--limit", "x"])
    assert usage.value.code == 2
