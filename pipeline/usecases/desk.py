"""The desk: a citizen's scanned dossier in, a receipt or a request to supplement out.

Reads top to bottom: procedure → identify the input → (already done?) → inspect → OCR → understand → national
databases (verify the applicant, reuse stored documents) → validate → certify the digitised copy → record
(objects first, then one registry transaction) → the desk's form (Mẫu 01/02/03) with the citizen's lookup
secret, stored with the dossier → save the signed documents to the citizen's store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from pyhanko.sign.fields import MDPPerm

from ocr.engine import inspect_input, ocr_input
from ocr.models import RecognizedPage
from pipeline.core.errors import InputEmpty
from pipeline.core.inputs import Input, identify_input
from pipeline.core.models import ApplicantCheck, DocumentInfo, DossierState, PageInfo, Receipt, Validation
from pipeline.domain.applicant import apply_applicant_check, consult_national_db, save_dossier_documents
from pipeline.domain.catalog import Catalog, Procedure
from pipeline.domain.classify import classify
from pipeline.domain.deadlines import due_date
from pipeline.domain.extract import extract_fields
from pipeline.domain.lifecycle import Actor
from pipeline.domain.segment import segment
from pipeline.domain.validate import validate
from pipeline.usecases.lifecycle import FormIssued, actor_for, issue_intake_forms
from pipeline.usecases.services import Services
from signing.levels import Level
from signing.signers import sign_pdf, stamp_box_top_right
from storage import keys
from storage.objects import ObjectInfo

log = logging.getLogger(__name__)

STATE_OF_STATUS = {
    "accepted": DossierState.received,
    "needs_supplement": DossierState.needs_supplement,
    "rejected": DossierState.rejected,
}


@dataclass(frozen=True)
class IntakeRequest:
    input_path: Path
    procedure: str
    applicant_id: str | None = None
    actor: str = "desk-officer"
    desk: Actor | None = None  # the named desk user (default: the unattended command, as ``actor``)


def intake_request(
    services: Services, input_path: Path, procedure: str, applicant_id: str | None = None, user: str | None = None
) -> IntakeRequest:
    """The request of an intake by the active desk ``user`` (Forbidden otherwise), or by the command itself."""
    if user is None:
        return IntakeRequest(input_path, procedure, applicant_id)
    desk = actor_for(services, user)
    return IntakeRequest(input_path, procedure, applicant_id, actor=desk.username, desk=desk)


@dataclass
class IntakeOutcome:
    receipt: Receipt
    already_done: bool = False
    signed_pdf: bytes | None = field(default=None, repr=False)
    form: FormIssued | None = None  # the desk's form, with the citizen's copy: only from the run that issued it

    @property
    def lookup_url(self) -> str | None:
        """The citizen's lookup link (with its secret), when this run issued the desk's form."""
        return self.form.lookup_url if self.form else None


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def understand(pages: list[RecognizedPage], catalog: Catalog) -> tuple[list[PageInfo], list[DocumentInfo]]:
    """Pages → page kinds and classified documents with their key fields."""
    page_infos = [
        PageInfo(
            index=p.index,
            kind="document" if p.kind == "content" else p.kind,
            rotation=p.rotation,
            confidence=round(p.confidence, 3),
            rescan_reason=p.rescan_reason,
        )
        for p in pages
    ]
    documents = []
    for group in segment(pages, catalog):
        doc_type, confidence = classify(group.text, catalog)
        fields, field_confidence = extract_fields(doc_type, group.text)
        documents.append(
            DocumentInfo(
                type=doc_type,
                pages=list(group.pages),
                confidence=round(confidence, 3),
                fields=fields,
                field_confidence=field_confidence,
            )
        )
    return page_infos, documents


def certify_digitised_copy(pdf: bytes, services: Services) -> bytes:
    """The desk officer's PAdES signature on the digitised copy, visible top-right of page 1."""
    settings = services.settings
    return sign_pdf(
        pdf,
        services.keys.signer("officer"),
        field_name="CanBoTiepNhan",
        reason="Chứng thực bản số hóa từ hồ sơ giấy",
        location=settings.agency_name,
        signer_name=settings.officer_name,
        role_label="Cán bộ tiếp nhận",
        visible_box=stamp_box_top_right(pdf),
        timestamp_url=settings.tsa_url,
        level=Level(settings.level_digitised),
        certify=MDPPerm.NO_CHANGES,
        trust_roots=services.trust_roots,
    )


def ingest(request: IntakeRequest, services: Services, *, now: datetime | None = None) -> IntakeOutcome:
    """Run the desk chain for one dossier; idempotent by input content."""
    clock = _Stopwatch()
    procedure = services.catalog.procedure(request.procedure)
    source = identify_input(request.input_path)

    existing = services.registry.find_by_input(source.sha256, procedure.key)
    if existing is not None and existing.state != DossierState.receiving:
        log.info("dossier %s already received from this input; nothing to do", existing.code)
        receipt = Receipt.model_validate(existing.receipt_json)
        # A run that crashed after recording the dossier left its form to do.
        return IntakeOutcome(receipt, already_done=True, form=_desk_form(request, services, receipt, now))

    services.store  # noqa: B018  (open storage now: a misconfigured store must fail before minutes of OCR)
    services.keys.signer("officer")  # likewise the officer's key (a wrong token PIN fails here)
    engine = services.ocr_engine  # and the OCR engine (a bad HOSO_OCR_ENGINE)
    options = services.ocr_options
    with clock.stage("inspect"):
        info = inspect_input(source, options)
    if info.page_count == 0:
        raise InputEmpty("input has no pages", "Hồ sơ không có trang nào.")

    with TemporaryDirectory(prefix="hoso-desk-") as tmp:
        with clock.stage("ocr"):
            ocr = ocr_input(
                info, Path(tmp) / "searchable.pdf", options,
                engine=engine, executor=services.ocr_executor,
            )
        with clock.stage("understand"):
            pages, documents = understand(ocr.pages, services.catalog)
        natdb = services.national_db()
        try:
            with clock.stage("national_db"):
                applicant_id = request.applicant_id or _applicant_id(documents)
                check, reused = consult_national_db(
                    natdb, procedure, applicant_id, documents, services.reuse_guard()
                )
                documents = [*documents, *reused]
            with clock.stage("validate"):
                validation = apply_applicant_check(validate(procedure, documents, services.catalog), check)
            with clock.stage("sign"):
                signed = certify_digitised_copy(ocr.pdf_path.read_bytes(), services)

            with clock.stage("record"):
                receipt = record_intake(
                    request, services, procedure, source, pages, documents, validation, signed, clock.timings,
                    now, applicant_check=check,
                )
            with clock.stage("forms"):
                form = _desk_form(request, services, receipt, now)
            with clock.stage("save_to_citizen_store"):
                save_dossier_documents(natdb, receipt, hashlib.sha256(signed).hexdigest())
        finally:
            natdb.close()
    return IntakeOutcome(receipt, signed_pdf=signed, form=form)


