"""CPU seconds of the desk's work around the OCR, which the load of a shared machine hardly changes (wall times do):

- **client**: the desk command of a hand-off (``hoso ingest INPUT --server URL --json``) up to its upload — Python,
  its imports, identifying the input — timed against a port where nothing listens (it leaves with exit 22);
  ``python -c pass`` beside it for the interpreter alone;
- **service**: each stage of the desk chain in a warm process, as ``hoso serve`` keeps it (OCR workers,
  classifier, signer, fonts ready), measured on the calling thread: the OCR stage's own work runs in the
  worker processes and is not counted; the stages after it are the service's work between OCR and answer.

Run by hand (real Tesseract by default; ``--engine scripted`` takes the tests' scripted OCR):
  .venv/bin/python bench/desk_cpu.py [--runs 5] [--input PDF[:PROCEDURE]] [--engine tesseract|scripted]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipeline" / "data" / "sample_dossier.pdf"
#: The stages after the OCR: what the service does between OCR end and its answer.
AFTER_OCR = ("understand", "national_db", "validate", "sign", "record", "forms", "save_to_citizen_store")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def client_cpu(pdf: Path, procedure: str, runs: int) -> tuple[list[float], list[float]]:
    """CPU seconds of ``python -c pass`` and of the hand-off command up to its upload, ``runs`` times each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_"))}
    env |= {"PYTHONPATH": str(ROOT), "HOSO_API_TOKEN": "hoso_bench"}
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "client": [sys.executable, "-m", "pipeline.cli", "ingest", str(pdf), "-p", procedure, "--json",
                   "--server", "http://127.0.0.1:9"],  # the discard port: nothing answers (exit 22)
    }
    out: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            for name, command in commands.items():
                before = _children_cpu()
                done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
                out[name].append(_children_cpu() - before)
                if name == "client" and done.returncode != 22:
                    raise SystemExit(f"the client did not stop at the upload ({done.returncode}): {done.stderr}")
    return out["python"], out["client"]


def service_cpu(pdf: Path, procedure: str, runs: int, engine: str) -> dict[str, list[float]]:
    """CPU seconds per stage of ``runs`` intakes (fresh bytes each) in one warm process."""
    import pipeline.usecases.desk as desk
    from pipeline.core.models import Role
    from pipeline.core.settings import Settings
    from pipeline.usecases.lifecycle import actor_for
    from pipeline.usecases.services import Services
    from storage.identity import Identity

    cpu: dict[str, float] = {}
    timed = desk._Stopwatch.stage

    @contextmanager
    def stage(self: desk._Stopwatch, name: str) -> Iterator[None]:  # the receipt's stopwatch, plus thread CPU
        start = time.thread_time()
        with timed(self, name):
            yield
        cpu[name] = cpu.get(name, 0.0) + time.thread_time() - start

    desk._Stopwatch.stage = stage  # type: ignore[method-assign]
    tmp = Path(tempfile.mkdtemp(prefix="hoso-desk-cpu-"))
    options: dict[str, object] = {"data_dir": tmp / "var", "level_digitised": "B-B"}
    if engine == "scripted":
        sys.path.insert(0, str(ROOT / "tests"))
        options |= {"ocr_engine": "support.fake_ocr:ScriptedEngine", "ocr_jobs": 1}
    services = Services(Settings(**options))  # type: ignore[arg-type]
    try:
        Identity(services.registry).add_user("bench", "Bench", [Role.desk], "mat-khau-du-dai-1")
        actor = actor_for(services, "bench")
        desk.warm_up(services, SAMPLE)
        per_run: dict[str, list[float]] = {}
        for n in range(runs):
            copy = tmp / f"{n}-{pdf.name}"
            copy.write_bytes(pdf.read_bytes() + f"\n% desk-cpu run {n} {time.time_ns()}\n".encode())
            cpu.clear()
            outcome = desk.ingest(desk.IntakeRequest(copy, procedure, actor=actor.username, desk=actor), services)
            if outcome.already_done:
                raise SystemExit("a run was a re-run: the bench must time fresh inputs")
            for name, seconds in cpu.items():
                per_run.setdefault(name, []).append(seconds)
            per_run.setdefault("after OCR", []).append(sum(cpu.get(s, 0.0) for s in AFTER_OCR))
        return per_run
    finally:
        services.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=f"{SAMPLE}:business_household_registration", metavar="PDF[:PROCEDURE]")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", choices=("tesseract", "scripted"), default="tesseract")
    args = parser.parse_args()
    path_text, _, procedure = args.input.partition(":")
    pdf, procedure = Path(path_text), procedure or "business_household_registration"
    print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    python, client = client_cpu(pdf, procedure, args.runs)
    print(f"client: python -c pass {statistics.median(python):.3f} s, hand-off up to the upload "
          f"{statistics.median(client):.3f} s CPU (medians of {args.runs})")
    stages = service_cpu(pdf, procedure, args.runs, args.engine)
    print(f"service ({args.engine} OCR, {pdf.name}), CPU seconds on the intake's thread, medians of {args.runs}:")
    for name, values in stages.items():
        print(f"  {name:22s} {statistics.median(values):.3f}  (min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
