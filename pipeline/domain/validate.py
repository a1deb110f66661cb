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
  ``needs_supplement`` when a slot is unfilled or the papers disagree about one person (phiếu yêu cầu
  bổ sung, hoàn thiện hồ sơ); ``accepted`` otherwise.
- Cross-document consistency: documents that carry the same 12-digit ID (one OCR digit apart counts as
  the same) must agree on the person's name and date of birth. OCR noise is tolerated: names are compared
  diacritic-folded and fuzzily, dates must differ in more than one character, and only fields read with
  confidence count.
"""

from __future__ import annotations

from itertools import combinations

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from pipeline.core.models import DocumentInfo, IntakeStatus, Validation
from pipeline.core.text import squash
from pipeline.domain.catalog import UNKNOWN, Catalog, Procedure

NAME_MIN_SIMILARITY = 80.0  # folded-name ratio below this: two different people
FIELD_MIN_CONFIDENCE = 0.7


def _labels(types: list[str], catalog: Catalog) -> str:
    return " hoặc ".join(catalog.label(t) for t in types)


def _sure(doc: DocumentInfo, name: str) -> str | None:
    value = doc.fields.get(name)
    return value if value and doc.field_confidence.get(name, 1.0) >= FIELD_MIN_CONFIDENCE else None


def _same_id(a: str, b: str) -> bool:
    return a == b or (len(a) == len(b) == 12 and Levenshtein.distance(a, b) <= 1)


def inconsistencies(documents: list[DocumentInfo], catalog: Catalog) -> list[str]:
    """Disagreements, in Vietnamese, between documents that name the same person (same ID number)."""
    out: list[str] = []
    docs = [d for d in documents if d.type != UNKNOWN and _sure(d, "id_number")]
    for a, b in combinations(docs, 2):
        ida, idb = _sure(a, "id_number"), _sure(b, "id_number")
        if not (ida and idb and _same_id(ida, idb)):
            continue
        where = f"{catalog.label(a.type)} và {catalog.label(b.type)} (cùng số định danh {ida})"
        na, nb = _sure(a, "full_name"), _sure(b, "full_name")
        # token_set_ratio: a name cut short by a misread line ("Phạm Hải" for "Phạm Hải Diệp") still agrees.
        if na and nb and fuzz.token_set_ratio(squash(na), squash(nb)) < NAME_MIN_SIMILARITY:
            out.append(f"Họ tên không thống nhất giữa {where}: “{na}” và “{nb}”.")
        da, db = _sure(a, "date_of_birth"), _sure(b, "date_of_birth")
        if da and db and Levenshtein.distance(da, db) > 1:
            out.append(f"Ngày sinh không thống nhất giữa {where}: {da} và {db}.")
    return out


def supplement_notice(
    procedure: Procedure, status: IntakeStatus, reasons: list[str], missing: list[list[str]],
    problems: list[str], catalog: Catalog,
) -> str:
    """The text of the phiếu yêu cầu bổ sung, hoàn thiện hồ sơ (or phiếu từ chối), for the citizen."""
    if status == "accepted":
        return ""
    if status == "rejected":
        lines = [
            "PHIẾU TỪ CHỐI TIẾP NHẬN, GIẢI QUYẾT HỒ SƠ",
            f"Thủ tục: {procedure.label}",
            "Lý do từ chối:",
            *(f"- {r}" for r in reasons),
        ]
        return "\n".join(lines)
    lines = [
        "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ",
        f"Thủ tục: {procedure.label}",
        "Hồ sơ chưa đầy đủ, chưa hợp lệ. Đề nghị bổ sung, hoàn thiện các nội dung sau:",
    ]
    n = 0
    for slot in missing:
        n += 1
        lines.append(f"{n}. Bổ sung {_labels(slot, catalog)} — lý do: thành phần hồ sơ bắt buộc còn thiếu.")
    for p in problems:
        n += 1
        lines.append(f"{n}. Kiểm tra, nộp lại giấy tờ đúng thông tin — lý do: {p}")
    return "\n".join(lines)


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
    problems = inconsistencies(documents, catalog) if status != "rejected" else []
    if problems:
        status = "needs_supplement"
        reasons.extend(problems)
    if unexpected and status != "rejected":
        reasons.append(
            "Có giấy tờ không thuộc thành phần hồ sơ của thủ tục: "
            + "; ".join(catalog.label(t) for t in unexpected)
            + "."
        )
    return Validation(
        status=status,
        missing=missing,
        unexpected=unexpected,
        reasons_vi=reasons,
        inconsistencies=problems,
        notice_vi=supplement_notice(procedure, status, reasons, missing, problems, catalog),
    )
