"""Per-dossier latency of ``hoso ingest``: the one-shot command (``--direct``, ``--prefect``) against the hand-off
to a running, warm ``hoso serve`` (``--server``), with real Tesseract; and of ``hoso reprocess``.

Run by hand:
  .venv/bin/python bench/desk_latency.py [--input PDF[:PROCEDURE] ...] [--runs 3] [--modes direct,handoff]
                                         [--port 18250] [--batch FOLDER]

Each one-shot run is a fresh process with a fresh data folder, as a desk PC would run it. The hand-off runs
share one service (started here, on loopback, with its own data folder; the first intake after its start is
not timed). Every run gets bytes of its own (a PDF comment appended after ``%%EOF``), so none is a re-run.
The figure of issue 11 is ``process − ocr``: how much the desk command's wall time exceeds the OCR stage the
receipt reports (goal: ≤ 2 s with the hand-off). ``Σ stages`` checks that the receipt's stages add up to its
``wall``.

Wall times on a shared machine measure its load as much as hoso, so each run also gets its CPU seconds, which
load hardly changes: ``desk cpu`` is the desk command's process (with the OCR pool of a one-shot run: every
descendant it waited for; from ``getrusage(RUSAGE_CHILDREN)``), ``svc cpu`` the service's own process during
the hand-off (from ``/proc/PID/stat``: the intake's request, its stages outside the OCR worker processes, the
answer). ``uptime``'s load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "corpus" / "public" / "dossiers"
SAMPLE = ROOT / "pipeline" / "data" / "sample_dossier.pdf"
COLUMNS = ("process", "wall", "ocr", "understand", "sign", "record", "forms", "startup", "transfer")
CPU_COLUMNS = ("desk cpu", "svc cpu")


def _env(data: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_"))}
    return env | {"HOSO_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)} | (extra or {})


def _hoso(*args: str, env: dict[str, str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True)


def _unique_copy(pdf: Path, folder: Path, n: int) -> Path:
    target = folder / pdf.name
    shutil.copyfile(pdf, target)
    with target.open("ab") as fh:
        fh.write(f"\n% desk-latency run {n} {time.time_ns()}\n".encode())
    return target


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process so far, its waited-for children excluded."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _timed_ingest(path: Path, procedure: str, mode_args: list[str], env: dict[str, str], cwd: Path,
                  service_pid: int | None = None) -> dict[str, float]:
    svc_cpu = _process_cpu(service_pid) if service_pid else 0.0
    desk_cpu = _children_cpu()
    start = time.perf_counter()
    proc = _hoso("ingest", str(path), "--procedure", procedure, "--json", *mode_args, env=env, cwd=cwd)
    process = time.perf_counter() - start
    desk_cpu = _children_cpu() - desk_cpu
    svc_cpu = _process_cpu(service_pid) - svc_cpu if service_pid else 0.0
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}): {proc.stderr}")
    receipt = json.loads(proc.stdout)
    if receipt["already_done"]:
        raise SystemExit("a run was a re-run: the bench must time fresh inputs")
    timings = receipt["timings"]
    stages = sum(v for k, v in timings.items() if k != "wall")
    return {"process": process, "stages": stages, "desk cpu": desk_cpu, "svc cpu": svc_cpu} | timings


def run_one_shot(pdf: Path, procedure: str, mode: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp) / "var")
        # the dev PKI is made once per data folder; make it first so it is not timed as desk work
        subprocess.run([sys.executable, "-c", "from pipeline.usecases.services import Services; Services().pki"],
                       env=env, check=True, cwd=tmp)
        return _timed_ingest(_unique_copy(pdf, Path(tmp), n), procedure, [f"--{mode}"], env, Path(tmp))


class Service:
    """``hoso serve`` on loopback with a desk user and its API token."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.url = folder, f"http://127.0.0.1:{port}"
        env = _env(folder / "var", {"HOSO_PUBLIC_URL": self.url})
        if _hoso("users", "add", "bench", "--name", "Bench", "--role", "desk", "--password-stdin",
                 env=env, cwd=folder, stdin="mat-khau-du-dai-1\n").returncode != 0:
            raise SystemExit("cannot add the desk user")
        token = _hoso("users", "token", "bench", "--scope", "desk", env=env, cwd=folder).stdout.strip()
        (folder / "token").write_text(token)
        self.log = (folder / "serve.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
                                        env=env, cwd=folder, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"hoso serve did not start: see {folder / 'serve.log'}") from None
                time.sleep(0.5)
        self.client_env = _env(folder / "desk-var", {"HOSO_SERVER_URL": self.url,
                                                     "HOSO_API_TOKEN_FILE": str(folder / "token")})

    def ingest(self, pdf: Path, procedure: str, n: int) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            return _timed_ingest(_unique_copy(pdf, Path(tmp), n), procedure, [], self.client_env, self.folder,
                                 self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _row(label: str, rows: list[dict[str, float]]) -> str:
    med = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in {*COLUMNS, *CPU_COLUMNS, "stages"}}
    over = statistics.median(r["process"] - r.get("ocr", 0.0) for r in rows)
    worst = max(r["process"] - r.get("ocr", 0.0) for r in rows)
    cells = " | ".join(f"{med[c]:.2f}" for c in COLUMNS)
    cpu = " | ".join(f"{med[c]:.2f}" for c in CPU_COLUMNS)
    return f"| {label} | {len(rows)} | {cells} | {med['stages']:.2f} | **{over:.2f}** (max {worst:.2f}) | {cpu} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", action="append", default=None, metavar="PDF[:PROCEDURE]",
                        help="repeatable (default: the bundled sample and PUB-0002, a 5-page scan)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="direct,handoff", help="direct, prefect, handoff")
    parser.add_argument("--port", type=int, default=18250, help="the service's loopback port (hand-off)")
    parser.add_argument("--batch", type=Path, default=None, help="also time `hoso reprocess` on this folder")
    args = parser.parse_args()
    inputs = args.input or [f"{SAMPLE}:business_household_registration",
                            f"{PUBLIC / 'PUB-0002.pdf'}:business_household_registration"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    print(f"load average at start: {_load()}")
    print(f"| input | mode | runs | {' | '.join(COLUMNS)} | Σ stages | process − ocr | {' | '.join(CPU_COLUMNS)} |")
    print("|---|---|---|" + "---|" * (len(COLUMNS) + 2 + len(CPU_COLUMNS)))
    service = None
    try:
        for spec in inputs:
            path_text, _, procedure = spec.partition(":")
            pdf, procedure = Path(path_text), procedure or "business_household_registration"
            for mode in modes:
                if mode == "handoff":
                    if service is None:
                        service = Service(Path(tempfile.mkdtemp(prefix="hoso-bench-")), args.port)
                        service.ingest(SAMPLE, "business_household_registration", -1)  # not timed
                    rows = [service.ingest(pdf, procedure, n) for n in range(args.runs)]
                else:
                    rows = [run_one_shot(pdf, procedure, mode, n) for n in range(args.runs)]
                print(f"| {pdf.name} " + _row(mode, rows), flush=True)
    finally:
        if service is not None:
            service.stop()
            shutil.rmtree(service.folder, ignore_errors=True)
    print(f"load average at end: {_load()}")
    if args.batch:
        run_reprocess(args.batch)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_reprocess(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp) / "var")
        start = time.perf_counter()
        summary = json.loads(_hoso("reprocess", str(folder), "--json", env=env, cwd=Path(tmp)).stdout)
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = json.loads(_hoso("reprocess", str(folder), "--json", env=env, cwd=Path(tmp)).stdout)
        second = time.perf_counter() - start
    print(f"reprocess {folder}: {first:.1f} s for {summary['total']} dossiers (processed {summary['processed']}, "
          f"failed {summary['failed']}); second run {second:.1f} s (already done {again['already_done']})")


if __name__ == "__main__":
    main()
