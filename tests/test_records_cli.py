"""Nothing lost: real ``hoso`` processes at once, killed at every stage boundary, a storage outage in the
middle of an upload — then every input is exactly one dossier (or one recorded failure) and ``hoso fsck``
finds nothing. On SQLite and PostgreSQL, a local store and SeaweedFS with versioning and object lock;
the scripted OCR engine (the desk chain downstream of OCR is real)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from minio import Minio
from minio.error import S3Error
from support.cli import SAMPLE, Hoso
from support.servers import SeaweedServer, start_seaweedfs

from pipeline.core.errors import ExitCode
from storage import keys
from storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore, sha256_bytes
from storage.registry import Registry

PROCEDURE = "business_household_registration"
KILL_STAGES = [
    "record:after_reserve",
    "store:upload_half",
    "record:after_input",
    "record:after_objects",
    "record:after_finalize",
    "record:after_lock",
]


def distinct_inputs(folder: Path, n: int, *, tag: str = "copy") -> list[Path]:
    """``n`` copies of the sample dossier that differ in their bytes (their /Info title), so in their SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{tag}-{i}.pdf"
        with pikepdf.open(SAMPLE) as pdf:
            pdf.docinfo["/Title"] = f"{tag} {i} {uuid.uuid4().hex}"
            pdf.save(path)
        paths.append(path)
    return paths


def big_input(path: Path, side: int = 2200) -> Path:
    """A page photo of random noise (incompressible: ~14 MB as PNG), so its upload goes in several parts."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, compress_level=1)
    return path


def s3_env(server: SeaweedServer, bucket: str) -> dict[str, str]:
    return {"HOSO_STORE": "s3", "HOSO_S3_ENDPOINT": server.endpoint, "HOSO_S3_ACCESS_KEY": server.access_key,
            "HOSO_S3_SECRET_KEY": server.secret_key, "HOSO_S3_BUCKET": bucket}


def locked_bucket(server: SeaweedServer) -> str:
    """A new bucket with versioning and object lock, as compose's minio-init makes it."""
    bucket = f"hoso-{uuid.uuid4().hex[:10]}"
    Minio(server.endpoint, server.access_key, server.secret_key, secure=False).make_bucket(bucket, object_lock=True)
    return bucket


def start(hoso: Hoso, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The command in its own process group, output kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args], env=hoso.env | (env or {}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=hoso.data_dir.parent, start_new_session=True,
    )


def start_paused(hoso: Hoso, args: list[str], at: str, pause: Path) -> subprocess.Popen[str]:
    """The command started with its fault hook pausing at ``at``; returns once it waits there."""
    proc = start(hoso, *args, env={"HOSO_TEST_PAUSE_AT": at, "HOSO_TEST_PAUSE_FILE": str(pause)})
    deadline = time.monotonic() + 300
    while not pause.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pause.exists(), proc.communicate()[1][-3000:]
    return proc


def finish(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"hoso {proc.args} hung:\n{err[-2000:]}")
        done.append((proc.returncode, out, err))
    return done


def ingest_args(path: Path) -> list[str]:
    return ["ingest", str(path), "--procedure", PROCEDURE, "--json"]


def open_store(hoso: Hoso) -> ObjectStore:
    env = hoso.env
    if env.get("HOSO_STORE") == "s3":
        return S3ObjectStore(env["HOSO_S3_ENDPOINT"], env["HOSO_S3_ACCESS_KEY"], env["HOSO_S3_SECRET_KEY"],
                             env["HOSO_S3_BUCKET"])
    return LocalObjectStore(hoso.data_dir / "objects")


def fsck(hoso: Hoso, *args: str) -> dict[str, Any]:
    proc = hoso("fsck", "--json", *args, timeout=600)
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else ExitCode.failed), proc.stderr
    return report


