"""A worker of hoso's Prefect work pool (docker-compose 'worker', ``--scale worker=N``; one per machine or core).

Run: ``python -m flows.worker [--pool hoso] [--limit 1]`` with PREFECT_API_URL and the HOSO_* settings. The
store, registry, signing keys and trust roots are opened first: a configuration that production mode refuses
(or that does not work) stops it with one line on stderr and exit 17 (or the error's own code) before it takes
any work. It then makes sure the process work pool exists and that hoso's deployments are on it (desk, clerk,
archive batch, archive worker: idempotent, so every worker may do it), and becomes ``prefect worker start``
on that pool, running ``--limit`` flow runs at a time (each in its own process, with this environment).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import flows  # noqa: F401  (quiet Prefect defaults before Prefect is imported)
from flows.archive import ENGINE_JOB, ensure_worker_deployment
from flows.runtime import services
from pipeline.core.errors import HosoError

DEFAULT_POOL = "hoso"
#: hoso's other flows, deployed on the pool beside the archive worker: (flow name, deployment, entrypoint).
DEPLOYMENTS = [
    ("hoso-ingest", "desk", "flows.desk:ingest_flow"),
    ("hoso-issue-result", "clerk", "flows.clerk:issue_result_flow"),
    ("hoso-reprocess", "archive", "flows.archive:reprocess_flow"),
]


def deploy(pool: str) -> list[str]:
    """The pool (a process pool, made if absent) and hoso's deployments on it; their names."""
    from prefect.client.orchestration import get_client

    names = [ensure_worker_deployment(pool)]
    with get_client(sync_client=True) as client:
        for flow_name, deployment, entrypoint in DEPLOYMENTS:
            client.create_deployment(
                flow_id=client.create_flow_from_name(flow_name),
                name=deployment,
                work_pool_name=pool,
                entrypoint=entrypoint,
                enforce_parameter_schema=False,
                pull_steps=[],
                job_variables=ENGINE_JOB,
            )
            names.append(f"{flow_name}/{deployment}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--limit", type=int, default=1, help="flow runs at once on this worker")
    args = parser.parse_args(argv)
    try:
        services().preflight()
    except HosoError as err:
        print(f"hoso worker: lỗi [{err.reason}]: {err.message_vi} — {err}", file=sys.stderr)
        return int(err.exit_code)
    deploy(args.pool)
    if services().settings.ocr_jobs == 1 and os.environ.get("HOSO_WARM_START", "1") != "0":
        from flows.warm import SOCKET_ENV, start_server

        socket_path = start_server()  # flow runs forked from a process that has imported Prefect and hoso
        if socket_path is None:
            print("hoso worker: warm start unavailable; flow runs start cold", file=sys.stderr)
        else:
            os.environ[SOCKET_ENV] = socket_path
    bin_dir = str(Path(sys.executable).parent)
    # flow runs start as `python -m prefect.engine` (flows.archive.ENGINE_JOB): this interpreter's
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    prefect = str(Path(bin_dir) / "prefect")
    command = [prefect, "worker", "start", "--pool", args.pool, "--type", "process", "--limit", str(args.limit)]
    if os.environ.get("PREFECT_WORKER_WEBSERVER_PORT"):
        command.append("--with-healthcheck")
    sys.stdout.flush()
    os.execv(prefect, command)  # the worker takes this process over (signals, exit code)


if __name__ == "__main__":
    sys.exit(main())
