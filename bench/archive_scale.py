"""Archive batches on a Prefect work pool: 1 worker vs 2, orchestration overhead, peak RSS per worker, and a
projection for a million dossiers. Prints a table.

A synthetic legacy archive of small dossiers (2 pages each, pipeline/training/samples.py) is reprocessed with
real Tesseract and HOSO_OCR_JOBS=1 per worker, by ``hoso reprocess ARCHIVE --pool P --workers K`` against a
Prefect server (started here unless ``--api-port`` names a running one) and K ``prefect worker start``
processes, on a fresh registry (a PostgreSQL schema when 127.0.0.1:5432 answers, else SQLite) and store:

- speed-up = batch wall time with 1 worker ÷ with 2 workers, same dossiers;
- orchestration overhead = (batch wall × workers − Σ per-dossier desk time) ÷ (batch wall × workers), where the
  batch wall is the batch flow's own time (from its start to its summary) and a dossier's desk time is the sum
  of the stage times its task logs (the desk chain in ``process_one``: prepare, inspect, OCR … forms), so
  that waiting between stages (for a global OCR slot, say) counts as orchestration;
- peak RSS per worker: the worker's whole process tree (worker, flow-run process, Tesseract), sampled.

Run: ``python bench/archive_scale.py [--dossiers 160] [--rss-from 40] [--workdir /tmp/hoso-scale]``: 1 and 2 workers on
the same ``--dossiers``, and 2 workers on the first ``--rss-from`` of them, whose peak RSS the 2-worker run's is
compared with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
PROCEDURE = "business_household_registration"
#: A dossier's task log: "... in 2.10 s (prepare 0.03 s, inspect 0.00 s, ocr 1.05 s, ..., wall 2.10 s)".
STAGES = re.compile(r" in ([0-9.]+) s \((.*)\)\s*$")
PSS_EVERY_S = 10.0  # how often the sampler reads PSS (expensive); RSS every 0.5 s
STAGE = re.compile(r"([a-z_]+) ([0-9.]+) s")


@dataclass
class Run:
    label: str
    dossiers: int
    workers: int
    batch_s: float = 0.0
    command_s: float = 0.0
    lead_s: float = 0.0  # from the batch's start to its first dossier's start (dispatch, worker start-up)
    tail_s: float = 0.0  # from its last dossier's end to the batch's end
    logged: int = 0  # dossiers whose stage times were found in the logs
    desk_s: float = 0.0
    processed: int = 0
    failed: int = 0
    peak_rss_mb: list[float] = field(default_factory=list)
    peak_pss_mb: list[float] = field(default_factory=list)  # proportional: shared pages (the warm server's) once

    @property
    def overhead(self) -> float:
        budget = self.batch_s * self.workers
        return (budget - self.desk_s) / budget if budget else 0.0


def make_archive(folder: Path, count: int) -> Path:
    """``count`` synthetic dossiers (2 pages each) and their manifest, made once per folder."""
    from pipeline.training.samples import render_sample_dossier

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,procedure"]
    for seed in range(count):
        path = folder / f"LT-{seed:05d}.pdf"
        if not path.exists():
            render_sample_dossier(path, seed=1000 + seed)
        rows.append(f"{path.name},{PROCEDURE}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def subset(archive: Path, folder: Path, count: int) -> Path:
    """The first ``count`` dossiers of ``archive`` (hard links) with their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,procedure"]
    for seed in range(count):
        name = f"LT-{seed:05d}.pdf"
        if not (folder / name).exists():
            os.link(archive / name, folder / name)
        rows.append(f"{name},{PROCEDURE}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def tree_pids(pid: int) -> set[int]:
    """A process and all its descendants, from each thread's ``children`` list (cheap: the sampler must not
    take the CPU it measures the workers on); a full scan of /proc where the kernel has no such lists."""
    tree, frontier = {pid}, [pid]
    while frontier:
        found: list[int] = []
        for parent in frontier:
            try:
                lists = [(t / "children").read_text() for t in Path(f"/proc/{parent}/task").iterdir()]
            except FileNotFoundError:  # gone meanwhile, or no children lists here
                if not Path(f"/proc/{pid}/task/{pid}/children").exists():
                    return _tree_by_scan(pid)
                continue
            except OSError:
                continue
            found += [int(c) for text in lists for c in text.split() if int(c) not in tree]
        tree.update(found)
        frontier = found
    return tree


def _tree_by_scan(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier and c not in tree]
        tree.update(frontier)
    return tree


def _tree_kb(pid: int, file: str, field: str) -> int:
    """The sum of ``field`` (kB) in /proc/PID/``file`` over a process and all its descendants."""
    total = 0
    for member in tree_pids(pid):
        try:
            for line in Path(f"/proc/{member}/{file}").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (kB), from /proc/PID/status (cheap)."""
    return _tree_kb(pid, "status", "VmRSS:")


def tree_pss_kb(pid: int) -> int:
    """Proportional memory (PSS: a page shared by n processes counts 1/n) of a process and its descendants (kB).
    Reading smaps_rollup walks every mapping: read every 0.5 s for 2 workers' trees it took 28 s of a core in a
    1-minute run (measured), slowing the workers measured — the sampler takes it every :data:`PSS_EVERY_S`."""
    return _tree_kb(pid, "smaps_rollup", "Pss:")


def _flow_runs_left(pid: int) -> bool:
    """Whether a worker still has a flow-run process (a cold engine, or a warm run and its client); its warm-start
    server stays."""
    for member in tree_pids(pid) - {pid}:
        try:
            cmdline = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--serve" not in cmdline:
            return True
    return False


def api(url: str, path: str, body: dict | None = None) -> list[dict]:
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body or {}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def run_batch(label: str, folder: Path, workers: int, api_url: str, work: Path) -> Run:
    """One batch on ``workers`` fresh workers; the figures of :class:`Run`."""
    from support.cli import clean_env
    from support.servers import pg_schema, postgres_url

    base = work / label
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    tag = uuid.uuid4().hex[:8]
    registry = contextlib.ExitStack()  # a fresh registry: a PostgreSQL schema if the server answers, else SQLite
    base_url = postgres_url()
    database = registry.enter_context(pg_schema(base_url, "hoso_prefect_bench")) if base_url else ""
    pool = f"hoso-bench-{tag}"
    env = clean_env(base / "var", ocr="tesseract") | {
        "HOSO_OCR_JOBS": "1",
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # docker-compose: the same
        "HOSO_STORE_PATH": str(base / "var" / "objects"),
        "HOSO_PKI_DIR": str(work / "pki"),  # one dev PKI for every run: made once, not timed
    }
    if database:
        env["HOSO_DATABASE_URL"] = database
    procs = []
    for n in range(workers):
        log = open(base / f"worker-{n}.log", "wb")  # noqa: SIM115 — the child keeps it
        procs.append(
            subprocess.Popen(
                # the worker command of the README and docker-compose: opens the store, registry and keys, makes
                # the pool and its deployments, then becomes `prefect worker start --pool P --limit 1`
                [sys.executable, "-m", "flows.worker", "--pool", pool, "--limit", "1"],
                env=env,
                cwd=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    # Workers are long-lived (one per core, started once): their start is not the batch's time.
    deadline = time.monotonic() + 300
    while not all("started!" in (base / f"worker-{n}.log").read_text(errors="replace") for n in range(workers)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            raise SystemExit(f"{label}: the workers did not start (see {base}/worker-*.log)")
        time.sleep(0.2)
    peaks = [0] * workers
    pss_peaks = [0] * workers
    stop = threading.Event()

    def sample() -> None:
        last = pss_at = time.monotonic()
        while not stop.wait(0.5):
            for i, p in enumerate(procs):
                peaks[i] = max(peaks[i], tree_rss_kb(p.pid))
                if time.monotonic() - pss_at >= PSS_EVERY_S:
                    pss_peaks[i] = max(pss_peaks[i], tree_pss_kb(p.pid))
            if time.monotonic() - pss_at >= PSS_EVERY_S:
                pss_at = time.monotonic()
            if time.monotonic() - last >= 30:  # so far, for a run stopped before its end
                last = time.monotonic()
                done = sum(f.read_text(errors="replace").count(" processed: ") for f in base.glob("worker-*.log"))
                so_far = {"dossiers_done": done, "peak_rss_mb": [kb / 1024 for kb in peaks], "at": time.strftime("%T")}
                (base / "rss-so-far.json").write_text(json.dumps(so_far))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = Run(label, len([p for p in folder.iterdir() if p.suffix == ".pdf"]), workers)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "reprocess",
                str(folder),
                "--pool",
                pool,
                "--workers",
                str(workers),
                # the global OCR limit outlives a batch: without this, the 2-worker run inherits the 1-worker
                # run's single slot and its workers take turns at OCR
                "--ocr-slots",
                str(workers),
                "--json",
            ],
            env=env,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=6 * 3600,
        )
        run.command_s = time.monotonic() - started
        if not proc.stdout.strip():
            raise SystemExit(f"{label}: the batch failed: {proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout)
    finally:
        # A worker run is Completed before its process has sent its last log lines (in batches, every 2 s):
        # stopping the workers at once lost the last dossier's line. Wait for the flow-run processes to end.
        deadline = time.monotonic() + 30
        while any(_flow_runs_left(p.pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        sampler.join()
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        registry.close()
    run.batch_s, run.processed, run.failed = summary["seconds"], summary["processed"], summary["failed"]
    run.peak_rss_mb = [kb / 1024 for kb in peaks]
    run.peak_pss_mb = [kb / 1024 for kb in pss_peaks]
    worker_runs = [
        r["id"]
        for r in api(api_url, "/flow_runs/filter", {"limit": 200, "sort": "START_TIME_DESC"})
        if r["parameters"].get("batch_id") == summary["batch_id"]
    ]
    batch_start = datetime.strptime(summary["batch_id"], "batch-%Y%m%dt%H%M%S%fz").replace(tzinfo=UTC)
    first_start, last_end = datetime.max.replace(tzinfo=UTC), batch_start
    offset = 0
    while True:  # every log line of the batch's worker runs (the server pages them)
        logs = api(
            api_url, "/logs/filter", {"logs": {"flow_run_id": {"any_": worker_runs}}, "offset": offset, "limit": 200}
        )
        for log_line in logs:
            if log_line["name"] == "prefect.task_runs" and (m := STAGES.search(log_line["message"])):
                # the "sum of per-dossier stage times": every stage but the total ("wall"), so that a
                # wait between stages (an OCR slot, say) counts as orchestration
                run.desk_s += sum(float(t) for name, t in STAGE.findall(m.group(2)) if name != "wall")
                run.logged += 1
                ended = datetime.fromisoformat(log_line["timestamp"])
                first_start = min(first_start, ended - timedelta(seconds=float(m.group(1))))
                last_end = max(last_end, ended)
        if len(logs) < 200:
            break
        offset += 200
    run.lead_s = (first_start - batch_start).total_seconds()
    run.tail_s = run.batch_s - (last_end - batch_start).total_seconds()
    if run.logged != run.processed:
        print(f"  {label}: {run.logged} dossier log lines for {run.processed} dossiers processed", file=sys.stderr)
    return run


def start_server(work: Path, cleanup: contextlib.ExitStack) -> tuple[subprocess.Popen[bytes] | None, str]:
    """A Prefect server on a PostgreSQL database of its own when 127.0.0.1:5432 answers (as in docker-compose:
    on SQLite the server's writes queue on one lock, and a dossier's OCR-slot request waited ~2 s behind the
    others' state and log writes, measured), else on SQLite; the database is dropped by ``cleanup``."""
    from support.servers import POSTGRES_URL, launch_prefect_server, pg_database, postgres_url

    database_url = None
    if postgres_url():
        name = cleanup.enter_context(pg_database(POSTGRES_URL, "hoso_bench_prefect"))
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    server = launch_prefect_server(work / "prefect-server", database_url)
    server.wait_healthy(600)
    return server.process, server.api_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dossiers", type=int, default=160)
    parser.add_argument("--rss-from", type=int, default=40, help="dossiers of the smaller 2-worker run (0: skip)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hoso-archive-scale"))
    parser.add_argument("--api-port", type=int, help="a Prefect server already running on 127.0.0.1")
    parser.add_argument("--prepare-only", action="store_true", help="make the archive and stop")
    parser.add_argument("--report", action="store_true", help="print the table of the runs saved in --workdir")
    parser.add_argument("--only", nargs="+", choices=["1w", "2w", "2w-small"], help="just these runs")
    args = parser.parse_args(argv)
    work = args.workdir
    archive = make_archive(work / "archive", max(args.dossiers, args.rss_from))
    small = subset(archive, work / f"archive-{args.dossiers}", args.dossiers)
    few = subset(archive, work / f"archive-{args.rss_from}", args.rss_from) if args.rss_from else None
    if args.prepare_only:
        return 0
    if args.report:  # the runs saved in the workdir, whenever they were made
        saved = json.loads((work / "results.json").read_text())
        for label, r in saved.items():
            print(f"  {label} at {r.pop('at')}, load average {' '.join(f'{x:.2f}' for x in r.pop('load'))}")
        report([Run(**r) for r in saved.values()], os.getloadavg(), os.getloadavg())
        return 0
    from pipeline.core.settings import Settings
    from signing.pki import ensure_dev_pki

    ensure_dev_pki(work / "pki", Settings().resolved_pki_passphrase().encode())
    cleanup = contextlib.ExitStack()  # what start_server made: closed once the server has stopped
    server, api_url = (None, f"http://127.0.0.1:{args.api_port}/api") if args.api_port else start_server(work, cleanup)
    runs: list[Run] = []
    load_before = os.getloadavg()
    try:
        plan: list[tuple[str, Path, int]] = [("1w", small, 1), ("2w", small, 2)]
        if few is not None:
            plan.append(("2w-small", few, 2))
        for label, folder, workers in plan:
            if args.only and label not in args.only:
                continue
            runs.append(run_batch(label, folder, workers, api_url, work))
            r = runs[-1]
            saved = work / "results.json"  # every run so far, for --report (runs may be made at different times)
            known = json.loads(saved.read_text()) if saved.exists() else {}
            known[label] = asdict(r) | {"load": os.getloadavg(), "at": time.strftime("%H:%M:%S")}
            saved.write_text(json.dumps(known, indent=2))
            print(
                f"  {label}: {r.dossiers} dossiers, {r.workers} worker(s): batch {r.batch_s:.1f} s, "
                f"desk Σ {r.desk_s:.1f} s, peak RSS {', '.join(f'{m:.0f}' for m in r.peak_rss_mb)} MB "
                f"(PSS {', '.join(f'{m:.0f}' for m in r.peak_pss_mb)} MB)",
                flush=True,
            )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        cleanup.close()
    report(runs, load_before, os.getloadavg())
    return 0


def report(runs: list[Run], load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    by = {r.label: r for r in runs}
    print()
    print(
        f"{'run':<10} {'dossiers':>8} {'workers':>7} {'ok/failed':>9} {'batch s':>8} {'desk Σ s':>9} "
        f"{'overhead':>8} {'peak RSS/worker MB':>20}"
    )
    for r in runs:
        print(
            f"{r.label:<10} {r.dossiers:>8} {r.workers:>7} {f'{r.processed}/{r.failed}':>9} {r.batch_s:>8.1f} "
            f"{r.desk_s:>9.1f} {r.overhead:>8.1%} {max(r.peak_rss_mb):>20.0f}"
        )
    for r in runs:
        print(f"  {r.label}: first dossier started {r.lead_s:.1f} s after the batch, batch ended {r.tail_s:.1f} s "
              "after its last dossier")
    one, two = by.get("1w"), by.get("2w")
    if one and two:
        print(f"speed-up 2 workers vs 1: {one.batch_s / two.batch_s:.2f}× (target ≥ 1.75×)")
        print(f"orchestration overhead, 1 worker: {one.overhead:.1%} (target ≤ 5 %)")
    if two and "2w-small" in by:
        small = by["2w-small"]
        print(
            f"peak RSS per worker, {two.dossiers} vs {small.dossiers} dossiers: "
            f"{max(two.peak_rss_mb) / max(small.peak_rss_mb):.2f}× (target ≤ 1.2×); PSS "
            f"{max(two.peak_pss_mb, default=0):.0f} vs {max(small.peak_pss_mb, default=0):.0f} MB"
        )
    if one:
        rate = one.dossiers / one.batch_s  # dossiers/s of one worker with one OCR process (one core)
        efficiency = (one.batch_s / two.batch_s) / 2 if two else 1.0
        print(
            f"projection for 1,000,000 dossiers ({rate * 3600:.0f} dossiers/h per worker-core, "
            f"scaling efficiency {efficiency:.0%} as measured from 1 to 2 workers):"
        )
        for machines, cores in [(1, 2), (10, 8), (50, 16), (100, 32)]:
            hours = 1_000_000 / (rate * machines * cores * efficiency) / 3600
            print(f"  K={machines:>3} workers-machines × N={cores:>2} cores: {hours:>8.1f} h ({hours / 24:.1f} days)")
    print(
        f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    sys.exit(main())
