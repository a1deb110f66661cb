"""Transient errors and the one retry policy: try again later what a server outage broke, never bad input.

:func:`is_transient` is the single classification every layer uses (``process_one`` in the archive, the
Prefect task's retry condition). Transient: the object store unreachable, resetting, timing out, answering
5xx or ``SlowDown``; the registry database unreachable or dropping its connection, a serialization
failure or deadlock; the national-database service (or a timestamp server) timing out, unreachable or
answering 5xx; another process holding the work (:class:`~pipeline.core.errors.InProgressElsewhere`).
Not transient: bad input, an unknown procedure, a state or permission error, an integrity failure, a
configuration error, a bug.

A :class:`~pipeline.core.errors.HosoError` says so itself (``transient`` True or False); when it leaves it
open (None, as a ``StorageFailed`` wrapping whatever the driver raised does), its cause decides. Library
exceptions are recognised by type without importing their libraries: an exception of a library that was
never imported cannot exist.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.core.errors import HosoError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: S3 error codes that mean "busy or failing now", not "no".
S3_TRANSIENT_CODES = frozenset(
    {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "OperationAborted"}
)
#: SQLSTATEs worth another try: serialization failure, deadlock, connection exceptions (class 08),
#: server shutting down or starting (57P01–57P03), too many connections.
SQLSTATE_TRANSIENT = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
#: SQLite's OperationalError also means "bad SQL" or "no such table": only these pass with time.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def _driver_verdict(orig: BaseException | None) -> bool | None:
    """A DB-API error's own say (psycopg's SQLSTATE, SQLite's message); None when it says nothing."""
    if orig is None:
        return None
    state = _sqlstate(orig)
    if state is not None:
        return state in SQLSTATE_TRANSIENT or state.startswith("08")
    sqlite3 = _module("sqlite3")
    if sqlite3 is not None and isinstance(orig, sqlite3.OperationalError):
        return any(p in str(orig).lower() for p in _SQLITE_TRANSIENT)
    return None


def _verdict(exc: BaseException) -> bool | None:
    """True/False when this exception alone decides; None to ask its cause."""
    if isinstance(exc, HosoError):
        return exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError)):  # refused, reset, aborted, broken pipe, socket timeout
        return True

    sa = _module("sqlalchemy.exc")
    if sa is not None and isinstance(exc, sa.SQLAlchemyError):
        if isinstance(exc, (sa.DisconnectionError, sa.TimeoutError)):  # pool: dropped, or no connection in time
            return True
        if isinstance(exc, sa.DBAPIError):
            if exc.connection_invalidated:
                return True
            said = _driver_verdict(exc.orig)
            if said is not None:
                return said
            return isinstance(exc, (sa.OperationalError, sa.InterfaceError))
        return False
    psycopg = _module("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        said = _driver_verdict(exc)
        return said if said is not None else isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    u3 = _module("urllib3.exceptions")
    if u3 is not None and isinstance(exc, u3.HTTPError):
        if isinstance(exc, u3.MaxRetryError):
            return True if exc.reason is None else is_transient(exc.reason)
        if isinstance(exc, (u3.SSLError, u3.LocationValueError, u3.ProxySchemeUnknown)):
            return False
        return isinstance(exc, (u3.TimeoutError, u3.ProtocolError, u3.ResponseError, u3.NewConnectionError))
    minio = _module("minio.error")
    if minio is not None and isinstance(exc, minio.MinioException):
        if isinstance(exc, minio.S3Error):
            return exc.code in S3_TRANSIENT_CODES
        if isinstance(exc, minio.ServerError):
            return True  # a 5xx the SDK could not read as an S3 error
        if isinstance(exc, minio.InvalidResponseError):
            return (getattr(exc, "_code", 0) or 0) >= 500
        return False

    requests = _module("requests.exceptions")  # pyHanko's timestamp and revocation fetchers
    if requests is not None and isinstance(exc, requests.RequestException):
        if isinstance(exc, requests.SSLError):
            return False
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
        response = getattr(exc, "response", None)
        return response is not None and (response.status_code >= 500 or response.status_code == 429)

    httpx = _module("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code >= 500 or exc.response.status_code == 429
        return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` comes from an outage or overload that trying again later may get past.

    Walks the cause chain (``raise … from err``, else the implicit context) until one exception decides;
    an exception nothing decides on — a bug — is not transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _verdict(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    ``attempts`` in all (1: no retry). Before attempt *n + 1* the wait is drawn from
    [d/2, d] with d = min(``max_delay``, ``base_delay`` × 2^(n−1)): never longer than ``max_delay``, and
    spread so that workers hit by the same outage do not come back in step.
    """

    attempts: int = 4
    base_delay: float = 2.0
    max_delay: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        """From ``HOSO_RETRY_ATTEMPTS``, ``HOSO_RETRY_BASE_DELAY``, ``HOSO_RETRY_MAX_DELAY``."""
        return cls(settings.retry_attempts, settings.retry_base_delay, settings.retry_max_delay)

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based)."""
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1))

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` of them."""
        draw = rng or random
        for retry in range(1, self.attempts):
            ceiling = self.ceiling(retry)
            yield draw.uniform(ceiling / 2, ceiling)

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_if: Callable[[BaseException], bool] = is_transient,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> T:
        """``fn()``, tried again after a wait while it raises what ``retry_if`` accepts and attempts remain.

        ``on_retry(attempt, error, wait)`` is told about each failed attempt that will be retried. The
        last error (or the first one not retried) propagates as it is.
        """
        waits = self.delays(rng)
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as err:
                wait = next(waits, None)
                if wait is None or not retry_if(err):
                    raise
                if on_retry is not None:
                    on_retry(attempt, err, wait)
                sleep(wait)
                attempt += 1
