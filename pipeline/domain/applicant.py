"""The desk's use of the national databases: verify the applicant, reuse stored documents, keep new ones.

:func:`consult_national_db` runs after the pages are understood and before validation,
:func:`save_dossier_documents` after the dossier is recorded (domain.md §1.2 "Reuse", §4.1).
"""

from __future__ import annotations

import logging

from pipeline.core.errors import HosoError
from pipeline.core.models import ApplicantCheck, DocumentInfo, DocumentReference, Receipt, Validation
from pipeline.domain.catalog import UNKNOWN, Procedure
from pipeline.national.db import (
    FIELD_LABELS_VI,
    ID_PATTERN,
    CitizenDataStore,
    NationalDb,
    NationalDbUnavailable,
    StoredDocument,
)
from storage import keys

log = logging.getLogger(__name__)


def _identity_fields(applicant_id: str, documents: list[DocumentInfo]) -> tuple[str | None, str | None]:
    """Name and date of birth read from the applicant's own papers (the CCCD first)."""
    own = [d for d in documents if d.source == "scan" and d.fields.get("id_number") == applicant_id]
    own.sort(key=lambda d: d.type != "cccd")
    name = next((d.fields["full_name"] for d in own if d.fields.get("full_name")), None)
    dob = next((d.fields["date_of_birth"] for d in own if d.fields.get("date_of_birth")), None)
    return name, dob


def consult_national_db(
    db: NationalDb, procedure: Procedure, applicant_id: str | None, documents: list[DocumentInfo]
) -> tuple[ApplicantCheck | None, list[DocumentInfo]]:
    """Verify the applicant, then fill still-unfilled required slots from the citizen's store.

    Returns the check (None without an applicant ID) and the reused documents (``source="reused"``,
    ``pages=[]``, a reference to the signed digitised copy they come from). Nothing is reused for an ID
    the population DB says belongs to someone else.
    """
    if not applicant_id or not ID_PATTERN.match(applicant_id):
        return None, []
    name, dob = _identity_fields(applicant_id, documents)
    check = db.verify_citizen(applicant_id, name, dob)
    present = {d.type for d in documents}
    unfilled = [slot for slot in procedure.required if not present.intersection(slot)]
    if not unfilled or check.outcome == "mismatch":
        return check, []
    try:
        stored = db.find_documents(applicant_id, {t for slot in unfilled for t in slot})
    except NationalDbUnavailable as err:
        log.warning("citizen data store unavailable; no reuse for %s: %s", applicant_id, err)
        check.notes_vi.append("Không truy cập được kho dữ liệu điện tử của công dân; không sử dụng lại giấy tờ.")
        return check, []
    reused: list[DocumentInfo] = []
    for slot in unfilled:
        match = next((s for s in stored if s.doc_type in slot), None)  # newest first
        if match is None:
            continue
        reused.append(
            DocumentInfo(
                type=match.doc_type,
                pages=[],
                confidence=1.0,
                fields=match.fields,
                source="reused",
                reference=DocumentReference(
                    dossier_code=match.dossier_code, object_key=match.object_key, sha256=match.sha256, pages=match.pages
                ),
            )
        )
    return check, reused


def apply_applicant_check(validation: Validation, check: ApplicantCheck | None) -> Validation:
    """A mismatch asks the citizen to supplement (never a rejection); other outcomes change nothing."""
    if check is None or check.outcome != "mismatch" or validation.status != "accepted":
        return validation
    fields = ", ".join(FIELD_LABELS_VI.get(f, f) for f in check.mismatched)
    reason = (
        f"Thông tin người nộp ({fields}) không khớp với Cơ sở dữ liệu quốc gia về dân cư đối với số định danh "
        f"{check.id_number}; vui lòng kiểm tra và bổ sung giấy tờ tùy thân."
    )
    return validation.model_copy(update={"status": "needs_supplement", "reasons_vi": [*validation.reasons_vi, reason]})


def save_dossier_documents(db: CitizenDataStore, receipt: Receipt, digitised_sha256: str) -> int:
    """Keep the dossier's signed digitised documents in the applicant's store; returns how many.

    Documents that name another person's ID (a child's birth certificate…) and unrecognised papers are
    not kept; neither is anything of a rejected dossier. A store that is down loses nothing but reuse.
    """
    key = receipt.artifacts.get(keys.DIGITISED)
    applicant = receipt.applicant_id
    if receipt.status == "rejected" or not key or not applicant or not ID_PATTERN.match(applicant):
        return 0
    saved = 0
    for doc in receipt.documents:
        if doc.source != "scan" or doc.type == UNKNOWN:
            continue
        owner = doc.fields.get("id_number")
        if owner and owner != applicant:
            continue
        try:
            db.save_document(
                StoredDocument(
                    id_number=applicant,
                    doc_type=doc.type,
                    object_key=key,
                    sha256=digitised_sha256,
                    dossier_code=receipt.dossier_code,
                    pages=doc.pages,
                    fields=doc.fields,
                    saved_at=receipt.received_at,
                )
            )
            saved += 1
        except HosoError as err:
            log.warning("could not save %s of %s to the citizen's store: %s", doc.type, receipt.dossier_code, err)
            break
    return saved
