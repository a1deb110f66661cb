"""The one-stop forms (TT 03/2025/TT-VPCP Mẫu 01–06) as signed PDF/A-2b documents.

Each form is a typed input model (:class:`ReceiptForm`, :class:`SupplementForm`, :class:`RefusalForm`,
:class:`ApologyForm`, :class:`StopNoticeForm`, :class:`ControlSlipForm`) rendered with reportlab into
PDF bytes (:func:`render_form`) and signed with PAdES (:func:`sign_form`): the desk officer signs
01–03 and 06, the agency's leader 04–05 (the role is data, ``signer`` in ``pipeline/data/forms.yaml``).
Labels, titles and sizes come from that file; the official annex text was not found
(shared/catalog/forms.md), so every form says in its footer that it is a template rebuilt from public
templates.

Layout: the QR code in the top-left corner (TT 01/2023), the agency and the receiving unit beside it,
the national motto and the place-and-date line on the right, the title, the dossier code, the body and
the signature block, whose box is where the visible signature stamp goes.

The QR code carries what domain.md §1.3 asks (dossier code, procedure code, the applicant's ID code,
the document's name, the issuing system, the issue time; an appointment also its date) as a lookup URL
under ``HOSO_PUBLIC_URL`` (:class:`LookupLink`). Only the citizen's copy carries the lookup secret
(``s=``); the stored copy never contains it.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, StringConstraints, TypeAdapter, ValidationError, model_validator
from pyhanko.sign.fields import MDPPerm
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY
from reportlab.lib.pagesizes import A4, A5
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from pipeline.core.errors import ConfigurationError, InvalidState
from pipeline.core.models import Receipt
from pipeline.core.text import squash
from pipeline.domain.catalog import Catalog
from pipeline.domain.printing import (
    BOLD,
    ITALIC,
    REGULAR,
    PageLayout,
    SignatureBox,
    SignatureSlot,
    as_pdfa_2b,
    clock_vi,
    date_vi,
    draw_qr,
    local_time,
    markup,
    register_fonts,
)
from signing.levels import Level
from signing.pki import ROLE_TITLES
from signing.signers import KeySource, sign_pdf
from storage import keys
from storage.objects import validate_key

__all__ = [
    "AnyForm",
    "ApologyForm",
    "Applicant",
    "ControlSlipForm",
    "FormBook",
    "FormBase",
    "FormCopy",
    "FormKind",
    "LookupLink",
    "ProcessingStep",
    "ReceiptForm",
    "ReceivedDocument",
    "RefusalForm",
    "RenderedForm",
    "StopNoticeForm",
    "SupplementForm",
    "desk_form",
    "document_slug",
    "form_object_key",
    "load_forms",
    "load_forms_file",
    "lookup_link",
    "receipt_form",
    "refusal_form",
    "render_form",
    "sign_form",
    "supplement_form",
]

FormKind = Literal["receipt", "supplement", "refusal", "apology", "stop", "control"]
FORM_KINDS: tuple[FormKind, ...] = get_args(FormKind)
#: stored: the agency's copy (no lookup secret); citizen: the copy handed to the applicant (with it).
FormCopy = Literal["stored", "citizen"]
SignerRole = Literal["officer", "approver"]
StepOutcome = Literal["early", "on_time", "late"]

# ---------------------------------------------------------------------------------------------------
# Labels and layout (pipeline/data/forms.yaml)


class FormLayout(PageLayout):
    """Sizes in points for one paper size."""

    qr_size: float = Field(ge=40)


class FormSpec(BaseModel):
    number: str = Field(pattern=r"^\d{2}$")
    title: str = Field(min_length=1)
    document_name: str = Field(min_length=1)
    slug: str = Field(pattern=r"^[a-z0-9-]+$")
    page: Literal["A4", "A5"]
    signer: SignerRole
    number_line: str | None = None
    unit_line: bool = True
    copies: list[FormCopy] = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    recipients: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class FormCommon(BaseModel):
    unit: str
    unit_sentence: str
    motto: list[str] = Field(min_length=2, max_length=2)
    issuing_system: str = Field(min_length=1)
    footer: str
    blank: str
    dossier_code: str
    procedure_code: str
    qr_secret: str
    page: str
    sign_hint: str


# The labels each renderer reads; checked when the file is loaded, not when a clerk prints.
_LABELS: dict[FormKind, set[str]] = {
    "receipt": {
        "copy_stored", "copy_citizen", "unit", "applicant", "applicant_id", "address", "phone", "email",
        "procedure", "documents", "col_no", "col_name", "col_form", "col_pages", "form_scan",
        "form_reused", "no_documents", "sets", "sets_unit", "processing", "processing_same_day",
        "processing_days", "received", "due", "delivery", "fee", "book", "book_entry", "sign_left", "sign_right",
        "notes",
    },
    "supplement": {
        "unit", "applicant", "procedure", "address", "phone", "email", "request", "missing",
        "alternatives", "inconsistent", "reasons", "closing", "closing_phone", "sign_right",
    },
    "refusal": {
        "unit", "applicant", "address", "phone", "email", "procedure", "body", "closing",
        "sign_right",
    },
    "apology": {
        "to", "address", "phone", "received", "code", "due", "late", "reason", "apology", "new_due", "closing",
        "recipients", "sign_title",
    },
    "stop": {"to", "address", "phone", "received", "body", "reason", "closing", "recipients", "sign_title"},
    "control": {
        "applicant", "procedure", "received", "due", "handling", "cooperating", "col_no",
        "col_unit", "col_time", "col_outcome", "col_note", "outcome_early", "outcome_on_time", "outcome_late",
    },
}


class FormBook(BaseModel):
    """Every form's labels and layout, validated."""

    common: FormCommon
    layout: dict[Literal["A4", "A5"], FormLayout]
    forms: dict[FormKind, FormSpec]

    @model_validator(mode="after")
    def _complete(self) -> FormBook:
        problems = [f"form {kind!r} missing" for kind in FORM_KINDS if kind not in self.forms]
        for kind, spec in self.forms.items():
            if spec.page not in self.layout:
                problems.append(f"form {kind}: no layout for {spec.page}")
            if missing := sorted(_LABELS[kind] - set(spec.labels)):
                problems.append(f"form {kind}: labels missing: {', '.join(missing)}")
            if "stored" not in spec.copies:
                problems.append(f"form {kind}: every form has a stored copy")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _build_book(raw: Any, source: str) -> FormBook:
    try:
        return FormBook.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(
            f"Invalid forms file {source}: {exc}", "Tệp biểu mẫu không hợp lệ; liên hệ quản trị hệ thống."
        ) from exc


