"""Text helpers shared by every layer: Vietnamese case/diacritic folding and date normalisation."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import lru_cache

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_DATE = re.compile(r"(?<!\d)(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*(\d{4})(?!\d)")
_WORD_DATE = re.compile(r"ngay\s+(\d{1,2})\s+thang\s+(\d{1,2})\s+nam\s+(\d{4})")


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    if ch in "đĐ":
        return "d"
    base = unicodedata.normalize("NFD", ch)[0]
    return base.lower() if len(base.lower()) == 1 else base


def fold(text: str) -> str:
    """Diacritic- and case-folded text with the same length as the NFC input (one char per char)."""
    return "".join(_fold_char(c) for c in unicodedata.normalize("NFC", text))


def squash(text: str) -> str:
    """Folded text reduced to lower-case alphanumeric words separated by single spaces."""
    return _NON_ALNUM.sub(" ", fold(text)).strip()


def parse_date(value: str) -> str | None:
    """The first valid ``dd/mm/yyyy`` (or ``ngày d tháng m năm yyyy``) date in ``value``, normalised."""
    for m in [*_DATE.finditer(value), *_WORD_DATE.finditer(fold(value))]:
        d, mth, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        try:
            date(y, mth, d)
        except ValueError:
            continue
        if 1880 <= y <= 2100:
            return f"{d:02d}/{mth:02d}/{y}"
    return None
