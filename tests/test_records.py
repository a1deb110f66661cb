"""Records that last, in one process: schema migrations, leases on reservations, attempts that own their
objects, locks after recording, the sweeper and fsck — on SQLite and PostgreSQL, a local store and
SeaweedFS with versioning and object lock."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.servers import SeaweedServer

from pipeline.core.errors import ConfigurationError, DossierNotFound, InProgressElsewhere, IntegrityError
from pipeline.core.models import DossierState
from pipeline.core.settings import RetentionRule, Settings
from storage import keys, schema
from storage.objects import LocalObjectStore, ObjectLocked, ObjectStore, S3ObjectStore
from storage.records import (
    AttemptWriter,
    holder_alive,
    holder_id,
    lock_recorded,
    new_attempt_id,
    read_recorded,
    sweep,
)
from storage.registry import IntakeClaim, Registry

AGENCY = "000.00.31.H26"
RECEIVED = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
LEASE = timedelta(minutes=2)
RETENTION = {name: rule for name, rule in Settings().retention.items()} | {
    "digitised": RetentionRule(mode="COMPLIANCE", days=1),
    "input": RetentionRule(mode="GOVERNANCE", days=1),
    "manifest": RetentionRule(mode="GOVERNANCE", days=1),
}


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = Registry(registry_url)
    yield reg
    reg.close()


@pytest.fixture(params=["local", pytest.param("s3-locked", marks=pytest.mark.slow)])  # S3: tests/test_objects.py
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    server: SeaweedServer = request.getfixturevalue("seaweedfs")
    return S3ObjectStore(server.endpoint, server.access_key, server.secret_key, f"r-{uuid.uuid4().hex[:12]}",
                         create_locked=True)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def claim(reg: Registry, name: str, attempt: str | None = None, **over: Any) -> IntakeClaim:
    args: dict[str, Any] = {
        "input_sha256": sha(name), "input_name": f"{name}.pdf", "procedure": "khai_sinh", "procedure_code": None,
        "agency_code": AGENCY, "received_at": RECEIVED, "due_at": RECEIVED + timedelta(days=3),
        "applicant_id": None, "actor": "desk-1", "attempt": attempt or new_attempt_id(), "holder": holder_id(),
        "lease_for": LEASE, "holder_alive": holder_alive,
    }
    return reg.claim_intake(**(args | over))


def write_intake(store: ObjectStore, reg: Registry, c: IntakeClaim, body: bytes = b"%PDF-1.7 scan") -> list[Any]:
    assert c.attempt is not None
    writer = AttemptWriter(store, reg, c.attempt)
    code = c.record.code
    return [
        (keys.INPUT, writer.put_bytes(keys.input_key(code, "scan.pdf"), body, "application/pdf", artifact="input")),
        (keys.DIGITISED, writer.put_bytes(keys.digitised_key(code), body + b" signed", "application/pdf",
                                          artifact=keys.DIGITISED)),
    ]


def finalize(reg: Registry, c: IntakeClaim, written: list[Any], attempt: str | None = None) -> Any:
    return reg.finalize_intake(
        c.record.code, state=DossierState.received, intake_status="accepted", documents=[], artifacts=written,
        receipt={"dossier_code": c.record.code}, actor="desk-1",
        attempt=attempt or (c.attempt.id if c.attempt else None),
    )


# --- schema -------------------------------------------------------------------------------------


def test_an_empty_database_is_migrated_to_head_and_matches_the_models(registry: Registry) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert registry.schema_revision() == schema.head()
    assert schema.state(registry.engine) == ("current", schema.head())
    with registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata())
    assert diff == [], "the models changed without a migration: add one under storage/migrations/versions"


def test_a_registry_from_before_migrations_is_refused_until_upgraded_and_keeps_its_data(registry_url: str) -> None:
    if registry_url.startswith("sqlite:///"):
        Path(registry_url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = sa.create_engine(registry_url)
    try:
        schema.upgrade(engine, schema.BASELINE)  # exactly what create_all made before migrations
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
            conn.execute(sa.text(
                "INSERT INTO dossiers (code, procedure, agency_code, input_sha256, input_name, state, received_at,"
                " due_at, created_at, updated_at) VALUES ('D-1', 'khai_sinh', 'A', :s, 'x.pdf', 'received',"
                " :t, :t, :t, :t)"), {"s": sha("old"), "t": RECEIVED.replace(tzinfo=None)})
            conn.execute(sa.text(
                "INSERT INTO artifacts (dossier_code, name, object_key, sha256, size, content_type, created_at)"
                " VALUES ('D-1', 'digitised', 'dossiers/D-1/digitised.pdf', :s, 3, 'application/pdf', :t)"),
                {"s": sha("pdf"), "t": RECEIVED.replace(tzinfo=None)})
        assert schema.state(engine) == ("unversioned", None)
        with pytest.raises(ConfigurationError, match="hoso db upgrade"):
            Registry(registry_url)
        assert schema.upgrade(engine) == (None, schema.head())
        reg = Registry(registry_url)
        try:
            assert reg.get("D-1").artifacts["digitised"].version_id is None
            (entry,) = reg.ledger(dossier_code="D-1")
            assert (entry.key, entry.status, entry.record_class) == ("dossiers/D-1/digitised.pdf", "final", "digitised")
        finally:
            reg.close()
        assert schema.upgrade(engine) == (schema.head(), schema.head())  # again: nothing to do
    finally:
        engine.dispose()


def test_a_registry_made_by_create_all_with_the_lifecycle_tables_is_upgraded(registry_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    if registry_url.startswith("sqlite:///"):
        Path(registry_url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = sa.create_engine(registry_url)
    try:
        schema.upgrade(engine, schema.BASELINE)
        tables = schema.metadata().tables
        with engine.begin() as conn:  # what the code between the lifecycle and migrations made
            conn.execute(sa.text("DROP TABLE alembic_version"))
            conn.execute(sa.text("ALTER TABLE events ADD COLUMN role VARCHAR(32)"))
            conn.execute(sa.text("ALTER TABLE events ADD COLUMN detail JSON"))
            for name in ("users", "api_tokens", "dossier_claims", "lookup_secrets"):
                tables[name].create(conn)
        assert schema.upgrade(engine) == (None, schema.head())
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata()) == []
    finally:
        engine.dispose()


def test_concurrent_first_connections_to_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL races: SQLite refuses one of two switchers at once, without waiting."""
    failures: list[BaseException] = []
    for round_ in range(40):
        url = f"sqlite:///{tmp_path}/r{round_}/registry.db"
        barrier = threading.Barrier(8)

        def connect(url: str = url, barrier: threading.Barrier = barrier) -> None:
            reg = Registry(url, upgrade="never")
            try:
                barrier.wait()
                with reg.engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
            except BaseException as err:
                failures.append(err)
            finally:
                reg.close()

        threads = [threading.Thread(target=connect) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with sqlite3.connect(tmp_path / f"r{round_}" / "registry.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not failures, failures[:3]


def test_concurrent_first_opens_migrate_once(registry_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        try:
            barrier.wait()
            Registry(registry_url).close()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    reg = Registry(registry_url)
    assert reg.schema_revision() == schema.head()
    reg.close()


@pytest.mark.slow  # `hoso db` runs
def test_db_commands(registry_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSO_")} | {
        "HOSO_DATA_DIR": str(tmp_path / "var"), "HOSO_DATABASE_URL": registry_url, "HOSO_MODE": "development"}

    def db(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "db", *args], env=env, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    before = db("current")
    assert before.returncode == 0 and before.stdout.startswith("(chưa có) (empty"), before.stdout + before.stderr
    up = db("upgrade")
    assert up.returncode == 0 and f"→ {schema.head()}" in up.stdout, up.stderr
    after = db("current")
    assert after.stdout.startswith(f"{schema.head()} (current"), after.stdout


# --- leases -------------------------------------------------------------------------------------


def test_a_live_lease_is_busy_an_expired_one_is_taken_over(registry: Registry) -> None:
    first = claim(registry, "scan")
    assert first.status == "new" and first.record.lease_attempt == first.attempt.id  # type: ignore[union-attr]
    second = claim(registry, "scan")
    assert second.status == "busy" and second.previous is not None and second.previous.id == first.attempt.id  # type: ignore[union-attr]
    assert second.record.code == first.record.code and second.attempt is None
    # its lease runs out (the desk hung): the next one takes over, the earlier attempt is superseded
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE attempts SET expires_at = :t"), {"t": datetime(2000, 1, 1)})
    third = claim(registry, "scan")
    assert third.status == "resumed" and third.record.code == first.record.code
    assert third.previous is not None and third.previous.id == first.attempt.id  # type: ignore[union-attr]
    assert registry.get_attempt(first.attempt.id).state == "superseded"  # type: ignore[union-attr]
    assert [e.action for e in registry.get(first.record.code).events] == ["reserve", "intake_resumed"]
    assert [a.action for a in registry.audit_log(dossier_code=first.record.code)] == ["intake_resumed"]
    # the superseded attempt can neither write nor record any more
    with pytest.raises(InProgressElsewhere):
        registry.intend(first.attempt.id, [("dossiers/x/y", None)], dossier_code=first.record.code)  # type: ignore[union-attr]
    with pytest.raises(InProgressElsewhere):
        finalize(registry, first, [], attempt=first.attempt.id)  # type: ignore[union-attr]
    with pytest.raises(InProgressElsewhere):
        registry.discard(first.record.code, attempt=first.attempt.id)  # type: ignore[union-attr]
    done = finalize(registry, third, [])
    assert done.state == DossierState.received and done.lease_attempt is None
    assert claim(registry, "scan").status == "done"


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(registry: Registry) -> None:
    dead = subprocess.run([sys.executable, "-c", "from storage.records import holder_id; print(holder_id())"],
                          capture_output=True, text=True, check=True,
                          env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    gone = dead.stdout.strip()
    assert holder_alive(gone) is False and holder_alive(holder_id()) is True
    assert holder_alive("elsewhere/1@other-boot/1/1") is None  # another machine: only the clock can tell
    assert claim(registry, "crashed", holder=gone).status == "new"
    again = claim(registry, "crashed")
    assert again.status == "resumed" and again.previous is not None and again.previous.holder == gone


def test_concurrent_claims_of_one_input_give_one_holder(registry: Registry) -> None:
    results: list[IntakeClaim] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(claim(registry, "the-same-scan"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(r.status for r in results) == ["busy", "busy", "busy", "new"]
    assert len({r.record.code for r in results}) == 1
    assert len(registry.list_dossiers()) == 1


# --- attempts own what they write ---------------------------------------------------------------


def test_rollback_removes_only_the_attempts_own_versions(store: ObjectStore, registry: Registry) -> None:
    winner = claim(registry, "scan")
    written = write_intake(store, registry, winner, b"%PDF winner")
    finalize(registry, winner, written)
    lock_recorded(store, registry, RETENTION)
    # a stale desk that wrote the same keys after the winner recorded them rolls back
    loser_attempt = registry.open_attempt("late-writer", attempt=new_attempt_id(), holder=holder_id(), actor="desk-2",
                                          lease_for=LEASE, dossier_code=winner.record.code)
    loser = AttemptWriter(store, registry, loser_attempt)
    loser.put_bytes(keys.digitised_key(winner.record.code), b"%PDF loser", "application/pdf")
    assert store.get_bytes(keys.digitised_key(winner.record.code)) == b"%PDF loser"  # on top, for now
    assert loser.rollback(reason="lost the race") is True
    record = registry.get(winner.record.code)
    for art in record.artifacts.values():
        info = store.stat(art.object_key)
        assert info is not None and info.version_id == art.version_id and info.sha256 == art.sha256
        assert info.lock is not None and info.lock.active()
    assert registry.get_attempt(loser_attempt.id).state == "rolled_back"  # type: ignore[union-attr]
    assert [e.status for e in registry.ledger(attempt=loser_attempt.id)] == ["removed"]


def test_a_finalised_record_is_never_destroyed(store: ObjectStore, registry: Registry) -> None:
    c = claim(registry, "kept")
    written = write_intake(store, registry, c)
    finalize(registry, c, written)
    assert {e.artifact for e in lock_recorded(store, registry, RETENTION)} == {"input", "digitised"}
    for _, info in written:
        with pytest.raises(ObjectLocked):
            store.delete_version(info.key, info.version_id)
    # a rollback that comes too late (the commit's answer was lost) keeps what the registry recorded
    late = AttemptWriter(store, registry, c.attempt)  # type: ignore[arg-type]
    late.written = [info for _, info in written]
    late.rollback()
    assert all(store.get_bytes(i.key, i.version_id) for _, i in written)


def test_recording_a_swept_attempts_version_is_refused(store: ObjectStore, registry: Registry) -> None:
    c = claim(registry, "result")
    finalize(registry, c, write_intake(store, registry, c))
    writer = AttemptWriter.open(store, registry, "result", actor="clerk", dossier_code=c.record.code)
    info = writer.put_bytes(keys.result_key(c.record.code), b"%PDF result", "application/pdf")
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE attempts SET expires_at = :t WHERE id = :id"),
                     {"t": datetime(2000, 1, 1), "id": writer.id})
    report = sweep(store, registry, RETENTION)
    assert any(i["action"] == "attempt_swept" and i["attempt"] == writer.id for i in report.items)
    assert store.stat(info.key, info.version_id) is None  # its unrecorded version is gone
    with pytest.raises(InProgressElsewhere):
        registry.transition(c.record.code, DossierState.returned, actor="clerk", action="result_issued",
                            artifacts=[(keys.RESULT, info)])
    assert registry.get(c.record.code).state == DossierState.received


def test_sweep_discards_a_stale_reservation_with_its_objects(store: ObjectStore, registry: Registry) -> None:
    stale = claim(registry, "crashed")
    write_intake(store, registry, stale)
    live = claim(registry, "in-flight")
    live_objects = write_intake(store, registry, live)
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE attempts SET expires_at = :t WHERE id = :id"),
                     {"t": datetime(2000, 1, 1), "id": stale.attempt.id})  # type: ignore[union-attr]
    report = sweep(store, registry, RETENTION)
    assert [i["action"] for i in report.items if i["dossier_code"] == stale.record.code] == ["reservation_discarded"]
    assert list(store.versions(keys.dossier_prefix(stale.record.code))) == []
    assert [r.code for r in registry.list_dossiers()] == [live.record.code]  # the live one is untouched
    assert all(store.get_bytes(i.key, i.version_id) for _, i in live_objects)
    audit = [a.action for a in registry.audit_log(dossier_code=stale.record.code)]
    assert "reservation_discarded" in audit
    with pytest.raises(DossierNotFound):  # the code is gone for good: never reused
        registry.get(stale.record.code)


# --- archive upkeep keeps the old version -------------------------------------------------------


@pytest.mark.slow  # the certomancer PKI's timestamp server
@pytest.mark.parametrize("backend", ["local", "s3-locked"])
def test_signature_refresh_writes_a_new_version_and_keeps_the_old(
    test_pki: Any, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    from test_lta import P12Keys, _received_dossier, ids

    from pipeline.usecases.clerk import issue_result
    from pipeline.usecases.fsck import fsck
    from pipeline.usecases.services import Services
    from pipeline.usecases.upkeep import refresh_stored

    pki = test_pki.pki
    store_settings: dict[str, Any] = {}
    if backend == "s3-locked":
        server: SeaweedServer = request.getfixturevalue("seaweedfs")
        bucket = f"r-{uuid.uuid4().hex[:12]}"
        S3ObjectStore(server.endpoint, server.access_key, server.secret_key, bucket, create_locked=True)
        store_settings = {"store": "s3", "s3_endpoint": server.endpoint, "s3_access_key": server.access_key,
                          "s3_secret_key": server.secret_key, "s3_bucket": bucket}
    settings = Settings(data_dir=tmp_path / "var", tsa_url=pki.tsa_url, trust_roots=[pki.root_cert],
                        level_result="B-LT",
                        signer_certs={r: [str(pki.cert_pem(r))] for r in ("officer", "approver", "seal")},
                        **store_settings)
    services = Services(settings)
    services.__dict__["keys"] = P12Keys(pki)
    code = _received_dossier(services)
    issue_result(code, services)
    store, registry = services.store, services.registry
    lock_recorded(store, registry, settings.retention)
    before = registry.get(code).artifacts[keys.RESULT]
    old = store.get_bytes(before.object_key, before.version_id)

    (item,) = refresh_stored(store, registry, tsa_url=pki.tsa_url, trust_roots=services.trust_roots,
                             trust_root_files=[pki.root_cert], within=timedelta(days=365), identities=ids(pki),
                             retention=settings.retention)
    assert item.action == "refreshed", item
    after = registry.get(code).artifacts
    renewed = after[keys.RESULT]
    assert renewed.object_key == before.object_key and renewed.version_id != before.version_id
    versions = [v.version_id for v in store.versions(before.object_key) if v.key == before.object_key]
    assert versions == [renewed.version_id, before.version_id]  # a new version on top, the old one kept
    assert store.get_bytes(before.object_key, before.version_id) == old
    with pytest.raises(ObjectLocked):
        store.delete_version(before.object_key, before.version_id)
    kept = after[keys.history_artifact(keys.RESULT, 1)]
    assert kept.object_key == item.history_key and store.get_bytes(kept.object_key, kept.version_id) == old
    for art in (renewed, kept):
        info = store.stat(art.object_key, art.version_id)
        assert info is not None and info.lock is not None and info.lock.mode == "COMPLIANCE"
    report = fsck(services)
    assert report.ok and report.findings == [], [f.detail for f in report.findings]
    signed = {n for n in after if n == keys.RESULT or n.startswith("form-")}
    assert report.checked["signatures"] == len(signed)  # not the kept earlier version nor the unsealed copy


def test_a_recorded_artifact_is_read_at_its_recorded_version(tmp_path: Path, registry: Registry) -> None:
    """What was written to a key after recording (another attempt, a stray writer) is never what the
    clerk seals, the portal verifies or staff see; bytes that fail the recorded SHA-256 are refused."""
    store = LocalObjectStore(tmp_path / "objects")
    c = claim(registry, "read-recorded")
    record = finalize(registry, c, write_intake(store, registry, c))
    digitised = registry.get(record.code).artifacts[keys.DIGITISED]
    store.put_bytes(digitised.object_key, b"%PDF-1.7 written later", "application/pdf")
    assert store.get_bytes(digitised.object_key) == b"%PDF-1.7 written later"
    assert read_recorded(store, digitised) == b"%PDF-1.7 scan signed"
    with pytest.raises(IntegrityError):
        read_recorded(store, digitised.model_copy(update={"sha256": sha("something else")}))
