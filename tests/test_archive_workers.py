"""Archive batches on a Prefect work pool: a real ``prefect server``, real ``prefect worker`` processes, the registry
on PostgreSQL. What Prefect shows (a task per dossier named by it, Failed with its reason, logs, the batch's
table artifact), and kills: a worker killed mid-dossier, the whole batch killed and run again — after each,
every input processed exactly once in registry and store, or recorded failed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Hoso
from support.servers import PrefectServer, SeaweedServer, pg_schema

from pipeline.training.samples import render_sample_dossier
from storage.registry import Registry

pytestmark = pytest.mark.slow

PROCEDURE = "business_household_registration"


def _api(api_url: str, path: str, body: dict | None = None) -> list[dict]:
    request = urllib.request.Request(
        f"{api_url}{path}", data=json.dumps(body or {}).encode(), headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as resp:
        return json.loads(resp.read())


def _batch(folder: Path, seeds: list[int], *, bad: bool = True) -> list[str]:
    folder.mkdir(parents=True)
    rows = ["file,procedure"]
    for seed in seeds:
        render_sample_dossier(folder / f"ARC-{seed:04d}.pdf", seed=seed)
        rows.append(f"ARC-{seed:04d}.pdf,{PROCEDURE}")
    if bad:
        (folder / "ARC-9999.pdf").write_bytes(b"")
        rows.append(f"ARC-9999.pdf,{PROCEDURE}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return sorted(p.name for p in folder.iterdir() if p.name != "manifest.csv")


@pytest.fixture
def pg_url(postgres_base_url: str | None) -> Iterator[str]:
    """A fresh PostgreSQL schema (hoso_prefect_…) for the registry every process of the test shares."""
    if postgres_base_url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with pg_schema(postgres_base_url, "hoso_prefect") as url:
        yield url


class Cluster:
    """The batch's command and its workers, sharing the registry, the store and the Prefect server."""

    def __init__(self, base: Path, server: PrefectServer, database_url: str, extra: dict[str, str] | None = None):
        self.base = base
        self.pool = f"hoso-test-{uuid.uuid4().hex[:8]}"
        env = {
            "PREFECT_API_URL": server.api_url,
            "PREFECT_HOME": str(base / "prefect-client"),
            "HOSO_DATABASE_URL": database_url,
            "HOSO_STORE_PATH": str(base / "var" / "objects"),
            "HOSO_PKI_DIR": str(base / "var" / "pki"),
            "HOSO_LEASE_WAIT_SECONDS": "5",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        self.hoso = Hoso(base / "var", env | (extra or {}))
        self.server = server
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log = open(self.base / f"worker-{n}.log", "wb")  # noqa: SIM115 — the child keeps it
        worker = subprocess.Popen(  # flows.worker: preflight, the pool and deployments, then `prefect worker start`
            [sys.executable, "-m", "flows.worker", "--pool", self.pool, "--limit", "1"],
            env=self.hoso.env | (extra or {}), cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def reprocess(self, folder: Path | str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "reprocess", str(folder), "--pool", self.pool, "--json", *args],
            env=self.hoso.env, cwd=self.base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )

    def registry(self) -> Registry:
        return Registry(self.hoso.env["HOSO_DATABASE_URL"])

    def stop(self) -> None:
        for worker in self.workers:
            kill_tree(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_tree(worker.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.base.glob("worker-*.log")))


def kill_tree(pid: int, sig: int) -> None:
    """Signal a process and every descendant (a worker's flow runs may sit in sessions of their own)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier and child not in tree]
        tree.update(children)
        frontier = children
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)


def _finish(proc: subprocess.Popen[str], cluster: Cluster, timeout: float = 900) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the batch did not finish: {err[-3000:]}\n{cluster.logs()}")
    assert out.strip(), f"{err[-3000:]}\n{cluster.logs()}"
    return json.loads(out)


def _assert_each_input_once(cluster: Cluster, names: list[str], summary: dict) -> None:
    """One batch item per input; one dossier per good input, its objects under its code only, one input each."""
    reg = cluster.registry()
    try:
        items = reg.batch_items(summary["batch_id"])
        assert sorted(i.input_name for i in items) == names, items
        dossiers = reg.list_dossiers()
    finally:
        reg.close()
    good = [n for n in names if n != "ARC-9999.pdf"]
    assert len(dossiers) == len(good) and len({d.input_sha256 for d in dossiers}) == len(good)
    assert all(d.state == "received" for d in dossiers), [(d.code, d.state) for d in dossiers]
    keys = cluster.hoso.stored_keys()
    assert {k.split("/")[1] for k in keys if k.startswith("dossiers/")} == {d.code for d in dossiers}
    for d in dossiers:
        assert sum(1 for k in keys if k.startswith(f"dossiers/{d.code}/input/")) == 1, keys


def test_two_workers_share_a_batch_with_prefect_showing_each_dossier(
    prefect_server: PrefectServer, pg_url: str, seaweedfs: SeaweedServer, tmp_path: Path
) -> None:
    """The inputs under an S3 prefix; a task per dossier on two workers, the bad one Failed with its reason,
    the desk's logs and the batch's table artifact on the server."""
    from minio import Minio

    names = _batch(tmp_path / "batch", [31, 32, 33])
    bucket = f"inbox-{uuid.uuid4().hex[:8]}"
    s3 = Minio(seaweedfs.endpoint, access_key=seaweedfs.access_key, secret_key=seaweedfs.secret_key, secure=False)
    s3.make_bucket(bucket)
    for path in sorted((tmp_path / "batch").iterdir()):
        s3.fput_object(bucket, f"2019/district-a/{path.name}", str(path))
    s3_env = {"HOSO_S3_ENDPOINT": seaweedfs.endpoint, "HOSO_S3_ACCESS_KEY": seaweedfs.access_key,
              "HOSO_S3_SECRET_KEY": seaweedfs.secret_key}
    cluster = Cluster(tmp_path, prefect_server, pg_url, s3_env)
    try:
        cluster.start_worker()
        cluster.start_worker()
        summary = _finish(cluster.reprocess(f"s3://{bucket}/2019/district-a", "--workers", "2"), cluster)
    finally:
        cluster.stop()
    assert (summary["total"], summary["processed"], summary["failed"], summary["workers"]) == (4, 3, 1, 2)
    assert summary["failures"]["ARC-9999.pdf"].startswith("input_empty")
    _assert_each_input_once(cluster, names, summary)

    api = prefect_server.api_url
    runs = {r["id"]: r for r in _api(api, "/flow_runs/filter")}
    batch_run = next(r for r in runs.values() if r["parameters"].get("folder") == f"s3://{bucket}/2019/district-a")
    assert batch_run["state_type"] == "COMPLETED"
    worker_runs = [r for r in runs.values() if r["parameters"].get("batch_id") == summary["batch_id"]
                   and r["parameters"].get("source")]
    assert len(worker_runs) == 2 and all(r["state_type"] == "COMPLETED" for r in worker_runs), [
        (r["state_type"], r["state_name"], (r.get("state") or {}).get("message")) for r in worker_runs]
    tasks = [t for t in _api(api, "/task_runs/filter") if t["flow_run_id"] in {r["id"] for r in worker_runs}]
    by_name = {t["name"]: t for t in tasks}
    assert sorted(by_name) == names and len(tasks) == len(names)  # one task per dossier, named by it
    assert by_name["ARC-9999.pdf"]["state_type"] == "FAILED"
    assert "input_empty" in by_name["ARC-9999.pdf"]["state"]["message"]
    assert all(by_name[n]["state_type"] == "COMPLETED" for n in names if n != "ARC-9999.pdf")
    # Both runs took inputs when both workers were up in time; a worker still starting (tens of seconds on a
    # loaded machine) may find the batch done and complete with none: which it is depends on the machine.
    assert 1 <= len({t["flow_run_id"] for t in tasks}) <= 2

    logs = _api(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [r["id"] for r in worker_runs]}}})
    messages = [(log["name"], log["message"]) for log in logs]
    assert any(name == "prefect.task_runs" and "ocr" in msg and "sign" in msg for name, msg in messages), messages
    assert any(name.startswith("pipeline.") for name, _ in messages)  # the hoso loggers, forwarded

    (artifact,) = [a for a in _api(api, "/artifacts/filter") if a.get("key") == f"hoso-{summary['batch_id']}"]
    assert artifact["type"] == "table" and artifact["flow_run_id"] == batch_run["id"]
    rows = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    assert rows[0]["input"] == "ARC-9999.pdf" and rows[0]["outcome"] == "failed" and rows[0]["reason"]
    assert Counter(r["outcome"] for r in rows) == {"processed": 3, "failed": 1}
    limits = _api(api, "/v2/concurrency_limits/filter")
    assert any(limit["name"] == "hoso-ocr" for limit in limits)


def test_a_worker_killed_mid_dossier_leaves_it_to_another_that_records_it_once(
    prefect_server: PrefectServer, pg_url: str, tmp_path: Path
) -> None:
    """One worker stops after writing a dossier's objects and before recording them; it is killed there with
    its flow run. The other worker takes the input over, removes the dead one's objects and records it."""
    names = _batch(tmp_path / "batch", [41, 42, 43, 44], bad=False)
    # The killed worker's run stays Running: the finished batch marks it Crashed at once, its process (named by
    # its holder tag) being gone from this machine — or, were that unknown, after HOSO_LATE_WORKER_SECONDS:
    # 20 s (not 120) is still ample for the live worker, which finishes the batch, to see it done and complete.
    cluster = Cluster(tmp_path, prefect_server, pg_url, {"HOSO_LATE_WORKER_SECONDS": "20"})
    pause = tmp_path / "paused"
    try:
        doomed = cluster.start_worker(
            {"HOSO_TEST_PAUSE_AT": "record:after_objects", "HOSO_TEST_PAUSE_FILE": str(pause)}
        )
        batch = cluster.reprocess(tmp_path / "batch", "--workers", "2")
        deadline = time.monotonic() + 600
        while not pause.exists() and time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.5)
        assert pause.exists(), cluster.logs()
        kill_tree(doomed.pid, signal.SIGKILL)  # the machine dies with the dossier's objects written, unrecorded
        cluster.start_worker()  # the second worker (the batch's other run waits for a worker on the pool)
        summary = _finish(batch, cluster)
    finally:
        cluster.stop()
    assert (summary["total"], summary["processed"], summary["failed"]) == (4, 4, 0), summary
    _assert_each_input_once(cluster, names, summary)
    reg = cluster.registry()
    try:
        resumed = [e for d in reg.list_dossiers() for e in reg.get(d.code).events if e.action == "intake_resumed"]
    finally:
        reg.close()
    assert len(resumed) == 1, resumed  # the killed worker's reservation, taken over once
    runs = [r for r in _api(prefect_server.api_url, "/flow_runs/filter")
            if r["parameters"].get("batch_id") == summary["batch_id"] and r["parameters"].get("source")]
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED", "CRASHED"]
    assert all(any(t.startswith("hoso-holder:") for t in r["tags"]) for r in runs), [r["tags"] for r in runs]