def load_forms_file(path: Path) -> FormBook:
    """Load and validate a forms YAML file (tests and site-specific wording)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Cannot read forms file {path}: {exc}", "Không đọc được tệp biểu mẫu.") from exc
    return _build_book(raw, str(path))


@lru_cache(maxsize=1)
def load_forms() -> FormBook:
    """The bundled forms (package data), loaded and validated once per process."""
    text = resources.files("pipeline").joinpath("data/forms.yaml").read_text(encoding="utf-8")
    return _build_book(yaml.safe_load(text), "pipeline/data/forms.yaml")


# ---------------------------------------------------------------------------------------------------
# Input models

# Bounded so that every value fits its place on the page (a table row cannot run over two pages).
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Applicant(BaseModel):
    """Who the form is about; what is not known prints as a blank to fill in by hand."""

    name: Short | None = None
    id_number: Short | None = Field(None, description="Số định danh cá nhân (12 digits for a CCCD)")
    address: Short | None = None
    phone: Short | None = None
    email: Short | None = None


class FormBase(BaseModel):
    """What every form carries; ``kind`` tells the forms apart (and is kept in their JSON)."""

    kind: FormKind
    dossier_code: str = Field(min_length=1, max_length=64)
    procedure_label: Short
    procedure_code: Short | None = None
    applicant: Applicant = Field(default_factory=Applicant)
    agency_name: Short = Field(description="The agency (cơ quan) the centre belongs to")
    place: Short | None = Field(None, description="Địa danh of the date line, e.g. 'Hà Nội'")
    issued_at: dt.datetime
    signer_name: Short | None = Field(None, description="Printed under the signature block")
    # Never serialised (a masked secret read back would print a wrong one); 32 characters at most keep
    # the QR code scannable from an A5 print.
    lookup_secret: SecretStr | None = Field(
        None, min_length=8, max_length=32, exclude=True, description="On the citizen's copy only"
    )

    def appointment(self) -> dt.datetime | None:
        """The appointment the form gives (its QR carries it), if any."""
        return None


class ReceivedDocument(BaseModel):
    label: Short
    pages: int = Field(0, ge=0, description="Pages scanned; 0 for a reused document")
    reused: bool = Field(False, description="Taken from the citizen's electronic data store")


class ReceiptForm(FormBase):
    """Mẫu 01 — Giấy tiếp nhận hồ sơ và hẹn trả kết quả."""

    kind: Literal["receipt"] = "receipt"
    documents: list[ReceivedDocument] = Field(default_factory=list)
    sets: int = Field(1, ge=1)
    processing_days: int = Field(ge=0)
    received_at: dt.datetime
    due_at: dt.datetime
    delivery: Short | None = Field(None, description="Where the result is collected; default the receiving unit")
    fee_line: Text = Field(description="Procedure.fee_line_vi(): never a guessed amount")
    book_volume: Short | None = None
    book_entry: Short | None = None

    @model_validator(mode="after")
    def _due_after_received(self) -> ReceiptForm:
        if self.due_at < self.received_at:
            raise ValueError("due_at is before received_at")
        return self

    def appointment(self) -> dt.datetime | None:
        return self.due_at


class SupplementForm(FormBase):
    """Mẫu 02 — Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ: exactly what the desk found."""

    kind: Literal["supplement"] = "supplement"
    missing: list[list[Short]] = Field(default_factory=list, description="Per unfilled slot, its alternatives")
    inconsistencies: list[Text] = Field(default_factory=list)
    reasons: list[Text] = Field(default_factory=list)
    contact_phone: Short | None = None

    @model_validator(mode="after")
    def _asks_something(self) -> SupplementForm:
        if not (self.missing or self.inconsistencies or self.reasons):
            raise ValueError("a request to supplement must name at least one missing item or reason")
        if any(not slot for slot in self.missing):
            raise ValueError("a missing slot has no alternatives")
        return self


class RefusalForm(FormBase):
    """Mẫu 03 — Phiếu từ chối tiếp nhận, giải quyết hồ sơ."""

    kind: Literal["refusal"] = "refusal"
    reasons: list[Text] = Field(min_length=1)


class ApologyForm(FormBase):
    """Mẫu 04 — Văn bản xin lỗi và đề nghị gia hạn thời gian giải quyết (a new appointment)."""

    kind: Literal["apology"] = "apology"
    received_at: dt.datetime
    due_at: dt.datetime
    new_due_at: dt.datetime
    reason: Text
    signer_title: Short | None = Field(None, description="e.g. 'GIÁM ĐỐC', two lines for 'KT. …'; default forms.yaml")

    @model_validator(mode="after")
    def _later(self) -> ApologyForm:
        if self.new_due_at <= self.due_at:
            raise ValueError("new_due_at must be after due_at")
        return self

    def appointment(self) -> dt.datetime | None:
        return self.new_due_at


class StopNoticeForm(FormBase):
    """Mẫu 05 — Thông báo dừng giải quyết hồ sơ."""

    kind: Literal["stop"] = "stop"
    received_at: dt.datetime
    reason: Text
    signer_title: Short | None = None


class ProcessingStep(BaseModel):
    """One hand-off or step of the dossier: who, in which role and unit, when, with what outcome."""

    action: Short = Field(description="e.g. 'Tiếp nhận', 'Giao', 'Nhận', 'Thẩm định', 'Trả kết quả'")
    unit: Short
    actor: Short
    role: Short
    at: dt.datetime
    outcome: StepOutcome | None = Field(None, description="early / on_time / late against the step's deadline")
    note: Short | None = None


class ControlSlipForm(FormBase):
    """Mẫu 06 — Phiếu kiểm soát quá trình giải quyết hồ sơ (kept with the dossier; no citizen's copy)."""

    kind: Literal["control"] = "control"
    received_at: dt.datetime
    due_at: dt.datetime
    handling_unit: Short | None = None
    cooperating_units: list[Short] = Field(default_factory=list)
    steps: list[ProcessingStep] = Field(min_length=1)

    def appointment(self) -> dt.datetime | None:
        return self.due_at


AnyForm = Annotated[
    ReceiptForm | SupplementForm | RefusalForm | ApologyForm | StopNoticeForm | ControlSlipForm,
    Field(discriminator="kind"),
]
#: Reads a form back from its JSON (``kind`` names the form), e.g. ``FORM_ADAPTER.validate_json(data)``.
FORM_ADAPTER: TypeAdapter[AnyForm] = TypeAdapter(AnyForm)

# ---------------------------------------------------------------------------------------------------
# The QR code's lookup link (domain.md §1.3)

# Short parameter names keep the QR code small enough (version ≤ 10) to scan from an A5 print.
_P_SECRET, _P_PROCEDURE, _P_APPLICANT, _P_DOCUMENT = "s", "tthc", "dd", "vb"
_P_SYSTEM, _P_ISSUED, _P_APPOINTMENT = "ht", "tg", "hen"
_TIME = "%Y%m%dT%H%MZ"  # ISO 8601 basic, UTC, to the minute
LOOKUP_PATH = "/tra-cuu/"


def document_slug(name: str) -> str:
    """A document's name as the QR code carries it: ``giay-tiep-nhan-ho-so-va-hen-tra-ket-qua``."""
    return squash(name).replace(" ", "-")


class LookupLink(BaseModel):
    """What a printed form's QR code says (domain.md §1.3), and the URL it says it as::

        <public>/tra-cuu/<dossier code>?s=<secret>&tthc=<procedure code>&dd=<applicant ID>
            &vb=<document name slug>&ht=<issuing system>&tg=<issue time>&hen=<appointment>

    ``s`` only on the citizen's copy; ``tthc``, ``dd`` and ``hen`` only when known; times in UTC.
    """

    dossier_code: str = Field(min_length=1)
    procedure_code: str | None = None
    applicant_id: str | None = None
    document: str = Field(min_length=1, description="The document's name as a slug (document_slug)")
    issuing_system: str = Field(min_length=1)
    issued_at: dt.datetime
    appointment_at: dt.datetime | None = None
    secret: SecretStr | None = None

    def url(self, public_url: str) -> str:
        params: list[tuple[str, str]] = []
        if self.secret is not None:
            params.append((_P_SECRET, self.secret.get_secret_value()))
        if self.procedure_code:
            params.append((_P_PROCEDURE, self.procedure_code))
        if self.applicant_id:
            params.append((_P_APPLICANT, self.applicant_id))
        params += [
            (_P_DOCUMENT, self.document),
            (_P_SYSTEM, self.issuing_system),
            (_P_ISSUED, _utc_minutes(self.issued_at)),
        ]
        if self.appointment_at is not None:
            params.append((_P_APPOINTMENT, _utc_minutes(self.appointment_at)))
        return f"{public_url.rstrip('/')}{LOOKUP_PATH}{quote(self.dossier_code, safe='')}?{urlencode(params)}"

    @classmethod
    def parse(cls, url: str, public_url: str) -> LookupLink:
        """Read a lookup URL back; ``ValueError`` if it is not one under ``public_url`` or lacks a field."""
        base = public_url.rstrip("/") + LOOKUP_PATH
        if not url.startswith(base):
            raise ValueError(f"not a lookup link under {public_url}: {url[:80]!r}")
        parts = urlsplit(url)
        code = unquote(parts.path.rsplit("/", 1)[-1])
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            return cls.model_validate({
                "dossier_code": code,
                "procedure_code": query.get(_P_PROCEDURE),
                "applicant_id": query.get(_P_APPLICANT),
                "document": query.get(_P_DOCUMENT, ""),
                "issuing_system": query.get(_P_SYSTEM, ""),
                "issued_at": _parse_utc(query.get(_P_ISSUED, "")),
                "appointment_at": _parse_utc(query[_P_APPOINTMENT]) if _P_APPOINTMENT in query else None,
                "secret": query.get(_P_SECRET),
            })
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"incomplete lookup link: {exc}") from exc


