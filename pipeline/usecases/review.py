"""A dossier as staff review it: its pages (thumbnails, recognised text), documents, audit trail and the
steps the user may take now; and the correction of a document's type or a field by hand.

A correction re-validates the dossier against its procedure (what is missing, unexpected or inconsistent
is recomputed), updates the receipt and the document in one registry transaction and records an event
(``correct``: who, in which role, before and after) — the dossier stays in its state.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pypdfium2 as pdfium

from pipeline.core.errors import DossierNotFound, Forbidden, InvalidRequest, InvalidState
from pipeline.core.models import DocumentInfo, DossierState, Receipt, Role
from pipeline.domain.catalog import Procedure
from pipeline.domain.lifecycle import Actor, Transition, load_lifecycle
from pipeline.domain.validate import validate
from pipeline.usecases.lifecycle import appointment
from pipeline.usecases.services import Services
from storage import keys
from storage.records import read_recorded
from storage.registry import DossierRecord

#: Who may correct what the desk read, and while the dossier is still being appraised.
CORRECTORS = frozenset({Role.desk, Role.specialist})
CORRECTABLE = frozenset({DossierState.received, DossierState.needs_supplement, DossierState.appraisal})
MAX_FIELD = 500


@dataclass
class DocumentView:
    position: int
    type: str
    label: str
    pages: list[int]
    confidence: float
    fields: dict[str, str]
    source: str = "scan"


@dataclass
class DossierView:
    record: DossierRecord
    procedure: Procedure
    state_label: str
    appointment: datetime
    overdue: bool
    pages: int
    documents: list[DocumentView]
    missing: list[list[str]]
    inconsistencies: list[str]
    steps: list[Transition]  # the steps this user may take from the dossier's state
    can_correct: bool
    doc_types: dict[str, str] = field(default_factory=dict)  # type key -> label, for the correction form
    texts: list[str] = field(default_factory=list)  # recognised text per page (the digitised copy's text layer)


def _digitised(services: Services, record: DossierRecord) -> bytes | None:
    artifact = record.artifacts.get(keys.DIGITISED)
    return None if artifact is None else read_recorded(services.store, artifact)


def page_texts(pdf: bytes) -> list[str]:
    doc = pdfium.PdfDocument(pdf)
    try:
        out = []
        for page in doc:
            textpage = page.get_textpage()
            out.append(textpage.get_text_range().replace("\r\n", "\n").strip())
            textpage.close()
            page.close()
        return out
    finally:
        doc.close()


def dossier(services: Services, code: str, actor: Actor, *, with_text: bool = True) -> DossierView:
    """The dossier page of ``code`` for ``actor``."""
    record = services.registry.get(code)
    if record.state == DossierState.receiving:
        raise DossierNotFound(f"dossier {code} is still being received")
    lc = load_lifecycle()
    catalog = services.catalog
    procedure = catalog.procedure(record.procedure)
    receipt = Receipt.model_validate(record.receipt_json) if record.receipt_json else None
    documents = [
        DocumentView(position=i, type=d.type, label=catalog.label(d.type) if d.type in catalog.doc_types else d.type,
                     pages=d.pages, confidence=d.confidence, fields=d.fields, source=d.source)
        for i, d in enumerate(receipt.documents if receipt else [])
    ]
    pdf = _digitised(services, record) if with_text else None
    texts = page_texts(pdf) if pdf else []
    due = appointment(record)
    steps = [t for t in lc.transitions.values()
             if record.state in t.sources and set(t.roles) & actor.roles and t.name != "receive"]
    return DossierView(
        record=record, procedure=procedure, state_label=lc.state_label(record.state), appointment=due,
        overdue=due < datetime.now(UTC) and record.state in lc.open_states, pages=len(receipt.pages) if receipt else 0,
        documents=documents,
        missing=[[catalog.label(k) for k in slot] for slot in (receipt.missing if receipt else [])],
        inconsistencies=receipt.inconsistencies if receipt else [], steps=steps,
        can_correct=bool(actor.roles & CORRECTORS) and record.state in CORRECTABLE,
        doc_types={k: v.label for k, v in sorted(catalog.doc_types.items(), key=lambda kv: kv[1].label)},
        texts=texts,
    )


_THUMBNAILS: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_THUMBNAILS_KEPT = 512
_thumbnails_lock = threading.Lock()


def _render_page(pdf: bytes, page: int, width: int) -> bytes:
    doc = pdfium.PdfDocument(pdf)
    try:
        if not 1 <= page <= len(doc):
            raise DossierNotFound(f"page {page} is not in the digitised copy", "Không có trang này trong hồ sơ.")
        p = doc[page - 1]
        scale = width / p.get_width()
        image = p.render(scale=scale).to_pil()
        buf = io.BytesIO()
        image.save(buf, "PNG", optimize=True)
        p.close()
        return buf.getvalue()
    finally:
        doc.close()


def page_thumbnail(services: Services, code: str, page: int, *, width: int = 240) -> bytes:
    """PNG of page ``page`` (1-based) of the dossier's signed digitised copy, ``width`` pixels wide."""
    record = services.registry.get(code)
    artifact = record.artifacts.get(keys.DIGITISED)
    if artifact is None:
        raise DossierNotFound(f"dossier {code} has no digitised copy", "Hồ sơ chưa có bản số hóa.")
    key = (artifact.sha256, page, width)
    with _thumbnails_lock:
        if key in _THUMBNAILS:
            _THUMBNAILS.move_to_end(key)
            return _THUMBNAILS[key]
    png = _render_page(read_recorded(services.store, artifact), page, width)
    with _thumbnails_lock:
        _THUMBNAILS[key] = png
        while len(_THUMBNAILS) > _THUMBNAILS_KEPT:
            _THUMBNAILS.popitem(last=False)
    return png


