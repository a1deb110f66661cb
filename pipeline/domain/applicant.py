"""The desk's use of the national databases: verify the applicant, reuse stored documents, keep new ones.

:func:`consult_national_db` runs after the pages are understood and before validation,
:func:`save_dossier_documents` after the dossier is recorded (domain.md §1.2 "Reuse", §4.1).

A stored document is only a claim of the data store: before it fills a slot, :class:`ReuseGuard` reads
the signed digitised PDF it points to from the object store and checks it (see there). A document that
fails is not reused; the applicant check carries a note saying why, and an older one may be used instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import HosoError, IntegrityError
from pipeline.core.models import ApplicantCheck, DocumentInfo, DocumentReference, Receipt, Validation
from pipeline.domain.catalog import UNKNOWN, Procedure, load_catalog
from pipeline.national.db import (
    FIELD_LABELS_VI,
    ID_PATTERN,
    CitizenDataStore,
    NationalDb,
    NationalDbUnavailable,
    StoredDocument,
)
from signing.identities import SignerIdentities
from signing.verify import verify_pdf
from storage import keys
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

#: Stored copies tried per slot, newest first: a flooded store costs a bounded number of object reads.
MAX_REUSE_CANDIDATES = 5


@dataclass
class ReuseGuard:
    """Decides whether a stored document may be reused: its reference must name the digitised copy of
    the dossier it comes from, that object must be in ``store`` with the SHA-256 the data store gives,
    and every signature on it must verify against ``trust_roots`` (roles only for ``identities``' signers).
    Each PDF is judged once per intake.
    """

    store: ObjectStore
    trust_roots: Sequence[bytes | Path]
    identities: SignerIdentities | None = None
    _verdicts: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict, repr=False)

    def refusal(self, document: StoredDocument) -> tuple[str, str] | None:
        """None if ``document`` may be reused, else why not: (English for the log, Vietnamese for the clerk)."""
        seen = (document.object_key, document.sha256)
        if seen not in self._verdicts:
            self._verdicts[seen] = self._judge(document)
        return self._verdicts[seen]

    def _judge(self, document: StoredDocument) -> tuple[str, str] | None:
        key, sha = document.object_key, document.sha256
        try:
            expected = keys.digitised_key(document.dossier_code)
        except ValueError:
            expected = None
        if key != expected:
            return (f"object key {key!r} is not the digitised copy of dossier {document.dossier_code!r}",
                    "tham chiếu không trỏ tới bản số hóa của hồ sơ")
        try:
            info = self.store.stat(key)
            if info is None:
                return f"object {key!r} is not in the object store", "tệp lưu trữ không còn"
            if info.sha256 != sha:
                return (f"object {key!r} has SHA-256 {info.sha256 or 'unknown'}, the data store says {sha}",
                        "mã băm không khớp với tệp lưu trữ")
            pdf = self.store.get_bytes(key)  # checked against the store's own SHA-256 on the way
        except IntegrityError as err:
            return f"object {key!r}: {err}", "tệp lưu trữ không toàn vẹn (sai mã băm)"
        except (HosoError, ValueError) as err:
            return f"object {key!r} cannot be read: {err}", "không đọc được tệp lưu trữ"
        if hashlib.sha256(pdf).hexdigest() != sha:
            return f"object {key!r} read back with another SHA-256 than {sha}", "mã băm không khớp với tệp lưu trữ"
        try:
            report = verify_pdf(pdf, self.trust_roots, identities=self.identities)
        except Exception as err:  # whatever stops verification, the answer is the same: not reused
            return f"object {key!r} cannot be verified: {type(err).__name__}: {err}", "không kiểm tra được chữ ký số"
        if not report.ok:
            return f"object {key!r}: {report.summary_en}", "chữ ký số không hợp lệ hoặc không có chữ ký"
        return None


def _identity_fields(applicant_id: str, documents: list[DocumentInfo]) -> tuple[str | None, str | None]:
    """Name and date of birth read from the applicant's own papers (the CCCD first)."""
    own = [d for d in documents if d.source == "scan" and d.fields.get("id_number") == applicant_id]
    own.sort(key=lambda d: d.type != "cccd")
    name = next((d.fields["full_name"] for d in own if d.fields.get("full_name")), None)
    dob = next((d.fields["date_of_birth"] for d in own if d.fields.get("date_of_birth")), None)
    return name, dob


def consult_national_db(
    db: NationalDb,
    procedure: Procedure,
    applicant_id: str | None,
    documents: list[DocumentInfo],
    guard: ReuseGuard,
) -> tuple[ApplicantCheck | None, list[DocumentInfo]]:
    """Verify the applicant, then fill still-unfilled required slots from the citizen's store.

    Returns the check (None without an applicant ID) and the reused documents (``source="reused"``,
    ``pages=[]``, a reference to the signed digitised copy they come from). Nothing is reused for an ID
    the population DB says belongs to someone else, nor any document ``guard`` refuses (a note says why;
    the next newest of the slot is tried).
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
    noted: set[tuple[str, str]] = set()
    for slot in unfilled:
        match = None
        for candidate in [s for s in stored if s.doc_type in slot][:MAX_REUSE_CANDIDATES]:  # newest first
            refusal = guard.refusal(candidate)
            if refusal is None:
                match = candidate
                break
            if (candidate.object_key, candidate.doc_type) not in noted:
                noted.add((candidate.object_key, candidate.doc_type))
                log.warning("not reusing %s of %s from dossier %s: %s", candidate.doc_type, applicant_id,
                            candidate.dossier_code, refusal[0])
                check.notes_vi.append(
                    f"Không sử dụng lại {load_catalog().label(candidate.doc_type)} từ hồ sơ "
                    f"{candidate.dossier_code}: {refusal[1]}."
                )
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