def _utc_minutes(ts: dt.datetime) -> str:
    return local_time(ts).astimezone(dt.UTC).strftime(_TIME)


def _parse_utc(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, _TIME).replace(tzinfo=dt.UTC)


def lookup_link(form: FormBase, copy: FormCopy, book: FormBook | None = None) -> LookupLink:
    """The QR fields of ``form``: the citizen's copy carries the lookup secret, the stored copy never."""
    book = book or load_forms()
    spec = book.forms[form.kind]
    _check_copy(form, spec, copy)
    return LookupLink(
        dossier_code=form.dossier_code,
        procedure_code=form.procedure_code,
        applicant_id=form.applicant.id_number,
        document=document_slug(spec.document_name),
        issuing_system=book.common.issuing_system,
        issued_at=form.issued_at,
        appointment_at=form.appointment(),
        secret=form.lookup_secret if copy == "citizen" else None,
    )


def _check_copy(form: FormBase, spec: FormSpec, copy: FormCopy) -> None:
    if copy not in spec.copies:
        raise ValueError(f"Mẫu {spec.number} has no {copy} copy (copies: {', '.join(spec.copies)})")
    if copy == "citizen" and form.lookup_secret is None:
        raise ValueError(f"the citizen's copy of Mẫu {spec.number} needs the lookup secret")


