"""Per-dossier latency of ``hoso ingest`` (wall time and its stages), and of ``hoso reprocess``.

Run by hand:  .venv/bin/python bench/desk_latency.py [--input PDF] [--procedure KEY] [--runs 3] [--batch FOLDER]
Each run is a fresh process with a fresh data folder, as a desk user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "corpus" / "public" / "dossiers"


def run_ingest(pdf: Path, procedure: str, mode: str, env_extra: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"HOSO_DATA_DIR": f"{tmp}/var"} | env_extra
        # the dev PKI is made once per data folder; make it first so it is not timed as desk work
        subprocess.run([sys.executable, "-c", "from pipeline.usecases.services import Services; Services().pki"],
                       env=env, check=True, cwd=tmp)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "ingest", str(pdf), "--procedure", procedure, "--json", mode],
            env=env, capture_output=True, text=True, cwd=tmp,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"ingest failed ({proc.returncode}): {proc.stderr}")
        timings = json.loads(proc.stdout)["timings"]
        return {"process": wall} | timings


def run_reprocess(folder: Path) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"HOSO_DATA_DIR": f"{tmp}/var"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "reprocess", str(folder), "--json"],
                              env=env, capture_output=True, text=True, cwd=tmp)
        first = time.perf_counter() - start
        summary = json.loads(proc.stdout)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "reprocess", str(folder), "--json"],
                              env=env, capture_output=True, text=True, cwd=tmp)
        second = time.perf_counter() - start
        return first, {"first": summary, "second_seconds": second, "second": json.loads(proc.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = PUBLIC / "PUB-0002.pdf"
    parser.add_argument("--input", type=Path, default=default if default.exists() else
                        ROOT / "pipeline" / "data" / "sample_dossier.pdf")
    parser.add_argument("--procedure", default="business_household_registration")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="--direct,--prefect")
    parser.add_argument("--batch", type=Path, default=None, help="also time `hoso reprocess` on this folder")
    args = parser.parse_args()

    print(f"input: {args.input}")
    print(f"{'mode':<10} {'process s':>10} {'wall s':>8} {'ocr s':>7} {'understand':>10} {'sign':>6} {'record':>7}")
    for mode in args.modes.split(","):
        rows = [run_ingest(args.input, args.procedure, mode, {}) for _ in range(args.runs)]
        med = {k: statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}
        print(f"{mode.strip('-'):<10} {med['process']:>10.2f} {med.get('wall', 0):>8.2f} {med.get('ocr', 0):>7.2f} "
              f"{med.get('understand', 0):>10.2f} {med.get('sign', 0):>6.2f} {med.get('record', 0):>7.2f}")
    if args.batch:
        first, detail = run_reprocess(args.batch)
        s = detail["first"]
        print(f"reprocess {args.batch}: {first:.1f} s for {s['total']} dossiers "
              f"(processed {s['processed']}, failed {s['failed']}); "
              f"second run {detail['second_seconds']:.1f} s (already done {detail['second']['already_done']})")


if __name__ == "__main__":
    main()
