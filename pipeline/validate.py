"""Completeness of a dossier against its procedure: filled slots, missing alternatives, unexpected papers.

Rules (taxonomy.yaml):
- A slot is filled when at least one document has one of the slot's types. A document satisfies every
  slot that lists its type (slots are independent checks, not a one-to-one assignment), so
  ``certified_copy``, whose optional list repeats its one required slot, needs a single paper.
- ``missing``: the alternatives of each unfilled slot, in catalog order.
- ``unexpected``: types that are neither required nor optional, and ``unknown`` documents, in dossier
  order without repeats. They are reported but do not by themselves make a dossier incomplete.
- Status: ``rejected`` when nothing in the dossier belongs to the procedure (no document at all, only
  unrecognised papers, or only papers of other procedures) — the desk refuses it (phiếu từ chối);
  ``needs_supplement`` when a slot is unfilled (phiếu yêu cầu bổ sung); ``accepted`` otherwise.
"""

from __future__ import annotations

from pipeline.catalog import UNKNOWN, Catalog, Procedure
from pipeline.models import DocumentInfo, IntakeStatus, Validation


def _labels(types: list[str], catalog: Catalog) -> str:
    return " hoặc ".join(catalog.label(t) for t in types)


def validate(procedure: Procedure, documents: list[DocumentInfo], catalog: Catalog) -> Validation:
    """Check the classified documents of a dossier against the procedure's required and optional types."""
    present = {d.type for d in documents}
    missing = [list(slot) for slot in procedure.required if not present.intersection(slot)]
    allowed = procedure.allowed_types
    unexpected: list[str] = []
    for d in documents:
        if (d.type == UNKNOWN or d.type not in allowed) and d.type not in unexpected:
            unexpected.append(d.type)

    reasons: list[str] = []
    status: IntakeStatus
    relevant = [d for d in documents if d.type in allowed]
    if not relevant:
        if not documents:
            reasons.append("Hồ sơ không có giấy tờ nào.")
        elif all(d.type == UNKNOWN for d in documents):
            reasons.append("Không nhận dạng được giấy tờ nào trong hồ sơ; vui lòng kiểm tra và quét lại.")
        else:
            reasons.append(f"Hồ sơ không có giấy tờ nào thuộc thủ tục “{procedure.label}”.")
        status = "rejected"
    elif missing:
        status = "needs_supplement"
        reasons.append(
            "Thiếu thành phần hồ sơ: " + "; ".join(_labels(slot, catalog) for slot in missing) + "."
        )
    else:
        status = "accepted"
    if unexpected and status != "rejected":
        reasons.append(
            "Có giấy tờ không thuộc thành phần hồ sơ của thủ tục: "
            + "; ".join(catalog.label(t) for t in unexpected)
            + "."
        )
    return Validation(status=status, missing=missing, unexpected=unexpected, reasons_vi=reasons)