# ---------------------------------------------------------------------------------------------------
# Forms from the desk's receipt


def _applicant_from(receipt: Receipt) -> Applicant:
    """The applicant's name read from the dossier: the document with the applicant's ID, else a CCCD."""
    docs = receipt.documents
    owner = next((d for d in docs if receipt.applicant_id and d.fields.get("id_number") == receipt.applicant_id), None)
    owner = owner or next((d for d in docs if d.type == "cccd" and d.fields.get("full_name")), None)
    name = owner.fields.get("full_name") if owner else None
    return Applicant(name=name, id_number=receipt.applicant_id)


def _common(
    receipt: Receipt, catalog: Catalog, applicant: Applicant | None, issued_at: dt.datetime | None,
    **kwargs: Any,
) -> dict[str, Any]:
    procedure = catalog.procedure(receipt.procedure)
    return {
        "dossier_code": receipt.dossier_code,
        "procedure_label": procedure.label,
        "procedure_code": procedure.national_code,
        "applicant": applicant or _applicant_from(receipt),
        "issued_at": issued_at or receipt.received_at,
        **kwargs,
    }


def receipt_form(
    receipt: Receipt,
    catalog: Catalog,
    *,
    agency_name: str,
    lookup_secret: str | None = None,
    applicant: Applicant | None = None,
    issued_at: dt.datetime | None = None,
    place: str | None = None,
    signer_name: str | None = None,
) -> ReceiptForm:
    """Mẫu 01 for an accepted dossier: the documents received, the due date and the procedure's fee line."""
    if receipt.status != "accepted":
        raise InvalidState(
            f"dossier {receipt.dossier_code} is {receipt.status}: a receipt is only for an accepted dossier",
            f"Hồ sơ {receipt.dossier_code} chưa được tiếp nhận nên không lập giấy tiếp nhận và hẹn trả kết quả.",
        )
    procedure = catalog.procedure(receipt.procedure)
    documents = [
        ReceivedDocument(label=catalog.label(d.type), pages=len(d.pages), reused=d.source == "reused")
        for d in receipt.documents
    ]
    return ReceiptForm(
        **_common(receipt, catalog, applicant, issued_at, agency_name=agency_name, place=place,
                  signer_name=signer_name, lookup_secret=lookup_secret),
        documents=documents,
        processing_days=procedure.processing_days,
        received_at=receipt.received_at,
        due_at=receipt.due_at,
        fee_line=procedure.fee_line_vi(),
    )


def supplement_form(
    receipt: Receipt,
    catalog: Catalog,
    *,
    agency_name: str,
    lookup_secret: str | None = None,
    applicant: Applicant | None = None,
    issued_at: dt.datetime | None = None,
    place: str | None = None,
    signer_name: str | None = None,
    contact_phone: str | None = None,
) -> SupplementForm:
    """Mẫu 02 listing exactly what the desk found: missing slots (catalog labels), inconsistencies, reasons."""
    if receipt.status != "needs_supplement":
        raise InvalidState(
            f"dossier {receipt.dossier_code} is {receipt.status}: nothing to supplement",
            f"Hồ sơ {receipt.dossier_code} không thuộc trường hợp yêu cầu bổ sung, hoàn thiện.",
        )
    return SupplementForm(
        **_common(receipt, catalog, applicant, issued_at, agency_name=agency_name, place=place,
                  signer_name=signer_name, lookup_secret=lookup_secret),
        missing=[[catalog.label(t) for t in slot] for slot in receipt.missing],
        inconsistencies=list(receipt.inconsistencies),
        reasons=list(receipt.reasons_vi),
        contact_phone=contact_phone,
    )


def refusal_form(
    receipt: Receipt,
    catalog: Catalog,
    *,
    agency_name: str,
    lookup_secret: str | None = None,
    applicant: Applicant | None = None,
    issued_at: dt.datetime | None = None,
    place: str | None = None,
    signer_name: str | None = None,
) -> RefusalForm:
    """Mẫu 03 for a refused dossier, with the desk's reasons."""
    if receipt.status != "rejected":
        raise InvalidState(
            f"dossier {receipt.dossier_code} is {receipt.status}: it was not refused",
            f"Hồ sơ {receipt.dossier_code} không bị từ chối tiếp nhận.",
        )
    return RefusalForm(
        **_common(receipt, catalog, applicant, issued_at, agency_name=agency_name, place=place,
                  signer_name=signer_name, lookup_secret=lookup_secret),
        reasons=list(receipt.reasons_vi) or ["Hồ sơ không đủ điều kiện tiếp nhận."],
    )


