"""A fork server's loop: a process that has imported what its children need forks one per request.

Used by the archive workers' warm start (:mod:`flows.warm`) and by the test suite's ``hoso`` zygote. A request
arrives on a Unix socket; the server forks, the child handles it (and never returns), and the server answers the
child's pid on the request's connection, then its exit code (negative: the signal that ended it) once reaped.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
from collections.abc import Callable
from typing import NoReturn, TypeVar

Request = TypeVar("Request")
#: A request's frame: its body's length, then the body; descriptors ride with the first bytes (SCM_RIGHTS).
HEADER = struct.Struct("!I")


def send_request(conn: socket.socket, body: bytes, fds: list[int]) -> None:
    """Send ``body`` framed, with ``fds`` attached."""
    socket.send_fds(conn, [HEADER.pack(len(body)) + body], fds)


def read_request(conn: socket.socket, fds_expected: int) -> tuple[bytes, list[int]]:
    """The framed body of a request and the ``fds_expected`` descriptors attached (closed again, and
    ``ConnectionError`` raised, when the request is not whole)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, fds_expected)
    body = bytearray(data[HEADER.size :])
    size = HEADER.unpack_from(data)[0] if len(data) >= HEADER.size else -1
    while size >= 0 and len(fds) == fds_expected and len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            break
        body += more
    if size < 0 or len(fds) != fds_expected or len(body) != size:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("not a whole request")
    return bytes(body), list(fds)


def run_as_main(module: str) -> NoReturn:
    """In a forked child: run ``module`` as ``python -m`` would (``sys.argv`` already set), then exit this process
    with its exit code, as that would — a message in ``SystemExit`` printed, a traceback for an error, the
    ``atexit`` functions run and the streams flushed (``os._exit`` skips the interpreter's own shutdown)."""
    import atexit
    import runpy
    import sys
    import traceback

    code = 1
    try:
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve_forks(
    listener: socket.socket,
    receive: Callable[[socket.socket], tuple[Request, list[int]]],
    child: Callable[[Request, list[int]], NoReturn],
    *,
    keep_accepting: Callable[[], bool],
    poll: float = 0.05,
) -> None:
    """Fork ``child(request, fds)`` for each request ``receive`` reads off a connection to ``listener`` (a request it
    cannot read — ``OSError``, ``ConnectionError``, ``ValueError`` — is dropped), while ``keep_accepting()``; then
    stop accepting and return once the last child has been reaped. The received descriptors are the child's:
    the server closes its copies."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    accepting = True
    while accepting or children:
        if accepting and not keep_accepting():
            selector.unregister(listener)
            accepting = False
        for _key, _events in selector.select(timeout=poll):
            conn, _ = listener.accept()
            try:
                request, fds = receive(conn)
            except (OSError, ConnectionError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                selector.close()
                listener.close()
                conn.close()
                for other in children.values():
                    other.close()
                child(request, fds)
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(f"{pid}\n".encode())
            children[pid] = conn
        _reap(children)  # (with the listener unregistered, the select above only waits out ``poll``)
    selector.close()


def _reap(children: dict[int, socket.socket]) -> None:
    """Answer the exit code of every child that has ended."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply = children.pop(pid, None)
        if reply is not None:
            with contextlib.suppress(OSError):
                reply.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            reply.close()
