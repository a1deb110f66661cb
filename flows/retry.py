"""Which failures of a dossier's task are worth another try: the one place the archive flow asks.

The desk chain already retries transient errors itself (``process_one``, ``HOSO_RETRY_*``); what reaches
Prefect as an exception (the registry unreachable while the task records its outcome, say) is retried by
Prefect on the same classification (:func:`pipeline.core.retry.is_transient`); bad input never.
"""

from __future__ import annotations

from pipeline.core.retry import is_transient

#: Prefect's tries after the first, and the backoff between them (seconds; Prefect adds ±20 % jitter).
RETRIES = 3
RETRY_DELAYS = [2.0, 8.0, 30.0]

__all__ = ["RETRIES", "RETRY_DELAYS", "is_transient"]
