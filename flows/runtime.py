"""Process-wide pieces the flows share: one Services per process, Prefect run settings."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.usecases.services import Services

_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    """The process's Services (opened once; Dask workers each open their own)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services()
            atexit.register(_services.close)  # a worker's OCR processes end with it
        return _services


def use_services(value: Services | None) -> None:
    """Make the flows use these Services in this process (the CLI and tests pass their own)."""
    global _services
    with _lock:
        _services = value


@contextmanager
def quick_flow_settings() -> Iterator[None]:
    """Turn off the flow heartbeat, which otherwise holds every sync flow ~1 s at its end."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
