"""Which failures of a dossier are worth another try: the one place the archive flow asks (swap this
predicate for the use case layer's classification once it exists)."""

from __future__ import annotations

from pipeline.core.errors import HosoError, InProgressElsewhere, StorageFailed

#: Tries after the first, and the backoff between them (seconds; Prefect adds ±20 % jitter).
RETRIES = 3
RETRY_DELAYS = [2.0, 8.0, 30.0]


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass by themselves (storage or database unreachable, a national-database
    timeout, another worker holding the same input); False for bad input and everything else."""
    if isinstance(exc, StorageFailed | InProgressElsewhere):
        return True
    if isinstance(exc, HosoError):
        return False
    import sqlalchemy.exc
    import urllib3.exceptions

    transient = (
        ConnectionError,
        TimeoutError,
        urllib3.exceptions.HTTPError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
    )
    return isinstance(exc, transient) or (exc.__cause__ is not None and is_transient(exc.__cause__))
