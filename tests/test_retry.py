"""Transient or not (pipeline.core.retry.is_transient), the backoff policy, and the archive's retries — no servers:
the outages here are real refusals from loopback ports nothing listens on."""

from __future__ import annotations

import pickle
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg.errors
import pytest
import requests
import sqlalchemy as sa
from minio.error import S3Error, ServerError
from support.servers import free_ports
from urllib3.exceptions import MaxRetryError, NewConnectionError, SSLError

from pipeline.core.errors import (
    ConfigurationError,
    DossierBusy,
    InProgressElsewhere,
    InputCorrupt,
    IntegrityError,
    InvalidState,
    StorageFailed,
    UnknownProcedure,
)
from pipeline.core.retry import RetryPolicy, is_transient
from pipeline.core.settings import Settings
from pipeline.national.db import HttpNationalDb, NationalDbUnavailable
from pipeline.usecases.archive import BatchInput, process_one
from pipeline.usecases.services import Services
from storage.objects import LocalObjectStore, ObjectLocked, ObjectMissing, S3ObjectStore
from storage.records import AttemptWriter, release_unfinished, sweep
from storage.registry import Registry, utcnow

PROCEDURE = "business_household_registration"


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    return free_ports(1, with_grpc=False)[0]


def _raised(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BaseException as err:  # noqa: BLE001 — the test looks at what was raised
        return err
    raise AssertionError("nothing raised")


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "…", "/hoso/k", "req", "host")  # type: ignore[arg-type]


# --- the classification -------------------------------------------------------------------------