def correct(
    services: Services,
    code: str,
    actor: Actor,
    position: int,
    doc_type: str | None = None,
    field_name: str | None = None,
    value: str | None = None,
    note: str | None = None,
) -> DossierRecord:
    """Set document ``position``'s type and/or one of its fields by hand, re-validate, record who did it."""
    role = next((r for r in (Role.specialist, Role.desk) if r in actor.roles), None)
    if role is None:
        raise Forbidden(f"{actor.username} may not correct documents",
                        "Chỉ cán bộ tiếp nhận hoặc chuyên viên được sửa thông tin giấy tờ.")
    record = services.registry.get(code)
    if record.state not in CORRECTABLE:
        raise InvalidState(f"dossier {code} is {record.state}: documents can no longer be corrected",
                           f"Hồ sơ {code} đang ở trạng thái không cho phép sửa thông tin giấy tờ.")
    if not record.receipt_json:
        raise InvalidState(f"dossier {code} has no receipt to correct")
    receipt = Receipt.model_validate(record.receipt_json)
    if not 0 <= position < len(receipt.documents):
        raise InvalidRequest(f"no document at position {position}", "Không có giấy tờ này trong hồ sơ.")
    catalog = services.catalog
    before = receipt.documents[position]
    after = before.model_copy(deep=True)
    if doc_type:
        if doc_type not in catalog.doc_types and doc_type != "unknown":
            raise InvalidRequest(f"unknown document type {doc_type!r}", "Loại giấy tờ không có trong danh mục.")
        after.type = doc_type
        after.confidence = 1.0
    if field_name:
        field_name = field_name.strip()
        text = (value or "").strip()
        if not field_name.replace("_", "").isalnum() or len(field_name) > 64 or len(text) > MAX_FIELD:
            raise InvalidRequest("malformed field correction", "Tên hoặc giá trị trường không hợp lệ.")
        if text:
            after.fields[field_name] = text
            after.field_confidence[field_name] = 1.0
        else:
            after.fields.pop(field_name, None)
            after.field_confidence.pop(field_name, None)
    if after == before:
        raise InvalidRequest("the correction changes nothing", "Không có thay đổi nào để lưu.")
    documents: list[DocumentInfo] = [*receipt.documents]
    documents[position] = after
    procedure = catalog.procedure(record.procedure)
    validation = validate(procedure, documents, catalog)
    updated = receipt.model_copy(update={
        "documents": documents, "missing": validation.missing, "unexpected": validation.unexpected,
        "inconsistencies": validation.inconsistencies, "reasons_vi": validation.reasons_vi,
    })
    detail = {
        "position": position,
        "before": before.model_dump(mode="json", include={"type", "fields"}),
        "after": after.model_dump(mode="json", include={"type", "fields"}),
        "validation": {"status": validation.status, "missing": validation.missing,
                       "unexpected": validation.unexpected},
    }
    return services.registry.correct_documents(
        code, updated.model_dump(mode="json"), documents,
        actor=actor.username, role=role, note=(note or "").strip() or "Sửa thông tin giấy tờ", detail=detail,
        allowed_from=set(CORRECTABLE),
    )
