"""Domain models of a dossier as it moves through the desk, the clerk and the archive."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

PageKind = Literal["document", "separator", "blank"]
IntakeStatus = Literal["accepted", "needs_supplement", "rejected"]
DocumentSource = Literal["scan", "reused"]
CheckOutcome = Literal["verified", "mismatch", "not_found", "unverified"]


class DossierState(StrEnum):
    """The states of a dossier (domain.md §2.1); labels, transitions and roles are data
    (``pipeline/data/lifecycle.yaml``, loaded by :mod:`pipeline.domain.lifecycle`)."""

    receiving = "receiving"  # code reserved, objects being written; not yet a dossier anyone sees
    received = "received"  # accepted at the desk, receipt issued
    needs_supplement = "needs_supplement"  # phiếu yêu cầu bổ sung issued
    rejected = "rejected"  # phiếu từ chối tiếp nhận issued
    appraisal = "appraisal"  # with the specialist (chuyển xử lý / thẩm định)
    approval = "approval"  # appraised, awaiting the leader's approval
    sealing = "sealing"  # approved and signed by the leader, awaiting the agency seal
    result_ready = "result_ready"  # sealed: đã xử lý xong
    returned = "returned"  # e-result signed, sealed and returned
    stopped = "stopped"  # thông báo dừng giải quyết (Mẫu 05)
    withdrawn = "withdrawn"  # the citizen withdrew the dossier


class Role(StrEnum):
    """What a named user may do (pipeline/data/lifecycle.yaml says which role may take which step)."""

    desk = "desk"  # bộ phận một cửa: receives, hands over forms, returns results
    specialist = "specialist"  # chuyên viên: appraises
    approver = "approver"  # lãnh đạo: approves and signs the e-result, Mẫu 04–05
    clerk = "clerk"  # văn thư: applies the agency seal
    admin = "admin"  # manages users


class PageInfo(BaseModel):
    index: int = Field(ge=1)
    kind: PageKind
    rotation: Literal[0, 90, 180, 270] = 0
    confidence: float = 0.0
    rescan_reason: str | None = None


class DocumentReference(BaseModel):
    """Where a reused document lives: a signed digitised copy in the citizen's electronic data store."""

    dossier_code: str = Field(description="The earlier dossier the document was digitised in")
    object_key: str = Field(description="Object key of that dossier's signed digitised PDF")
    sha256: str
    pages: list[int] = Field(default_factory=list, description="The document's pages in that PDF")


class DocumentInfo(BaseModel):
    type: str = Field(description="A taxonomy document type key, or 'unknown'")
    pages: list[int] = Field(description="1-based input page numbers (empty for a reused document)")
    confidence: float = Field(ge=0, le=1)
    fields: dict[str, str] = Field(default_factory=dict)
    field_confidence: dict[str, float] = Field(default_factory=dict)
    source: DocumentSource = Field("scan", description="scan: in this input; reused: from the citizen's store")
    reference: DocumentReference | None = None


class ApplicantCheck(BaseModel):
    """The applicant's ID checked against the national population database (pipeline/national/db.py)."""

    outcome: CheckOutcome
    id_number: str
    mismatched: list[str] = Field(default_factory=list, description="Fields that differ: full_name, date_of_birth")
    reason: str | None = Field(None, description="Why unverified (English, for logs)")
    notes_vi: list[str] = Field(default_factory=list, description="For the clerk, in Vietnamese")


class Validation(BaseModel):
    status: IntakeStatus
    missing: list[list[str]] = Field(default_factory=list, description="Alternatives of each unfilled slot")
    unexpected: list[str] = Field(default_factory=list)
    reasons_vi: list[str] = Field(default_factory=list, description="Why, for the citizen, in Vietnamese")
    inconsistencies: list[str] = Field(
        default_factory=list, description="Cross-document disagreements (same person), in Vietnamese"
    )
    notice_vi: str = Field("", description="Phiếu yêu cầu bổ sung, hoàn thiện hồ sơ / phiếu từ chối text")


class Receipt(BaseModel):
    """What the desk hands back: the JSON contract read by evaluation (keep these keys)."""

    dossier_code: str
    procedure: str
    procedure_code: str | None = None
    procedure_label: str = ""
    status: IntakeStatus
    received_at: datetime
    due_at: datetime
    applicant_id: str | None = None
    pages: list[PageInfo]
    documents: list[DocumentInfo]
    missing: list[list[str]]
    unexpected: list[str]
    reasons_vi: list[str] = Field(default_factory=list)
    applicant_check: ApplicantCheck | None = None
    inconsistencies: list[str] = Field(default_factory=list, description="Cross-document disagreements, Vietnamese")
    notice_vi: str = Field("", description="Text of the request to supplement / refusal slip, if any")
    artifacts: dict[str, str] = Field(default_factory=dict, description="artifact name -> object key")
    input_sha256: str = ""
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage")
