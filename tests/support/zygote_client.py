"""The test process's side of :mod:`support.zygote`: one zygote per distinct start-up environment, started on demand."""

from __future__ import annotations

import atexit
import contextlib
import io
import locale
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.core.forking import send_request

#: Variables a run may set freely: nothing the zygote preloads reads them when imported.
RUNTIME_PREFIXES = ("HOSO_", "PREFECT_", "PYTEST_")
MAX_ZYGOTES = 3


class _Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hoso-zygote-"))
        self.path = str(self.folder / "sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.zygote", self.path],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        self.ready = self.proc.stdout.readline().strip() == "ready"
        if not self.ready:  # its imports failed: runs start Python anew
            self.stop()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for leftover in self.folder.iterdir():
            leftover.unlink()
        self.folder.rmdir()


_zygotes: dict[frozenset[tuple[str, str]], _Zygote | None] = {}
_lock = threading.Lock()


def _startup_env(env: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in env.items() if not k.startswith(RUNTIME_PREFIXES))


def _zygote_for(env: dict[str, str]) -> _Zygote | None:
    key = _startup_env(env)
    with _lock:
        if key not in _zygotes:
            if len(_zygotes) >= MAX_ZYGOTES:
                return None
            zygote = _Zygote(dict(key))
            _zygotes[key] = zygote if zygote.ready else None
        return _zygotes[key]


@atexit.register
def _stop_all() -> None:
    for zygote in _zygotes.values():
        if zygote is not None:
            zygote.stop()


def zygote_run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str] | None:
    """``python -m pipeline.cli *argv`` forked from a zygote, as :func:`subprocess.run` would report it; None
    when no zygote can take it (switched off, or too many distinct environments), so the caller starts Python."""
    if os.environ.get("HOSO_TEST_ZYGOTE") == "0":
        return None
    if env.get("HOSO_OCR_JOBS") != "1":
        return None  # a page pool's forkserver under a forked child hangs (seen): such runs start Python anew
    zygote = _zygote_for(env)
    if zygote is None:
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(zygote.path)
        body = pickle.dumps((argv, env, str(cwd)))
        send_request(conn, body, [out_w, err_w])
    except OSError:
        conn.close()
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        return None
    os.close(out_w)
    os.close(err_w)
    replies = conn.makefile("r")
    pid = int(replies.readline())
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    selector = selectors.DefaultSelector()
    for fd in chunks:
        selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    open_fds = set(chunks)
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(pid)
                raise subprocess.TimeoutExpired(
                    ["hoso", *argv], timeout, b"".join(chunks[out_r]), b"".join(chunks[err_r])
                )
            for key, _ in selector.select(timeout=left):
                data = os.read(key.fd, 1 << 16)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
        code = int(replies.readline())
    except BaseException:  # a timeout, or the test interrupted (pytest-timeout, Ctrl-C): the run goes too
        _kill(pid)
        raise
    finally:
        selector.close()
        os.close(out_r)
        os.close(err_r)
        replies.close()
        conn.close()
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "pipeline.cli", *argv], code,
        _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r])),
    )


def _text(raw: bytes) -> str:
    """Decoded as ``subprocess.run(text=True)`` decodes: the locale's encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(raw), encoding=locale.getpreferredencoding(False), newline=None).read()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