def desk_form(
    receipt: Receipt, catalog: Catalog, **kwargs: Any
) -> ReceiptForm | SupplementForm | RefusalForm:
    """The form the desk hands over for ``receipt``: Mẫu 01, 02 or 03 by its status (keyword arguments
    as for :func:`receipt_form`; ``contact_phone`` is used by Mẫu 02 only)."""
    phone = kwargs.pop("contact_phone", None)
    if receipt.status == "accepted":
        return receipt_form(receipt, catalog, **kwargs)
    if receipt.status == "needs_supplement":
        return supplement_form(receipt, catalog, contact_phone=phone, **kwargs)
    return refusal_form(receipt, catalog, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Storage


def form_object_key(dossier_code: str, kind: FormKind, n: int = 1, book: FormBook | None = None) -> str:
    """Where the stored copy of a dossier's ``n``-th form of ``kind`` lives, e.g.
    ``dossiers/<code>/forms/01-tiep-nhan-1.pdf``. The citizen's copy (with the secret) is never stored.
    """
    spec = (book or load_forms()).forms[kind]
    return validate_key(keys.form_key(dossier_code, spec.number, spec.slug, n))


# ---------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class RenderedForm:
    pdf: bytes
    url: str
    signature: SignatureSlot | None  # None: the form has no signature block (Mẫu 06); sign invisibly
    pages: int


class _Styles:
    def __init__(self, layout: FormLayout) -> None:
        body, small = layout.body_size, layout.small_size
        self.body = ParagraphStyle("body", fontName=REGULAR, fontSize=body, leading=body * 1.3, spaceAfter=1.2)
        self.justify = ParagraphStyle("justify", parent=self.body, alignment=TA_JUSTIFY)
        self.item = ParagraphStyle("item", parent=self.body, leftIndent=12, firstLineIndent=-9)
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=small, leading=small * 1.28, spaceAfter=0)
        self.cell_head = ParagraphStyle("cell_head", parent=self.cell, fontName=BOLD, alignment=TA_CENTER)
        self.cell_center = ParagraphStyle("cell_center", parent=self.cell, alignment=TA_CENTER)
        self.title = ParagraphStyle(
            "title", fontName=BOLD, fontSize=layout.title_size, leading=layout.title_size * 1.3, alignment=TA_CENTER,
        )
        self.center = ParagraphStyle("center", parent=self.body, alignment=TA_CENTER)
        self.center_bold = ParagraphStyle("center_bold", parent=self.center, fontName=BOLD)
        self.center_italic = ParagraphStyle("center_italic", parent=self.center, fontName=ITALIC)
        self.small = ParagraphStyle("small", parent=self.body, fontSize=small, leading=small * 1.3)
        self.small_item = ParagraphStyle("small_item", parent=self.small, leftIndent=8, firstLineIndent=-8)


class _Header(Flowable):
    """QR code top-left; agency, unit and number line beside it; motto, rule and date line on the right."""

    def __init__(
        self, form: FormBase, spec: FormSpec, book: FormBook, layout: FormLayout, url: str, secret: str | None
    ) -> None:
        super().__init__()
        self.form, self.spec, self.common, self.layout = form, spec, book.common, layout
        self.url, self.secret = url, secret

    def _columns(self, width: float) -> tuple[float, float, float]:
        qr = self.layout.qr_size + 6
        left = (width - qr) * 0.42
        return qr, left, width - qr - left

    def _left_lines(self, width: float) -> list[tuple[str, str]]:
        size = self.layout.header_size
        lines = [(REGULAR, line) for line in simpleSplit(self.form.agency_name.upper(), REGULAR, size, width)]
        if self.spec.unit_line:
            lines += [(BOLD, line) for line in simpleSplit(self.common.unit, BOLD, size, width)]
        elif lines:  # the agency itself issues the document: its name in bold
            lines = [(BOLD, text) for _, text in lines]
        return lines

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width = availWidth
        size = self.layout.header_size
        _, left, _ = self._columns(availWidth)
        self.left_h = len(self._left_lines(left)) * size * 1.3 + 6 + (size * 1.6 if self.spec.number_line else 0)
        right_h = size * 1.3 * 2 + 6 + size * 1.5
        # The secret's line runs on under the agency block, so it goes below whichever is lower.
        qr_h = max(self.layout.qr_size, self.left_h) + size * 1.25 if self.secret else self.layout.qr_size
        self.height = max(qr_h, self.left_h, right_h) + 4
        return self.width, self.height

    def draw(self) -> None:
        c, size, common = self.canv, self.layout.header_size, self.common
        qr_w, left_w, right_w = self._columns(self.width)
        top = self.height
        q = self.layout.qr_size
        c.saveState()
        # QR code flush with the top-left corner of the text area; its quiet zone is part of the square.
        draw_qr(c, self.url, 0, top - q, q)
        if self.secret:  # for typing in by hand
            line = f"{common.qr_secret}: {self.secret}"
            fit = min(size * 0.85, size * 0.85 * (qr_w + left_w) / pdfmetrics.stringWidth(line, REGULAR, size * 0.85))
            c.setFont(REGULAR, fit)
            c.drawString(0, top - max(q, self.left_h) - size * 0.9, line)
        # Left block: agency, unit, a short rule, the number line.
        mid = qr_w + left_w / 2
        y = top
        for font, line in self._left_lines(left_w):
            c.setFont(font, size)
            c.drawCentredString(mid, y - size, line)
            y -= size * 1.3
        c.setLineWidth(0.6)
        c.line(mid - left_w * 0.18, y - 2.5, mid + left_w * 0.18, y - 2.5)
        y -= 6
        if self.spec.number_line:
            c.setFont(REGULAR, size)
            c.drawCentredString(mid, y - size * 1.1, self.spec.number_line)
        # Right block: the motto (each line shrunk to fit if needed), its rule, the date line.
        mid = qr_w + left_w + right_w / 2
        y = top
        half = 0.0
        for i, line in enumerate(common.motto):
            want = size if i == 0 else size * 1.08
            fit = min(want, want * (right_w - 2) / pdfmetrics.stringWidth(line, BOLD, want))
            c.setFont(BOLD, fit)
            c.drawCentredString(mid, y - size, line)
            half = pdfmetrics.stringWidth(line, BOLD, fit) / 2  # the rule spans the last line
            y -= size * 1.3
        c.line(mid - half, y - 2.5, mid + half, y - 2.5)
        y -= 6
        c.setFont(ITALIC, size)
        c.drawCentredString(mid, y - size * 1.2, _date_line(self.form))
        c.restoreState()


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _date_line(form: FormBase) -> str:
    line = date_vi(form.issued_at)
    return f"{form.place}, {line}" if form.place else _capital(line)


