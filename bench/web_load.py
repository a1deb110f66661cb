"""Load on loopback: the citizen's lookup and the e-result's verify page of a real ``hoso serve``.

    python bench/web_load.py [--database-url postgresql+psycopg://…] [--requests 400] [--concurrency 8]

Sets up one returned dossier (the lifecycle's own steps, B-B signatures) in a temporary data folder, starts
``hoso serve`` on a free port with the lookup limit lifted, then sends a bounded number of requests per
endpoint from a thread pool and prints requests/s and latency percentiles. Runs in well under a minute with
the defaults; every request must answer 200.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pypdfium2 as pdfium  # noqa: E402
from support.lifecycle import ROUTE, receive, take  # noqa: E402
from support.pdfs import decode_qr  # noqa: E402
from support.servers import pg_schema  # noqa: E402
from support.web import start_web  # noqa: E402

from pipeline.core.models import DossierState  # noqa: E402
from pipeline.core.settings import Settings  # noqa: E402
from pipeline.usecases.services import Services  # noqa: E402
from storage import keys  # noqa: E402


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        assert r.status == 200, (url, r.status)
    return time.perf_counter() - start


def _load(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        times = list(pool.map(_get, [url] * requests))
    return time.perf_counter() - start, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="registry (default: SQLite in the temporary folder)")
    parser.add_argument("--requests", type=int, default=400, help="lookups (the verify page gets a quarter)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hoso-web-load-"))
    registry = contextlib.ExitStack()
    if args.database_url and args.database_url.startswith("postgresql"):  # a schema of its own, dropped after
        args.database_url = registry.enter_context(pg_schema(args.database_url, "hoso_web_load"))
    env = {"HOSO_DATA_DIR": str(folder / "var"), "HOSO_LEVEL_DIGITISED": "B-B", "HOSO_LEVEL_RESULT": "B-B",
           "HOSO_LOOKUP_RATE": "100000000", "HOSO_MODE": "development"}
    if args.database_url:
        env["HOSO_DATABASE_URL"] = args.database_url
    server = start_web(env, folder)
    try:
        services = Services(Settings(data_dir=folder / "var", database_url=args.database_url, public_url=server.url,
                                     level_digitised="B-B", level_result="B-B"))
        at = datetime.now(UTC) - timedelta(hours=1)
        code, form = receive(services, at)
        for name, who in ROUTE[DossierState.returned]:
            take(services, name, code, who, now=at + timedelta(minutes=1))
        assert form is not None and form.lookup_url
        pdf = services.store.get_bytes(services.registry.get(code).artifacts[keys.RESULT].object_key)
        last = len(pdfium.PdfDocument(pdf)) - 1
        (verify_url,) = [q for q in decode_qr(pdf, last) if "/xac-thuc/" in q]
        services.close()
        rows = []
        for name, url, n in (("lookup /tra-cuu/<code>?s=", form.lookup_url, args.requests),
                             ("verify page /xac-thuc/<code>?v=", verify_url, max(1, args.requests // 4))):
            _get(url)  # warm
            wall, times = _load(url, n, args.concurrency)
            times.sort()
            rows.append((name, n, n / wall, statistics.median(times) * 1000, times[int(0.95 * (n - 1))] * 1000))
        db = "PostgreSQL" if args.database_url and args.database_url.startswith("postgres") else "SQLite"
        print(f"hoso serve on loopback, registry {db}, concurrency {args.concurrency}")
        print(f"{'endpoint':34} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for name, n, rps, p50, p95 in rows:
            print(f"{name:34} {n:8d} {rps:8.1f} {p50:8.1f} {p95:8.1f}")
    finally:
        server.stop()
        registry.close()


if __name__ == "__main__":
    main()
