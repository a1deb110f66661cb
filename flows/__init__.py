"""Prefect flows that arrange hoso's stages. Importing this package sets quiet, local Prefect defaults."""

from __future__ import annotations

import os
from pathlib import Path

# With a Prefect server (PREFECT_API_URL), runs send their logs (INFO and up) to it and the console stays quiet;
# on the ephemeral server nobody reads them, so nothing is sent.
_API = bool(os.environ.get("PREFECT_API_URL"))
_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "INFO" if _API else "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_TO_API_ENABLED": "true" if _API else "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
for _name, _value in _DEFAULTS.items():
    os.environ.setdefault(_name, _value)
# Prefect's ephemeral server needs a writable home; keep it beside hoso's own data.
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("HOSO_DATA_DIR", "var")).resolve() / "prefect"))
