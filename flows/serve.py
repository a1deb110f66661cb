"""Long-running worker: serve hoso's flows as deployments of a Prefect server (docker-compose 'worker').

Run: ``python -m flows.serve`` with PREFECT_API_URL pointing at the server.
"""

from __future__ import annotations

import flows  # noqa: F401  (quiet Prefect defaults before Prefect is imported)
from flows.archive import reprocess_flow
from flows.clerk import issue_result_flow
from flows.desk import ingest_flow


def main() -> None:
    """Serve the desk, clerk and archive flows until stopped."""
    from prefect import serve

    # to_deployment is sync here (no running event loop); its declared type also admits a coroutine.
    serve(
        ingest_flow.to_deployment(name="desk"),  # type: ignore[arg-type]
        issue_result_flow.to_deployment(name="clerk"),  # type: ignore[arg-type]
        reprocess_flow.to_deployment(name="archive"),  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
