"""Which modules the fast lane exercises: line coverage of every module of pipeline/ ocr/ signing/ storage/ flows/.

Runs ``pytest -m "not slow"`` under coverage.py (subprocesses too: the ``hoso`` command, servers) and prints,
per module, its statements, the share run, and how many statements inside functions ran — a module merely
imported runs its ``def`` lines but no function body. Ends with the modules that no fast test exercised
(none imported, or no function body run) and exits 1 if there are any.

    python bench/fast_lane_coverage.py                 # the whole fast lane (several minutes; needs coverage)
    python bench/fast_lane_coverage.py tests/test_x.py # only these tests
    python bench/fast_lane_coverage.py --report DIR    # report on the data a previous run left in DIR
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "ocr", "signing", "storage", "flows")


def _rcfile(data_dir: Path) -> Path:
    rc = data_dir / "coveragerc"
    rc.write_text(
        "[run]\n"
        f"source = {', '.join(PACKAGES)}\n"
        f"data_file = {data_dir / '.coverage'}\n"
        "parallel = true\n"
        "patch = subprocess\n"
        "sigterm = true\n"
        "disable_warnings = no-data-collected, module-not-measured\n",
        encoding="utf-8",
    )
    return rc


def run_fast_lane(data_dir: Path, pytest_args: list[str]) -> int:
    """Run the fast lane under coverage, leaving the data in ``data_dir``; returns pytest's exit code."""
    rc = _rcfile(data_dir)
    env = {**os.environ, "COVERAGE_RCFILE": str(rc)}
    cmd = [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-m", "not slow", "-q",
           "-p", "no:cacheprovider", *pytest_args]
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def _function_lines(source: str) -> set[int]:
    """Line numbers of the statements inside function bodies (what runs only when a function is called)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in node.body:
                lines.update(n.lineno for n in ast.walk(inner) if isinstance(n, ast.stmt))
    return lines


def report(data_dir: Path) -> int:
    """Print the per-module table and the unexercised modules; 1 if any module is unexercised."""
    import coverage

    cov = coverage.Coverage(config_file=str(_rcfile(data_dir)))
    cov.combine(data_paths=[str(data_dir)], keep=True)
    measured = {Path(f).resolve() for f in cov.get_data().measured_files()}
    unexercised: list[str] = []
    print(f"{'module':58} {'stmts':>6} {'run %':>6} {'in functions':>13}")
    for path in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if path.resolve() not in measured:
            print(f"{name:58} {'':>6} {'none':>6}")
            unexercised.append(f"{name} (never imported)")
            continue
        _, statements, _, missing, _ = cov.analysis2(str(path))
        ran = set(statements) - set(missing)
        body = _function_lines(path.read_text(encoding="utf-8")) & set(statements)
        share = 100.0 * len(ran) / len(statements) if statements else 100.0
        print(f"{name:58} {len(statements):6} {share:6.1f} {len(ran & body):6}/{len(body):<6}")
        if statements and not ran:
            unexercised.append(f"{name} (never run)")
        elif body and not ran & body:
            unexercised.append(f"{name} (imported, no function ran)")
    print(f"\nmodules no fast test exercises: {len(unexercised)}")
    for line in unexercised:
        print(f"  {line}")
    return 1 if unexercised else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, metavar="DIR", help="only report on the data left in DIR")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="leave the coverage data in DIR")
    args, pytest_args = parser.parse_known_args()
    if args.report:
        return report(args.report)
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="hoso-fast-coverage-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    code = run_fast_lane(data_dir, pytest_args)
    print(f"pytest exit code {code}; coverage data in {data_dir}\n")
    return report(data_dir) or (1 if code else 0)


if __name__ == "__main__":
    sys.exit(main())