def _desk_form(
    request: IntakeRequest, services: Services, receipt: Receipt, now: datetime | None
) -> FormIssued | None:
    """After :func:`record_intake`: the desk's form for the dossier, once (see ``issue_intake_forms``)."""
    return issue_intake_forms(services, receipt, request.desk or Actor.for_batch("ingest", request.actor), now=now)


def record_intake(
    request: IntakeRequest,
    services: Services,
    procedure: Procedure,
    source: Input,
    pages: list[PageInfo],
    documents: list[DocumentInfo],
    validation: Validation,
    signed_pdf: bytes,
    timings: dict[str, float],
    now: datetime | None = None,
    *,
    applicant_check: ApplicantCheck | None = None,
) -> Receipt:
    """Reserve a dossier code, write the objects, then record the dossier in one registry transaction.

    A failure removes what this call wrote; a crash leaves a 'receiving' reservation that the next run
    with the same input resumes under the same code (object keys derive from the code), so nothing is
    ever stored twice.
    """
    registry, store = services.registry, services.store
    received_at = now or datetime.now(UTC)
    record = registry.reserve(
        input_sha256=source.sha256,
        input_name=source.name,
        procedure=procedure.key,
        procedure_code=procedure.national_code,
        agency_code=services.settings.agency_code,
        received_at=received_at,
        due_at=due_date(received_at, procedure.processing_days, services.settings.timezone),
        applicant_id=request.applicant_id,
        actor=request.actor,
    )
    code = record.code
    written: list[tuple[str, ObjectInfo]] = []
    try:
        for i, f in enumerate(source.files, start=1):
            name = keys.input_artifact(i, len(source.files))
            written.append((name, store.put_file(keys.input_key(code, f.name), f.path, f.content_type)))
        written.append(
            (keys.DIGITISED, store.put_bytes(keys.digitised_key(code), signed_pdf, "application/pdf"))
        )
        receipt = Receipt(
            dossier_code=record.code,
            procedure=procedure.key,
            procedure_code=procedure.national_code,
            procedure_label=procedure.label,
            status=validation.status,
            received_at=record.received_at,
            due_at=record.due_at,
            applicant_id=request.applicant_id or _applicant_id(documents),
            pages=pages,
            documents=documents,
            missing=validation.missing,
            unexpected=validation.unexpected,
            reasons_vi=validation.reasons_vi,
            inconsistencies=validation.inconsistencies,
            notice_vi=validation.notice_vi,
            applicant_check=applicant_check,
            artifacts={name: info.key for name, info in written} | {keys.MANIFEST: keys.manifest_key(code)},
            input_sha256=source.sha256,
            timings=timings,
        )
        manifest = {
            "receipt": receipt.model_dump(mode="json"),
            "objects": {name: info.model_dump(mode="json") for name, info in written},
        }
        if source.signature_fields:
            # A signed input is kept byte-identical as `input`; the OCR'd copy is derived from it.
            manifest["derived_from"] = {
                keys.DIGITISED: {
                    "artifact": keys.INPUT,
                    "key": written[0][1].key,
                    "sha256": source.sha256,
                    "reason": "input PDF carries signatures; stored unchanged, OCR in a derived copy",
                    "signature_fields": source.signature_fields,
                }
            }
        written.append(
            (
                keys.MANIFEST,
                store.put_bytes(
                    keys.manifest_key(code),
                    json.dumps(manifest, ensure_ascii=False, indent=2).encode(),
                    "application/json",
                ),
            )
        )
        registry.finalize_intake(
            record.code,
            state=STATE_OF_STATUS[validation.status],
            intake_status=validation.status,
            documents=documents,
            artifacts=written,
            receipt=receipt.model_dump(mode="json"),
            actor=request.actor,
        )
    except BaseException:
        log.exception("recording dossier %s failed; removing what was written", record.code)
        for _, obj in written:
            try:
                store.delete(obj.key)
            except Exception:  # the original error matters more; a stale reservation is resumed later
                log.warning("could not remove %s during rollback", obj.key)
        try:
            registry.discard(record.code)
        except Exception:
            log.warning("could not discard reservation %s during rollback", record.code)
        raise
    return receipt


def _applicant_id(documents: list[DocumentInfo]) -> str | None:
    for doc in documents:
        if doc.type == "cccd" and doc.fields.get("id_number"):
            return doc.fields["id_number"]
    for doc in documents:
        if doc.fields.get("id_number"):
            return doc.fields["id_number"]
    return None