def assert_consistent(hoso: Hoso, registry: Registry, dossiers: int) -> None:
    """Every listed artifact is stored as recorded (its version current, SHA-256 equal), and fsck finds nothing."""
    store = open_store(hoso)
    records = registry.list_dossiers()
    assert len(records) == dossiers, [(r.code, r.state) for r in records]
    for record in records:
        assert record.state != "receiving", record.code
        assert set(record.artifacts) >= {keys.INPUT, keys.DIGITISED, keys.MANIFEST}
        for art in record.artifacts.values():
            assert sha256_bytes(store.get_bytes(art.object_key, art.version_id)) == art.sha256
            current = store.stat(art.object_key)
            assert current is not None and current.version_id == art.version_id, art.object_key
            assert current.lock is not None and current.lock.active(), art.object_key
    report = fsck(hoso)
    assert report["findings"] == [] and report["ok"], json.dumps(report["findings"], indent=1)
    assert report["checked"]["signatures"] >= dossiers


# --- concurrent duplicates ----------------------------------------------------------------------


@pytest.mark.slow
def test_eight_desks_with_four_inputs_make_four_dossiers(tmp_path: Path, registry_url: str) -> None:
    hoso = Hoso(tmp_path / "var", {"HOSO_DATABASE_URL": registry_url, "HOSO_LEASE_WAIT_SECONDS": "600"})
    inputs = distinct_inputs(tmp_path / "in", 4)
    results = finish([start(hoso, *ingest_args(path)) for path in inputs * 2])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    receipts = [json.loads(out) for _, out, _ in results]
    for i in range(4):
        pair = [receipts[i], receipts[i + 4]]
        assert pair[0]["dossier_code"] == pair[1]["dossier_code"]
        assert sorted(r["already_done"] for r in pair) == [False, True]  # one received it, one was told so
    registry = hoso.registry
    try:
        assert len({r.input_sha256 for r in registry.list_dossiers()}) == 4
        assert_consistent(hoso, registry, 4)
    finally:
        registry.close()


@pytest.mark.slow
def test_a_desk_that_will_not_wait_is_told_in_progress_elsewhere(tmp_path: Path) -> None:
    hoso = Hoso(tmp_path / "var")
    (scan,) = distinct_inputs(tmp_path / "in", 1)
    pause = tmp_path / "paused"
    first = start_paused(hoso, ingest_args(scan), "record:after_reserve", pause)
    hoso.env["HOSO_LEASE_WAIT_SECONDS"] = "0"
    impatient = hoso(*ingest_args(scan), timeout=300)
    pause.unlink()
    ((rc, out, err),) = finish([first])
    assert rc == 0, err[-2000:]
    assert impatient.returncode == ExitCode.in_progress, impatient.stderr
    (line,) = impatient.stderr.strip().splitlines()
    assert line.startswith("hoso: lỗi [in_progress]: Hồ sơ này đang được tiếp nhận ở quầy khác")
    again = hoso(*ingest_args(scan))
    assert again.returncode == 0 and json.loads(again.stdout)["already_done"] is True
    assert json.loads(again.stdout)["dossier_code"] == json.loads(out)["dossier_code"]


@pytest.mark.slow
def test_an_input_rewritten_while_it_is_received_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    """Identified (and OCR'd) as one file, then rewritten before it is stored: the stored bytes would not
    be what the registry and the receipt describe, so the desk refuses it (exit 5) and keeps nothing."""
    hoso = Hoso(tmp_path / "var")
    scan, other = distinct_inputs(tmp_path / "in", 2)
    pause = tmp_path / "paused"
    desk = start_paused(hoso, ingest_args(scan), "record:after_reserve", pause)
    scan.write_bytes(other.read_bytes())
    pause.unlink()
    ((rc, out, err),) = finish([desk])
    assert rc == ExitCode.input_corrupt and out == "", err[-2000:]
    assert "changed while it was being received" in err and "Tệp đã thay đổi trong khi đang tiếp nhận" in err
    registry = hoso.registry
    try:
        assert [r.state for r in registry.list_dossiers()] == []
    finally:
        registry.close()
    assert hoso.stored_keys() == []


