"""Long-running worker: serve hoso's flows as deployments of a Prefect server (docker-compose 'worker').

Run: ``python -m flows.serve`` with PREFECT_API_URL pointing at the server. The store, registry, signing
keys and trust roots are opened first: a configuration that production mode refuses (or that does not
work) stops the worker with one line on stderr and exit 17 (or the error's own code), before serving.
"""

from __future__ import annotations

import sys

import flows  # noqa: F401  (quiet Prefect defaults before Prefect is imported)
from flows.archive import reprocess_flow
from flows.clerk import issue_result_flow
from flows.desk import ingest_flow
from flows.runtime import services
from pipeline.core.errors import HosoError


def main() -> int:
    """Serve the desk, clerk and archive flows until stopped."""
    from prefect import serve

    try:
        services().preflight()
    except HosoError as err:
        print(f"hoso worker: lỗi [{err.reason}]: {err.message_vi} — {err}", file=sys.stderr)
        return int(err.exit_code)
    # to_deployment is sync here (no running event loop); its declared type also admits a coroutine.
    serve(
        ingest_flow.to_deployment(name="desk"),  # type: ignore[arg-type]
        issue_result_flow.to_deployment(name="clerk"),  # type: ignore[arg-type]
        reprocess_flow.to_deployment(name="archive"),  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
