"""docker-compose.yml cannot run here (no Docker engine); read it against the settings model instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _expand(value: str) -> str:
    """Resolve ``${VAR:-default}`` the way compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _environment(service: str) -> dict[str, str]:
    env = COMPOSE["services"][service].get("environment", {})
    return {k: _expand(v) for k, v in env.items()}


def test_worker_settings_are_known_fields_and_validate() -> None:
    env = _environment("worker")
    hoso_env = {k: v for k, v in env.items() if k.startswith("HOSO_")}
    known = {f"HOSO_{name.upper()}" for name in Settings.model_fields}
    assert hoso_env, "the worker must be configured through HOSO_* settings"
    assert set(hoso_env) <= known, f"unknown settings: {set(hoso_env) - known}"
    settings = Settings(**{k.removeprefix("HOSO_").lower(): v for k, v in hoso_env.items()})
    assert settings.store == "s3"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")


def test_worker_reaches_the_services_it_names() -> None:
    env = _environment("worker")
    services = COMPOSE["services"]
    assert env["HOSO_S3_ENDPOINT"].split(":")[0] in services
    db_host = re.search(r"@([^:/]+)", env["HOSO_DATABASE_URL"]).group(1)  # type: ignore[union-attr]
    assert db_host in services
    pg_env = _environment(db_host)
    assert f"//{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@" in env["HOSO_DATABASE_URL"]
    assert env["HOSO_DATABASE_URL"].endswith("/" + pg_env["POSTGRES_DB"])
    minio = _environment("minio")
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        env["HOSO_S3_ACCESS_KEY"],
        env["HOSO_S3_SECRET_KEY"],
    )
    assert env["PREFECT_API_URL"].split("//")[1].split(":")[0] in services
    for dep in services["worker"]["depends_on"]:
        assert dep in services


def test_worker_command_is_a_real_module() -> None:
    command = COMPOSE["services"]["worker"]["command"]
    assert command[:2] == ["python", "-m"]
    module = command[2]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("pipeline", "ocr", "signing", "storage", "flows"):
        assert f"COPY {package} {package}" in dockerfile


@pytest.mark.parametrize("service", sorted(COMPOSE["services"]))
def test_ports_published_on_loopback_only(service: str) -> None:
    for port in COMPOSE["services"][service].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{service} publishes {port} beyond loopback"


def test_worker_reaches_the_national_database_service() -> None:
    env = _environment("worker")
    settings = Settings(**{k.removeprefix("HOSO_").lower(): v for k, v in env.items() if k.startswith("HOSO_")})
    assert settings.natdb == "http" and settings.natdb_url
    host, port = settings.natdb_url.split("//")[1].rstrip("/").split(":")
    natdb = COMPOSE["services"][host]
    command = natdb["command"]
    assert command[:3] == ["python", "-m", "pipeline.national.service"]
    assert (ROOT / "pipeline" / "national" / "service.py").is_file()
    assert command[command.index("--port") + 1] == port
    # backed by the registry database the worker uses
    assert _environment(host)["HOSO_DATABASE_URL"] == env["HOSO_DATABASE_URL"]
    assert host in COMPOSE["services"]["worker"]["depends_on"]
