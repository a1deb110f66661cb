"""A process that has imported hoso's libraries once and forks a fresh child for each ``hoso`` run.

A ``hoso`` command spends 1-1.5 s of CPU importing pydantic, SQLAlchemy, pyHanko, pikepdf, OpenCV and hoso's own
modules before it does anything; the suite runs it hundreds of times. :class:`support.cli.Hoso` asks this zygote
instead of starting an interpreter: the child is still a process of its own (own pid, file descriptors, working
folder, environment and exit code; it runs ``python -m pipeline.cli`` through :mod:`runpy` and exits as that
would), only its imports are already done.

What the preloaded modules read from the environment when imported is the zygote's environment, so a run is
handed to a zygote only if its environment equals the zygote's apart from ``HOSO_*`` and ``PREFECT_*``
variables, which nothing imported here reads at import time (``flows``, which does, and Prefect are not
preloaded). Variables the preloaded modules set at import (``os.environ.setdefault``) are set again in each child.

Protocol, over a Unix socket: the client sends a length-prefixed pickle ``(argv, env, cwd)`` with its stdout and
stderr pipe ends attached (SCM_RIGHTS); the zygote answers the child's pid, then, once the child has exited, its
exit code (negative: the signal that ended it), one line each.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import sys
from typing import NoReturn

from pipeline.core.forking import read_request, run_as_main, serve_forks

#: Imported once in the zygote. Not ``flows`` and not Prefect: they read the environment when imported.
PRELOAD = (
    "pydantic", "pydantic_settings", "sqlalchemy", "sqlalchemy.orm", "alembic", "typer", "click", "yaml", "jinja2",
    "cryptography", "asn1crypto", "pyhanko.sign", "pyhanko.sign.fields", "pyhanko.pdf_utils.incremental_writer",
    "pikepdf", "fontTools.subset", "PIL.Image", "numpy", "cv2", "minio", "aiohttp", "httpx",
    "pipeline.cli.app", "pipeline.cli.console", "pipeline.usecases.services", "pipeline.usecases.desk",
    "pipeline.usecases.clerk", "pipeline.usecases.lifecycle", "storage.records", "storage.registry", "signing",
)
NOT_PRELOADED = ("flows", "prefect")


def _preload() -> dict[str, str]:
    """Import :data:`PRELOAD` (what fails to import is left to the child); return what the imports set in the
    environment."""
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - the child imports it again and reports the error itself
            continue
    leaked = [m for m in sys.modules if m.split(".")[0] in NOT_PRELOADED]
    if leaked:
        raise RuntimeError(f"the zygote must not import {sorted(leaked)[:5]} (they read the environment)")
    return {k: v for k, v in os.environ.items() if before.get(k) != v}


def _child(
    request: tuple[list[str], dict[str, str], str], fds: list[int], set_by_imports: dict[str, str]
) -> NoReturn:
    """In the forked child: become ``python -m pipeline.cli *argv`` in ``cwd`` with ``env``; never returns."""
    import traceback

    try:
        argv, env, cwd = request
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            os.close(fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for key, value in set_by_imports.items():
            os.environ.setdefault(key, value)
        sys.path[0] = cwd  # what ``python -m`` puts first
        sys.argv = [sys.argv[0], *argv]
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    run_as_main("pipeline.cli")


def _receive(conn: socket.socket) -> tuple[tuple[list[str], dict[str, str], str], list[int]]:
    body, fds = read_request(conn, 2)
    try:
        return pickle.loads(body), fds
    except pickle.UnpicklingError as exc:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"not a request: {exc}") from exc


def serve(path: str) -> None:
    """Listen on ``path``; fork a child per request; exit when the parent (the test process) is gone."""
    set_by_imports = _preload()
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)

    def child(request: tuple[list[str], dict[str, str], str], fds: list[int]) -> NoReturn:
        _child(request, fds, set_by_imports)

    serve_forks(listener, _receive, child, keep_accepting=lambda: os.getppid() == parent, poll=0.02)


if __name__ == "__main__":
    serve(sys.argv[1])
