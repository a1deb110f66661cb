"""Scanned pages in, recognised pages and a searchable PDF out. Knows nothing of procedures."""

from ocr.engine import ocr_input
from ocr.load import InputInfo, inspect_input

__all__ = ["InputInfo", "inspect_input", "ocr_input"]