class _Builder:
    """Turns one form into flowables, with its labels and styles at hand."""

    def __init__(self, form: FormBase, book: FormBook, copy: FormCopy) -> None:
        self.form, self.book, self.copy = form, book, copy
        self.spec = book.forms[form.kind]
        self.layout = book.layout[self.spec.page]
        self.labels = self.spec.labels
        self.st = _Styles(self.layout)
        self.slots: list[SignatureSlot] = []
        page_w, _ = _PAGES[self.spec.page]
        self.width = page_w - 2 * self.layout.margin_x

    # Building blocks

    def value(self, value: str | None) -> str:
        return f"<b>{markup(value)}</b>" if value else markup(self.book.common.blank)

    def line(
        self, label: str, value: str | None, *, plain: bool = False, style: ParagraphStyle | None = None
    ) -> Paragraph:
        """``Label: value`` (the value bold unless ``plain``; a blank to fill in when unknown)."""
        shown = markup(value) if plain and value else self.value(value)
        return Paragraph(f"{markup(label)}: {shown}", style or self.st.body)

    def para(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        return Paragraph(markup(text), style or self.st.justify)

    def procedure(self) -> str:
        f = self.form
        if f.procedure_code:
            return f"{f.procedure_label} ({self.book.common.procedure_code}: {f.procedure_code})"
        return f.procedure_label

    def contact(self) -> list[Flowable]:
        a, lab = self.form.applicant, self.labels
        phone = f"{markup(lab['phone'])}: {self.value(a.phone)}"
        email = f"{markup(lab['email'])}: {self.value(a.email)}" if "email" in lab else ""
        return [
            self.line(lab["address"], a.address, plain=True),
            Paragraph(f"{phone}{'&nbsp;&nbsp;&nbsp; ' + email if email else ''}", self.st.body),
        ]

    def heading(self) -> list[Flowable]:
        out: list[Flowable] = [
            Spacer(1, 5),
            Paragraph(markup(self.spec.title), self.st.title),
            Spacer(1, 2),
            Paragraph(f"{markup(self.book.common.dossier_code)}: <b>{markup(self.form.dossier_code)}</b>",
                      self.st.center),
        ]
        copy_label = self.labels.get(f"copy_{self.copy}")
        if copy_label:
            out.append(Paragraph(markup(copy_label), self.st.center_italic))
        out.append(Spacer(1, 6))
        return out

    def signatures(self, left: list[Flowable] | None, title: str, hint: str | None, name: str | None) -> Flowable:
        """Two columns: ``left`` (or nothing) and the signer's title, hint, stamp box and name on the right."""
        col = self.width / 2
        # A title may take two lines, e.g. "KT. CHỦ TỊCH" over "PHÓ CHỦ TỊCH".
        right: list[Flowable] = [Paragraph("<br/>".join(map(markup, title.splitlines())), self.st.center_bold)]
        if hint:
            right.append(Paragraph(markup(hint), self.st.center_italic))
        right.append(SignatureBox(min(col - 8, 185), self.layout.signature_height, self.slots))
        if name:
            right.append(Paragraph(f"<b>{markup(name)}</b>", self.st.center))
        table = Table([[left or [Spacer(1, 1)], right]], colWidths=[col, col])
        table.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, -1), REGULAR),  # else the table sets an unembedded Helvetica (not PDF/A)
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("ALIGN", (1, 0), (1, 0), "CENTER"),
            ("LEFTPADDING", (0, 0), (-1, -1), 2),
            ("RIGHTPADDING", (0, 0), (-1, -1), 2),
        ]))
        return KeepTogether([Spacer(1, 6), table])

    def hand_signature(self, title: str, name: str | None) -> list[Flowable]:
        """A column for a signature by hand (the applicant's), the same height as the stamp column."""
        out: list[Flowable] = [
            Paragraph(markup(title), self.st.center_bold),
            Paragraph(markup(self.book.common.sign_hint), self.st.center_italic),
            Spacer(1, self.layout.signature_height),
        ]
        if name:
            out.append(Paragraph(f"<b>{markup(name)}</b>", self.st.center))
        return out

    def grid(self, rows: list[list[Any]], widths: list[float]) -> Table:
        scale = self.width / sum(widths)
        table = Table(rows, colWidths=[w * scale for w in widths], repeatRows=1)
        table.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, -1), REGULAR),
            ("GRID", (0, 0), (-1, -1), 0.45, colors.black),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ]))
        return table

    # The forms

    def receipt(self, f: ReceiptForm) -> list[Flowable]:
        lab, st, common = self.labels, self.st, self.book.common
        out: list[Flowable] = [
            self.line(lab["unit"], self.form.agency_name),
            self.line(lab["applicant"], f.applicant.name),
            self.line(lab["applicant_id"], f.applicant.id_number),
            *self.contact(),
            self.line(lab["procedure"], self.procedure()),
            Paragraph(markup(lab["documents"]), st.body),
        ]
        if f.documents:
            rows: list[list[Any]] = [[Paragraph(markup(lab[k]), st.cell_head)
                                      for k in ("col_no", "col_name", "col_form", "col_pages")]]
            for i, doc in enumerate(f.documents, 1):
                rows.append([
                    Paragraph(str(i), st.cell_center),
                    Paragraph(markup(doc.label), st.cell),
                    Paragraph(markup(lab["form_reused"] if doc.reused else lab["form_scan"]), st.cell),
                    Paragraph(str(doc.pages) if doc.pages else "—", st.cell_center),
                ])
            out += [self.grid(rows, [8, 52, 28, 12]), Spacer(1, 3)]
        else:
            out.append(self.para(lab["no_documents"], st.item))
        days = (lab["processing_same_day"] if f.processing_days == 0
                else lab["processing_days"].format(n=f"{f.processing_days:02d}"))
        out += [
            Paragraph(f"{markup(lab['sets'])}: <b>{f.sets:02d}</b> {markup(lab['sets_unit'])}", st.body),
            self.line(lab["processing"], days),
            self.line(lab["received"], clock_vi(f.received_at)),
            self.line(lab["due"], clock_vi(f.due_at)),
            self.line(lab["delivery"], f.delivery or common.unit_sentence),
            Paragraph(f"{markup(lab['fee'])} {markup(f.fee_line)}", st.justify),
            Paragraph(f"{markup(lab['book'])}: {self.value(f.book_volume)} "
                      f"{markup(lab['book_entry'])}: {self.value(f.book_entry)}", st.body),
            self.signatures(self.hand_signature(lab["sign_left"], f.applicant.name), lab["sign_right"],
                            common.sign_hint, self.form.signer_name),
        ]
        if self.spec.notes:
            notes: list[Flowable] = [Spacer(1, 3), Paragraph(f"<b><i>{markup(lab['notes'])}</i></b>", st.small)]
            notes += [Paragraph("- " + markup(note), st.small_item) for note in self.spec.notes]
            out.append(KeepTogether(notes))
        return out

    def supplement(self, f: SupplementForm) -> list[Flowable]:
        lab, st = self.labels, self.st
        out: list[Flowable] = [
            self.line(lab["unit"], self.form.agency_name),
            self.line(lab["applicant"], f.applicant.name),
            self.line(lab["procedure"], self.procedure()),
            *self.contact(),
            Paragraph(markup(lab["request"]), st.body),
        ]
        n = 0
        if f.missing:
            n += 1
            out.append(Paragraph(f"<b>{n}. {markup(lab['missing'])}</b>", st.body))
            out += [self.para(f"- {lab['alternatives'].join(slot)}", st.item) for slot in f.missing]
        if f.inconsistencies:
            n += 1
            out.append(Paragraph(f"<b>{n}. {markup(lab['inconsistent'])}</b>", st.body))
            out += [self.para(f"- {item}", st.item) for item in f.inconsistencies]
        # The reasons the desk gave, except those already listed word for word as items.
        reasons = [r for r in f.reasons if r not in f.inconsistencies]
        if reasons:
            out.append(Paragraph(f"<b>{markup(lab['reasons'])}</b>", st.body))
            out += [self.para(f"- {r}", st.item) for r in reasons]
        phone = lab["closing_phone"].format(phone=f.contact_phone) if f.contact_phone else ""
        out += [
            Spacer(1, 2),
            self.para(lab["closing"].format(unit=self.book.common.unit_sentence, phone=phone)),
            self.signatures(None, lab["sign_right"], self.book.common.sign_hint, self.form.signer_name),
        ]
        return out

    def refusal(self, f: RefusalForm) -> list[Flowable]:
        lab, st = self.labels, self.st
        return [
            self.line(lab["unit"], self.form.agency_name),
            self.line(lab["applicant"], f.applicant.name),
            *self.contact(),
            self.line(lab["procedure"], self.procedure()),
            Spacer(1, 2),
            self.para(lab["body"].format(unit=self.book.common.unit_sentence)),
            *[self.para(f"- {r}", st.item) for r in f.reasons],
            Spacer(1, 2),
            self.para(lab["closing"]),
            self.signatures(None, lab["sign_right"], self.book.common.sign_hint, self.form.signer_name),
        ]

    def addressee(self) -> list[Flowable]:
        a, lab = self.form.applicant, self.labels
        to = f"Ông/Bà {a.name}" if a.name else None
        return [
            Paragraph(f"{markup(lab['to'])}: {self.value(to)}", self.st.center),
            Spacer(1, 2),
            self.line(lab["address"], a.address, plain=True),
            self.line(lab["phone"], a.phone),
        ]

    def leader_signature(self, title: str | None) -> Flowable:
        st, lab = self.st, self.labels
        recipients: list[Flowable] = [Paragraph(f"<b><i>{markup(lab['recipients'])}</i></b>", st.small)]
        recipients += [Paragraph(markup(line), st.small) for line in self.spec.recipients]
        return self.signatures(recipients, (title or lab["sign_title"]).upper(), None, self.form.signer_name)

    def apology(self, f: ApologyForm) -> list[Flowable]:
        lab = self.labels
        return [
            *self.addressee(),
            self.para(lab["received"].format(received=_capital(date_vi(f.received_at)), agency=f.agency_name,
                                             procedure=self.procedure())),
            self.line(lab["code"], f.dossier_code),
            self.line(lab["due"], clock_vi(f.due_at)),
            self.para(lab["late"]),
            self.line(lab["reason"], f.reason, plain=True, style=self.st.justify),
            self.para(lab["apology"].format(agency=f.agency_name)),
            self.line(lab["new_due"], clock_vi(f.new_due_at)),
            self.para(lab["closing"]),
            self.leader_signature(f.signer_title),
        ]

    def stop(self, f: StopNoticeForm) -> list[Flowable]:
        lab = self.labels
        return [
            *self.addressee(),
            self.para(lab["received"].format(received=_capital(date_vi(f.received_at)), agency=f.agency_name,
                                             procedure=self.procedure())),
            self.para(lab["body"].format(agency=f.agency_name)),
            self.line(lab["reason"], f.reason, plain=True, style=self.st.justify),
            self.para(lab["closing"]),
            self.leader_signature(f.signer_title),
        ]

    def control(self, f: ControlSlipForm) -> list[Flowable]:
        lab, st = self.labels, self.st
        outcomes = {"early": lab["outcome_early"], "on_time": lab["outcome_on_time"], "late": lab["outcome_late"]}
        rows: list[list[Any]] = [[Paragraph(markup(lab[k]), st.cell_head)
                                  for k in ("col_no", "col_unit", "col_time", "col_outcome", "col_note")]]
        for i, step in enumerate(f.steps, 1):
            rows.append([
                Paragraph(str(i), st.cell_center),
                Paragraph(f"<b>{markup(step.action)}:</b> {markup(step.unit)}<br/>"
                          f"{markup(step.actor)} <i>({markup(step.role)})</i>", st.cell),
                Paragraph(markup(clock_vi(step.at)), st.cell),
                Paragraph(markup(outcomes[step.outcome]) if step.outcome else "", st.cell_center),
                Paragraph(markup(step.note or ""), st.cell),
            ])
        return [
            self.line(lab["applicant"], f.applicant.name),
            self.line(lab["procedure"], self.procedure()),
            self.line(lab["received"], clock_vi(f.received_at)),
            self.line(lab["due"], clock_vi(f.due_at)),
            self.line(lab["handling"], f.handling_unit or f.agency_name),
            self.line(lab["cooperating"], "; ".join(f.cooperating_units) or None),
            Spacer(1, 4),
            self.grid(rows, [6, 34, 23, 21, 16]),
        ]

    def body(self) -> list[Flowable]:
        build: dict[FormKind, Callable[[Any], list[Flowable]]] = {
            "receipt": self.receipt, "supplement": self.supplement, "refusal": self.refusal,
            "apology": self.apology, "stop": self.stop, "control": self.control,
        }
        return build[self.form.kind](self.form)


