"""Fault injection for tests: die at a named stage boundary, or pause there.

Inert unless ``HOSO_TEST_DIE_AT`` or ``HOSO_TEST_PAUSE_AT`` names the checkpoint (``stage`` or
``stage:detail``, e.g. ``record:after_objects``). Dying is SIGKILL of the whole process group when this
process leads it (as a power cut would take the desk and its workers), else of this process alone.
Pausing (once per process) creates the file ``HOSO_TEST_PAUSE_FILE`` and waits until someone removes it (a test stops
a server meanwhile).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

DIE_ENV = "HOSO_TEST_DIE_AT"
PAUSE_ENV = "HOSO_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "HOSO_TEST_PAUSE_FILE"

_paused: set[str] = set()  # each checkpoint pauses once per process (a retried upload goes on)


def _named(env: str, name: str, detail: str | None) -> bool:
    wanted = os.environ.get(env)
    return bool(wanted) and wanted in (name, f"{name}:{detail}" if detail else name)


def checkpoint(name: str, detail: str | None = None) -> None:
    """A stage boundary: does nothing unless a test asked to die or pause here."""
    if _named(DIE_ENV, name, detail):
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    if _named(PAUSE_ENV, name, detail) and os.environ.get(PAUSE_FILE_ENV) and name not in _paused:
        _paused.add(name)
        marker = Path(os.environ[PAUSE_FILE_ENV])
        marker.write_text(f"{os.getpid()} {name}\n")
        deadline = time.monotonic() + 600
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