@pytest.mark.slow
def test_four_clerks_issue_one_result(tmp_path: Path, registry_url: str) -> None:
    """Deciding the winner before signing is the dossier lifecycle's (pipeline/usecases/lifecycle.py): until
    it is here, every run signs and stores its own result."""
    pytest.importorskip("pipeline.usecases.lifecycle", reason="the clerk that claims a dossier before signing")
    import re

    hoso = Hoso(tmp_path / "var", {"HOSO_DATABASE_URL": registry_url})
    (scan,) = distinct_inputs(tmp_path / "in", 1)
    received = hoso(*ingest_args(scan))
    assert received.returncode == 0, received.stderr
    code = json.loads(received.stdout)["dossier_code"]
    results = finish([start(hoso, "issue-result", code) for _ in range(4)])
    winners = [out for rc, out, _ in results if rc == 0]
    assert len(winners) == 1, [(rc, err[-500:]) for rc, _, err in results]
    assert all(rc == ExitCode.invalid_state for rc, _, _ in results if rc != 0)
    registry = hoso.registry
    try:
        art = registry.get(code).artifacts[keys.RESULT]
        store = open_store(hoso)
        info = store.stat(art.object_key)
        assert info is not None and (info.version_id, info.sha256) == (art.version_id, art.sha256)
        printed = re.search(r"mã tra cứu ([0-9A-F]{10})", winners[0])
        assert printed is not None and info.metadata["verification-code"] == printed.group(1)
        assert [v.version_id for v in store.versions(art.object_key)] == [art.version_id]  # one result stored
        report = fsck(hoso)
        assert report["ok"] and report["findings"] == [], report["findings"]
    finally:
        registry.close()


# --- fault injection ----------------------------------------------------------------------------


@pytest.mark.slow
def test_desks_killed_at_every_stage_end_in_one_dossier_each(tmp_path: Path, registry_url: str) -> None:
    hoso = Hoso(tmp_path / "var", {"HOSO_DATABASE_URL": registry_url, "HOSO_LEASE_WAIT_SECONDS": "600"})
    inputs = distinct_inputs(tmp_path / "in", len(KILL_STAGES))
    killed = finish([start(hoso, *ingest_args(path), env={"HOSO_TEST_DIE_AT": stage})
                     for path, stage in zip(inputs, KILL_STAGES, strict=True)])
    assert [rc for rc, _, _ in killed] == [-signal.SIGKILL] * len(KILL_STAGES), [e[-800:] for _, _, e in killed]
    registry = hoso.registry
    try:
        states = sorted(r.state for r in registry.list_dossiers())
        assert states == ["received"] * 2 + ["receiving"] * 4, states  # killed after recording / before it
        rerun = finish([start(hoso, *ingest_args(path)) for path in inputs])
        for (rc, out, err), stage in zip(rerun, KILL_STAGES, strict=True):
            assert rc == 0, (stage, err[-3000:])
            assert json.loads(out)["already_done"] is (stage in ("record:after_finalize", "record:after_lock"))
        assert len({r.input_sha256 for r in registry.list_dossiers()}) == len(KILL_STAGES)
        assert_consistent(hoso, registry, len(KILL_STAGES))
        resumed = [a for a in registry.audit_log() if a.action == "intake_resumed"]
        assert len(resumed) == 4  # each reservation a killed desk left was taken over, and says so
    finally:
        registry.close()