def test_database_outages_are_transient_bad_statements_are_not(closed_port: int, tmp_path: Path) -> None:
    refused = _raised(lambda: Registry(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/test"))
    assert isinstance(refused, StorageFailed) and is_transient(refused)  # the registry wraps the driver's error

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        missing_table = _raised(lambda: conn.execute(sa.text("SELECT * FROM nowhere")))
        bad_sql = _raised(lambda: conn.execute(sa.text("SELECT 1 UNION SELECT")))
    engine.dispose()
    assert isinstance(missing_table, sa.exc.OperationalError) and not is_transient(missing_table)
    assert isinstance(bad_sql, sa.exc.OperationalError) and not is_transient(bad_sql)
    locked = sa.exc.OperationalError("UPDATE d", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient(locked)
    assert is_transient(sa.exc.OperationalError("COMMIT", {}, psycopg.errors.SerializationFailure("conflict")))
    assert is_transient(sa.exc.OperationalError("x", {}, psycopg.errors.DeadlockDetected("deadlock")))
    assert not is_transient(sa.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup")))
    assert is_transient(StorageFailed("registry database error")) is False  # no cause: nothing says it will pass


def test_object_store_outages_are_transient_refusals_are_not(closed_port: int) -> None:
    down = _raised(lambda: S3ObjectStore(f"127.0.0.1:{closed_port}", "k", "s", "hoso", attempts=1))
    assert isinstance(down, StorageFailed) and is_transient(down)
    for code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
        assert is_transient(_s3_error(code)), code
    for code in ("AccessDenied", "NoSuchBucket", "InvalidArgument"):
        assert not is_transient(_s3_error(code)), code
    assert is_transient(ServerError("503 from the gateway", 503))
    refused = MaxRetryError(None, "/k", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    assert is_transient(refused)
    assert not is_transient(MaxRetryError(None, "/k", SSLError("certificate verify failed")))  # type: ignore[arg-type]
    assert not is_transient(ObjectMissing("no object")) and not is_transient(ObjectLocked("locked"))
    try:
        raise StorageFailed("S3 failed") from _s3_error("SlowDown")
    except StorageFailed as err:
        assert is_transient(err)


def test_national_db_outages_are_transient_a_refused_token_is_not(closed_port: int) -> None:
    client = HttpNationalDb(f"http://127.0.0.1:{closed_port}", timeout=0.5, retries=0)
    try:
        down = _raised(lambda: client.find_documents("001099000001", ["cccd"]))
    finally:
        client.close()
    assert isinstance(down, NationalDbUnavailable) and is_transient(down)
    request = httpx.Request("GET", "http://natdb/v1/x")
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.ReadTimeout("slow", request=request))
    for status, transient in ((503, True), (500, True), (429, True), (404, False), (403, False)):
        err = httpx.HTTPStatusError("s", request=request, response=httpx.Response(status, request=request))
        assert is_transient(err) is transient, status
    assert not is_transient(NationalDbUnavailable("refused the credentials (HTTP 401)", transient=False))


def test_timestamp_server_outages_are_transient(closed_port: int) -> None:
    down = _raised(lambda: requests.post(f"http://127.0.0.1:{closed_port}/tsa", data=b"", timeout=1))
    assert isinstance(down, requests.ConnectionError) and is_transient(down)
    assert is_transient(requests.ReadTimeout("slow TSA"))
    assert not is_transient(requests.exceptions.SSLError("certificate verify failed"))
    for status, transient in ((502, True), (400, False)):
        response = requests.Response()
        response.status_code = status
        assert is_transient(requests.HTTPError("TSA said no", response=response)) is transient, status


def test_bad_input_state_and_integrity_errors_are_never_transient() -> None:
    for err in (
        InputCorrupt("x"),
        UnknownProcedure("x"),
        InvalidState("x"),
        DossierBusy("x"),
        IntegrityError("x"),
        ConfigurationError("x"),
        RuntimeError("a bug"),
        ValueError("x"),
        OSError(28, "No space left"),
    ):
        assert not is_transient(err), err
    try:  # a permanent HosoError decides even over a transient-looking cause
        raise InputCorrupt("truncated") from ConnectionResetError()
    except InputCorrupt as err:
        assert not is_transient(err)
    assert is_transient(InProgressElsewhere("another desk holds it"))
    assert is_transient(ConnectionRefusedError()) and is_transient(TimeoutError())


def test_the_verdict_survives_pickling_which_drops_the_cause() -> None:
    try:
        raise StorageFailed("S3 unreachable", "Không lưu trữ được.") from ConnectionRefusedError()
    except StorageFailed as err:
        copy = pickle.loads(pickle.dumps(err))
    assert copy.__cause__ is None and is_transient(copy) and copy.message_vi == "Không lưu trữ được."
    assert not is_transient(pickle.loads(pickle.dumps(InputCorrupt("truncated"))))
    assert not is_transient(pickle.loads(pickle.dumps(StorageFailed("no cause"))))


# --- the policy ---------------------------------------------------------------------------------


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    policy = RetryPolicy(attempts=8, base_delay=1.0, max_delay=10.0)
    ceilings = [policy.ceiling(n) for n in range(1, 8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    for seed in range(20):
        waits = list(policy.delays(random.Random(seed)))
        assert len(waits) == 7
        assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    spread = {round(next(policy.delays(random.Random(seed))), 6) for seed in range(20)}
    assert len(spread) > 10  # jitter: workers hit by one outage do not come back in step
    assert list(RetryPolicy(attempts=1).delays()) == []


def test_call_retries_transient_errors_until_attempts_run_out() -> None:
    waits: list[float] = []
    told: list[int] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=4.0)
    assert policy.call(flaky, sleep=waits.append, on_retry=lambda n, e, w: told.append(n)) == "ok"
    assert calls == 3 and told == [1, 2] and len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0

    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError(f"attempt {calls}")

    with pytest.raises(TimeoutError, match="attempt 3"):
        RetryPolicy(attempts=3, base_delay=0.0).call(down, sleep=waits.append)
    assert calls == 3

    calls = 0

    def corrupt() -> None:
        nonlocal calls
        calls += 1
        raise InputCorrupt("truncated PDF")

    with pytest.raises(InputCorrupt):
        RetryPolicy(attempts=5, base_delay=0.0).call(corrupt, sleep=waits.append)
    assert calls == 1


def test_retry_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSO_RETRY_ATTEMPTS", "7")
    monkeypatch.setenv("HOSO_RETRY_BASE_DELAY", "0.25")
    monkeypatch.setenv("HOSO_RETRY_MAX_DELAY", "3")
    assert RetryPolicy.from_settings(Settings()) == RetryPolicy(7, 0.25, 3.0)
    monkeypatch.setenv("HOSO_RETRY_ATTEMPTS", "0")
    with pytest.raises(ValueError):
        Settings()


# --- the archive: a dossier retried while the database is down, bad input once ------------------


def test_archive_retries_a_database_outage_and_records_why_it_gave_up(closed_port: int, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var", natdb="off", database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/t"
    )
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(Path(__file__).parents[1].joinpath("pipeline/data/sample_dossier.pdf").read_bytes())
    with Services(settings) as services:
        result = process_one(BatchInput("scan.pdf", scan, PROCEDURE), services, retry=RetryPolicy(3, 0.01, 0.02))
    assert (result.outcome, result.attempts) == ("failed", 3)
    assert result.reason is not None and result.reason.startswith("storage_failed: ")
    assert "transient; gave up after 3 attempts" in result.reason


def test_archive_does_not_retry_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with Services(Settings(data_dir=tmp_path / "var", natdb="off")) as services:
        result = process_one(BatchInput("empty.pdf", empty, PROCEDURE), services, retry=RetryPolicy(5, 0.0))
    assert (result.outcome, result.attempts) == ("failed", 1)
    assert result.reason is not None and result.reason.startswith("input_empty: ")
    assert "transient" not in result.reason


# --- a retry is safe: an attempt whose rollback could not reach the registry ---------------------


def test_a_rollback_without_the_registry_is_released_by_its_process_then_swept(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    registry = Registry(f"sqlite:///{folder / 'registry.db'}")
    store = LocalObjectStore(tmp_path / "objects")
    try:
        writer = AttemptWriter.open(store, registry, "intake_forms", actor="archive", lease_for=timedelta(minutes=2))
        info = writer.put_bytes("dossiers/X-1/forms/mau-01.pdf", b"%PDF-1.7 form", "application/pdf")
        folder.rename(tmp_path / "db-away")  # the database goes away with the attempt half done
        registry.engine.dispose()
        assert writer.rollback(reason="registry down") is False  # nothing removed: the ledger cannot be asked
        assert store.stat(info.key, info.version_id) is not None
        (tmp_path / "db-away").rename(folder)
        live = registry.get_attempt(writer.id)
        assert live is not None and live.state == "open" and live.expires_at > utcnow()  # still looks held

        assert release_unfinished(registry) == 1  # the retry's first step
        released = registry.get_attempt(writer.id)
        assert released is not None and released.expires_at <= utcnow()
        assert release_unfinished(registry) == 0
        report = sweep(store, registry, {})
        assert [i["action"] for i in report.items] == ["attempt_swept", "object_removed"], report
        assert store.stat(info.key, info.version_id) is None
    finally:
        registry.close()