_PAGES = {"A4": A4, "A5": A5}


def _footer(book: FormBook, spec: FormSpec, layout: FormLayout) -> Callable[[Canvas, Any], None]:
    text = " ".join(book.common.footer.format(number=spec.number).split())

    def draw(c: Canvas, doc: Any) -> None:
        page_w, _ = _PAGES[spec.page]
        width = page_w - 2 * layout.margin_x
        size = layout.footer_size
        lines = simpleSplit(text, ITALIC, size, width - 40)
        c.saveState()
        c.setLineWidth(0.3)
        y = 10 + size * 1.25 * len(lines)
        c.line(layout.margin_x, y + 2, page_w - layout.margin_x, y + 2)
        c.setFont(ITALIC, size)
        for i, line in enumerate(lines):
            c.drawString(layout.margin_x, y - size * 1.25 * (i + 1) + 2, line)
        c.setFont(REGULAR, size)
        c.drawRightString(page_w - layout.margin_x, y - size * 1.25 + 2, f"{book.common.page} {c.getPageNumber()}")
        c.restoreState()

    return draw


def render_form(
    form: FormBase, *, public_url: str, copy: FormCopy = "stored", book: FormBook | None = None
) -> RenderedForm:
    """Render ``form`` (unsigned, PDF/A-2b, Noto Serif embedded) as its ``copy``; where its signature goes."""
    register_fonts()
    book = book or load_forms()
    link = lookup_link(form, copy, book)
    url = link.url(public_url)
    b = _Builder(form, book, copy)
    spec, layout = b.spec, b.layout
    page_w, page_h = _PAGES[spec.page]
    buf = io.BytesIO()
    doc = BaseDocTemplate(
        buf,
        pagesize=(page_w, page_h),
        leftMargin=layout.margin_x,
        rightMargin=layout.margin_x,
        topMargin=layout.margin_top,
        bottomMargin=layout.margin_bottom,
        title=f"{spec.title} - {form.dossier_code}",
        author=form.agency_name,
        subject=f"Mẫu số {spec.number}: {spec.document_name}",
        keywords=f"hoso-form-{spec.number}",
        creator="hoso",
        initialFontName=REGULAR,
        pageCompression=1,
        lang="vi",
    )
    frame = Frame(layout.margin_x, layout.margin_bottom, b.width, page_h - layout.margin_top - layout.margin_bottom,
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0, id="body")
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=_footer(book, spec, layout))])
    secret = link.secret.get_secret_value() if link.secret is not None else None
    story: list[Flowable] = [_Header(form, spec, book, layout, url, secret), *b.heading(), *b.body()]
    doc.build(story)
    return RenderedForm(
        pdf=as_pdfa_2b(buf.getvalue()),
        url=url,
        signature=b.slots[-1] if b.slots else None,
        pages=doc.page,
    )


