"""The procedure handbook citizens read (at home or at a kiosk): the catalog, as people need it.

Each entry says what to bring (required documents, with the alternatives that fill the same slot), how
long it takes (working days), what it costs (the fee line and whether that amount is verified) and the
procedure's national code. :func:`search` matches words regardless of case and diacritics
(``"khai sinh"`` finds "Đăng ký khai sinh", so does ``"KHAI SINH"`` and ``"khai sinh 1.001193"``).
"""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.core.text import squash
from pipeline.domain.catalog import Catalog, FeeStatus, Procedure


class HandbookEntry(BaseModel):
    key: str
    national_code: str | None
    label: str
    processing_days: int
    required: list[list[str]]  # labels; each inner list: the documents any one of which fills the slot
    optional: list[str]
    fee_line: str
    fee_status: FeeStatus


def entry(catalog: Catalog, procedure: Procedure) -> HandbookEntry:
    return HandbookEntry(
        key=procedure.key,
        national_code=procedure.national_code,
        label=procedure.label,
        processing_days=procedure.processing_days,
        required=[[catalog.label(k) for k in slot] for slot in procedure.required],
        optional=[catalog.label(k) for k in procedure.optional],
        fee_line=procedure.fee_line_vi(),
        fee_status=procedure.fee.status if procedure.fee else "unverified",
    )


def _haystack(e: HandbookEntry) -> str:
    docs = " ".join(label for slot in e.required for label in slot)
    return squash(" ".join([e.label, e.national_code or "", e.key.replace("_", " "), docs, " ".join(e.optional)]))


def search(catalog: Catalog, query: str = "") -> list[HandbookEntry]:
    """Entries whose label, code or documents hold every word of ``query`` (folded); all when it is blank.

    Matches in the procedure's own label come first, then by label.
    """
    entries = [entry(catalog, p) for p in catalog.procedures.values()]
    words = squash(query).split()
    if not words:
        return sorted(entries, key=lambda e: squash(e.label))
    found = [e for e in entries if all(w in _haystack(e) for w in words)]
    return sorted(found, key=lambda e: (not all(w in squash(e.label) for w in words), squash(e.label)))