@pytest.mark.slow
def test_storage_outage_in_the_middle_of_an_upload_then_rerun(tmp_path: Path, registry_url: str) -> None:
    server = start_seaweedfs(tmp_path / "weed")
    try:
        bucket = locked_bucket(server)
        hoso = Hoso(tmp_path / "var", {"HOSO_DATABASE_URL": registry_url, **s3_env(server, bucket)})
        (tmp_path / "in").mkdir()
        big = big_input(tmp_path / "in" / "big-photo.png")
        assert big.stat().st_size > 12_000_000
        pause = tmp_path / "paused"
        hoso.env["HOSO_S3_ATTEMPTS"] = "1"  # each S3 call fails at once with the server gone (not after ~3 s)
        desk = start_paused(hoso, ingest_args(big), "store:upload_half", pause)
        del hoso.env["HOSO_S3_ATTEMPTS"]  # the rerun, on a server just restarted, keeps the usual retries
        server.kill()  # the storage server dies with half the scan sent
        pause.unlink()
        ((rc, _, err),) = finish([desk])
        assert rc == ExitCode.storage_failed, err[-3000:]
        assert err.strip().splitlines()[-1].startswith("hoso: lỗi [storage_failed]:"), err[-2000:]
        registry = hoso.registry
        try:
            # The failure is recorded: the reservation discarded (nothing of it stored), or, when something
            # could not be removed with the server down, the attempt failed and its reservation left to resume.
            (failed,) = [a for a in registry.audit_log() if a.action in ("reservation_discarded", "attempt_failed")]
            assert "StorageFailed" in (failed.note or ""), failed
            server = start_seaweedfs(tmp_path / "weed", again=server)
            rerun = hoso(*ingest_args(big), timeout=600)
            assert rerun.returncode == 0, rerun.stderr[-3000:]
            if failed.action == "attempt_failed":
                assert json.loads(rerun.stdout)["dossier_code"] == failed.dossier_code  # resumed under its code
            assert_consistent(hoso, registry, 1)
        finally:
            registry.close()
    finally:
        server.kill()  # thrown away with the test's folder: no need to wait seconds for a clean stop


# --- versioning and locks on SeaweedFS ----------------------------------------------------------


@pytest.mark.slow
def test_a_recorded_copy_on_seaweedfs_cannot_be_deleted_or_overwritten_away(
    tmp_path: Path, seaweedfs: SeaweedServer
) -> None:
    bucket = locked_bucket(seaweedfs)
    hoso = Hoso(tmp_path / "var", s3_env(seaweedfs, bucket))
    scan, unfinished = distinct_inputs(tmp_path / "in", 2)
    ok = hoso(*ingest_args(scan))
    assert ok.returncode == 0, ok.stderr
    code = json.loads(ok.stdout)["dossier_code"]
    registry = hoso.registry
    raw = Minio(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, secure=False)
    try:
        art = registry.get(code).artifacts[keys.DIGITISED]
        original = open_store(hoso).get_bytes(art.object_key, art.version_id)
        with pytest.raises(S3Error) as refused:  # even the bucket's admin key cannot destroy the record
            raw.remove_object(bucket, art.object_key, version_id=art.version_id)
        assert refused.value.code == "AccessDenied"
        retention = raw.get_object_retention(bucket, art.object_key, version_id=art.version_id)
        assert retention is not None and retention.mode == "COMPLIANCE"
        assert retention.retain_until_date > datetime.now(UTC) + timedelta(days=365 * 9)
        forged = b"%PDF-1.7 a forged copy"
        import io

        raw.put_object(bucket, art.object_key, io.BytesIO(forged), len(forged))  # overwrite: a new version on top
        raw.remove_object(bucket, art.object_key)  # delete: a marker on top
        assert open_store(hoso).get_bytes(art.object_key, art.version_id) == original  # the record stays
        report = fsck(hoso)
        kinds = sorted(f["kind"] for f in report["findings"])
        assert not report["ok"] and "not_current" in kinds and "orphan_object" in kinds, report["findings"]
        repaired = fsck(hoso, "--repair")  # the marker goes; the young foreign version is only reported
        assert any(f["kind"] == "orphan_object" and f["repaired"] for f in repaired["findings"])
        assert open_store(hoso).get_bytes(art.object_key, art.version_id) == original

        # an attempt that never recorded anything leaves nothing locked behind: it can be rolled back
        hoso.env["HOSO_TEST_DIE_AT"] = "record:after_objects"
        assert hoso(*ingest_args(unfinished)).returncode == -signal.SIGKILL
        del hoso.env["HOSO_TEST_DIE_AT"]
        (stale,) = [r for r in registry.list_dossiers() if r.state == "receiving"]
        left = list(open_store(hoso).versions(keys.dossier_prefix(stale.code)))
        assert {v.key.rsplit("/", 1)[-1] for v in left} >= {"digitised.pdf", "manifest.json"}
        swept = hoso("sweep", "--json")
        assert swept.returncode == 0, swept.stderr
        actions = {(i["action"], i["dossier_code"]) for i in json.loads(swept.stdout)["items"]}
        assert ("reservation_discarded", stale.code) in actions
        assert list(open_store(hoso).versions(keys.dossier_prefix(stale.code))) == []
        assert [a.action for a in registry.audit_log(dossier_code=stale.code)][-1] == "reservation_discarded"
    finally:
        registry.close()


