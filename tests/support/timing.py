"""A pytest plugin (``-p support.timing``) writing each test's wall and CPU seconds as JSON lines.

CPU counts this process and the children it reaped during the test (a CLI run, a worker pool); a test whose
wall time is far above its CPU time is waiting (a server, a sleep, a loaded machine) rather than computing.
Output goes to ``$HOSO_TIMING_FILE`` (appended). Used by ``bench/fast_lane.py``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Generator

import pytest


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    wall, cpu = time.perf_counter(), _cpu()
    yield
    target = os.environ.get("HOSO_TIMING_FILE")
    if target:
        row = {"test": item.nodeid, "wall": round(time.perf_counter() - wall, 3), "cpu": round(_cpu() - cpu, 3),
               "load": round(os.getloadavg()[0], 2)}
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
