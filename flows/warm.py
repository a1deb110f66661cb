"""Warm flow-run processes for a worker: Prefect and hoso imported once, a forked child per flow run.

A process worker starts each flow run as a new ``python -m prefect.engine``: ~0.8 s to import Prefect and ~1 s to
import hoso's flows (pyHanko, SQLAlchemy, OpenCV …) before the run's first dossier, once per worker per archive
batch — 7-8 % of a 40-dossier batch, measured. ``python -m flows.worker`` therefore starts this module's server
beside the worker (``serve``): it imports all that once and forks a child for each flow run. hoso's deployments
start flow runs with ``python -m flows.warm`` (this module's client, which imports nothing heavy): it hands the
server its environment, working folder and standard streams, and the child becomes ``python -m prefect.engine``
with them. The client stays the flow run's process as Prefect sees it: signals sent to it reach the child, and it
exits as the child did. The child ends with its client (a pipe held open by the client is its lifeline), so a
killed worker leaves no run behind. Where no server answers, the client becomes ``python -m prefect.engine``
itself: the same run, started cold.

Only for workers with one OCR process (``HOSO_OCR_JOBS=1``, as docker-compose runs them): a page pool's
forkserver under a forked child hung (seen in the test suite's own zygote).

Protocol, over a Unix socket: the client sends a length-prefixed JSON ``{"env": …, "cwd": …}`` with four file
descriptors attached (stdin, stdout, stderr, the lifeline's read end); the server answers the child's pid, then,
once it has exited, its exit code (negative: the signal that ended it), one line each.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from typing import NoReturn

#: The worker's server socket, in the environment of the worker and of the flow runs it starts.
SOCKET_ENV = "HOSO_WARM_ENGINE"
#: What the server imports before it forks: the engine, and every flow hoso deploys.
PRELOAD = ("prefect.engine", "flows.archive", "flows.desk", "flows.clerk")


# --- the client (a flow run's process) -------------------------------------------------------------


def _cold() -> NoReturn:
    """Become ``python -m prefect.engine`` (no server, or it did not answer)."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])


def run() -> int:
    """Run this flow run in a child of the worker's server; its exit code."""
    from pipeline.core.forking import send_request  # (light: the client imports nothing heavy)

    path = os.environ.get(SOCKET_ENV)
    if not path:
        _cold()
    life_r, life_w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)  # type: ignore[arg-type]
        body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode()
        send_request(conn, body, [0, 1, 2, life_r])
        replies = conn.makefile("r")
        pid = int(replies.readline())
    except (OSError, ValueError):  # no server, or it is gone: start cold (nothing ran yet)
        conn.close()
        os.close(life_r)
        os.close(life_w)
        _cold()
    os.close(life_r)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        line = replies.readline()
    except OSError:
        line = ""
    code = int(line) if line.strip() else 1  # the server died: closing the lifeline below ends the child
    os.close(life_w)
    if code < 0:  # ended by a signal: end the same way, as a cold process would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


# --- the server (beside the worker) ---------------------------------------------------------------


def _child(request: dict[str, object], fds: list[int], set_by_imports: dict[str, str]) -> NoReturn:
    """In the forked child: become ``python -m prefect.engine`` with the client's environment; never returns."""
    import traceback

    from pipeline.core.forking import run_as_main

    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        lifeline = fds[3]
        for fd in fds[:3]:
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()  # its own process group, as the worker starts a cold run

        def watch() -> None:  # the client gone (killed with its worker): so is this run
            with contextlib.suppress(OSError):
                while os.read(lifeline, 1):
                    pass
            os.killpg(os.getpid(), signal.SIGKILL)  # with whatever it started

        threading.Thread(target=watch, name="hoso-warm-lifeline", daemon=True).start()
        os.chdir(str(request["cwd"]))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        for key, value in set_by_imports.items():
            os.environ.setdefault(key, value)
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # Prefect read its settings when the server imported it
        sys.argv = [sys.argv[0]]
        sys.modules.pop("prefect.engine", None)  # run anew as __main__ (its imports are what is warm)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    run_as_main("prefect.engine")


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    from pipeline.core.forking import read_request

    body, fds = read_request(conn, 4)
    return json.loads(body), fds


def serve(path: str) -> int:
    """Import :data:`PRELOAD`, listen on ``path`` and fork a child per flow run, until the worker is gone."""
    import importlib

    from pipeline.core.forking import serve_forks

    before = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a thread would not survive the fork: serve nothing, runs start cold
        print(f"not serving: threads after the imports: {threading.enumerate()}", file=sys.stderr, flush=True)
        return 1
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}
    worker = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(16)
    print("ready", flush=True)

    def child(request: dict[str, object], fds: list[int]) -> NoReturn:
        _child(request, fds, set_by_imports)

    # The worker gone: no new runs; its last ones end on their own (with their clients).
    serve_forks(listener, _receive, child, keep_accepting=lambda: os.getppid() == worker, poll=0.1)
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    return 0


def start_server(timeout: float = 120.0) -> str | None:
    """Start the server beside this process (the worker) and wait until it has imported everything; its socket,
    or None (it failed: flow runs start cold). Its start-up errors go to this process's stderr."""
    import select
    import subprocess
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="hoso-warm-"), "engine.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.warm", "--serve", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        return None
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(sys.argv[2]))
    sys.exit(run())