@pytest.mark.slow
def test_registry_objects_logs_and_keys_are_private_to_their_user(tmp_path: Path) -> None:
    import stat as st

    hoso = Hoso(tmp_path / "var")
    (scan,) = distinct_inputs(tmp_path / "in", 1)
    assert hoso(*ingest_args(scan)).returncode == 0
    crash = subprocess.run(  # an internal error writes its traceback to logs/errors.log
        [sys.executable, "-c", "import sys; from pipeline.cli.app import _record_crash\n"
         "try:\n    raise RuntimeError('x')\nexcept RuntimeError:\n    print(_record_crash())"],
        env=hoso.env, capture_output=True, text=True, cwd=tmp_path, check=True)
    assert Path(crash.stdout.strip()).is_file()
    data = hoso.data_dir
    assert {p.name for p in data.iterdir()} >= {"objects", "registry.db", "pki", "logs"}
    wide = [(p, oct(st.S_IMODE(p.stat().st_mode))) for p in [data, *data.rglob("*")] if p.stat().st_mode & 0o077]
    assert wide == []
    # something made readable by others is reported, and repaired
    leaked = next((data / "objects" / "dossiers").rglob("digitised.pdf"))
    os.chmod(leaked, 0o644)
    report = fsck(hoso, "--repair")
    (finding,) = report["findings"]
    assert finding["kind"] == "insecure_mode" and finding["repaired"] and finding["key"] == str(leaked)
    assert st.S_IMODE(leaked.stat().st_mode) == 0o600
    assert fsck(hoso)["findings"] == []


@pytest.mark.slow  # `hoso` runs; tests/test_fsck.py runs fsck in-process
def test_fsck_reports_what_it_must_not_repair(tmp_path: Path) -> None:
    hoso = Hoso(tmp_path / "var")
    (scan,) = distinct_inputs(tmp_path / "in", 1)
    ok = hoso(*ingest_args(scan))
    assert ok.returncode == 0, ok.stderr
    code = json.loads(ok.stdout)["dossier_code"]
    objects = hoso.data_dir / "objects"
    # someone with the folder changes the digitised copy and removes the manifest, behind hoso's back
    digitised = objects / keys.digitised_key(code)
    digitised.write_bytes(digitised.read_bytes().replace(b"/Type", b"/Typo", 1))
    (objects / keys.manifest_key(code)).unlink()
    (objects / ".meta" / f"{keys.manifest_key(code)}.meta.json").unlink()
    report = fsck(hoso, "--repair")
    assert not report["ok"]
    found = {(f["kind"], f["key"], f["repaired"]) for f in report["findings"]}
    assert found == {("sha256_mismatch", keys.digitised_key(code), False),
                     ("missing_object", keys.manifest_key(code), False)}, report["findings"]
    status = hoso("status", code, "--json")
    assert status.returncode == 0  # the registry still says what was recorded: the loss is visible, not hidden