def test_the_whole_batch_killed_and_run_again_accounts_for_each_input_once(
    prefect_server: PrefectServer, pg_url: str, tmp_path: Path
) -> None:
    names = _batch(tmp_path / "batch", [51, 52, 53, 54, 55])
    # The killed workers die holding their OCR slots: the batch run again waits up to a minute for their leases
    # to lapse (flows/archive.py _ocr_slot; the test server frees lapsed leases within 2 s).
    cluster = Cluster(tmp_path, prefect_server, pg_url, {"HOSO_TEST_OCR_DELAY": "1"})
    batch_id = f"batch-kill-{uuid.uuid4().hex[:6]}"
    try:
        cluster.start_worker()
        cluster.start_worker()
        batch = cluster.reprocess(tmp_path / "batch", "--workers", "2", "--batch-id", batch_id)
        deadline = time.monotonic() + 600
        done = 0
        while time.monotonic() < deadline and batch.poll() is None:
            reg = cluster.registry()
            try:
                done = len(reg.batch_items(batch_id))
            except Exception:
                done = 0
            finally:
                reg.close()
            if done >= 1:
                break
            time.sleep(0.5)
        assert batch.poll() is None and done >= 1, cluster.logs()
        kill_tree(batch.pid, signal.SIGKILL)  # a power cut: the batch command and every worker at once
        for worker in cluster.workers:
            kill_tree(worker.pid, signal.SIGKILL)
        batch.communicate()
        cluster.workers.clear()
        cluster.hoso.env.pop("HOSO_TEST_OCR_DELAY")
        cluster.start_worker()
        cluster.start_worker()
        summary = _finish(cluster.reprocess(tmp_path / "batch", "--workers", "2", "--batch-id", batch_id), cluster)
    finally:
        cluster.stop()
    assert summary["batch_id"] == batch_id
    assert (summary["total"], summary["processed"] + summary["already_done"], summary["failed"]) == (6, 5, 1)
    _assert_each_input_once(cluster, names, summary)
