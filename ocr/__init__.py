"""Scanned pages in, recognised pages and a searchable PDF out. Knows nothing of procedures.

The names below are loaded on first use (PEP 562), so that ``import ocr.models`` does not pull in OpenCV,
pdfium and the page pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocr.engine import ocr_input
    from ocr.load import InputInfo, inspect_input

__all__ = ["InputInfo", "inspect_input", "ocr_input"]

_HOMES = {"ocr_input": "ocr.engine", "InputInfo": "ocr.load", "inspect_input": "ocr.load"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ocr' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