def sign_form(
    form: FormBase,
    keys: KeySource,
    *,
    public_url: str,
    copy: FormCopy = "stored",
    signer_name: str | None = None,
    timestamp_url: str | None = None,
    level: Level | None = None,
    trust_roots: list | None = None,
    book: FormBook | None = None,
) -> bytes:
    """Render ``form`` and sign it with PAdES (certification, no later changes) as its role (forms.yaml
    ``signer``): the visible stamp fills the signature block; Mẫu 06, which has none, is signed
    invisibly. ``level`` defaults to B-T with a ``timestamp_url``, else B-B; failures raise
    :class:`pipeline.core.errors.SigningFailed`.
    """
    book = book or load_forms()
    spec = book.forms[form.kind]
    rendered = render_form(form, public_url=public_url, copy=copy, book=book)
    slot = rendered.signature
    role = spec.signer
    return sign_pdf(
        rendered.pdf,
        keys.signer(role),
        field_name=role,
        reason=f"{spec.document_name} — hồ sơ {form.dossier_code}",
        location=form.place or form.agency_name,
        signer_name=signer_name or form.signer_name or ROLE_TITLES[role],
        role_label=ROLE_TITLES[role],
        visible_box=slot.box if slot else None,
        page=slot.page if slot else 0,
        timestamp_url=timestamp_url,
        level=level,
        certify=MDPPerm.NO_CHANGES,
        trust_roots=trust_roots,
    )
