"""The desk: a citizen's scanned dossier in, a receipt or a request to supplement out.

Reads top to bottom: procedure → identify the input → (already done, or in progress elsewhere?) → inspect →
OCR → understand → national databases (verify the applicant, reuse stored documents) → validate → certify the
digitised copy → record (a leased reservation, this attempt's objects, one registry transaction, then the
locks) → the desk's form (Mẫu 01/02/03) with the citizen's lookup secret, stored with the dossier → save the
signed documents to the citizen's store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from pyhanko.sign.fields import MDPPerm

from ocr.engine import inspect_input, ocr_input
from ocr.load import InputInfo
from ocr.models import OcrResult, RecognizedPage
from pipeline.core.errors import (
    DossierCodeTaken,
    DossierNotFound,
    HosoError,
    InProgressElsewhere,
    InputCorrupt,
    InputEmpty,
)
from pipeline.core.faults import checkpoint
from pipeline.core.inputs import Input, display_name, identify_input
from pipeline.core.models import ApplicantCheck, DocumentInfo, DossierState, PageInfo, Receipt, Validation
from pipeline.core.retry import is_transient
from pipeline.domain.applicant import apply_applicant_check, consult_national_db, save_dossier_documents
from pipeline.domain.catalog import Catalog, Procedure
from pipeline.domain.classify import classify
from pipeline.domain.deadlines import due_date
from pipeline.domain.extract import extract_fields
from pipeline.domain.forms import desk_form
from pipeline.domain.handover import Handover
from pipeline.domain.lifecycle import Actor
from pipeline.domain.segment import segment
from pipeline.domain.validate import validate
from pipeline.usecases.forms import issue_form
from pipeline.usecases.lifecycle import FormIssued, actor_for, issue_intake_forms
from pipeline.usecases.services import Services
from signing.levels import Level
from signing.signers import sign_pdf, stamp_box_top_right
from storage import keys
from storage.objects import ObjectInfo
from storage.records import (
    AttemptWriter,
    clear_reservation_objects,
    holder_alive,
    holder_id,
    lock_recorded,
    new_attempt_id,
    read_recorded,
    release_unfinished,
)
from storage.registry import DossierRecord, IntakeClaim, LegacyIntake

log = logging.getLogger(__name__)

#: How often a desk looks again while another process holds the same input.
WAIT_STEP_S = 0.5

#: What the OCR stage holds while it runs: nothing by default; an orchestrator that caps simultaneous OCR
#: across workers sets its slot here (flows/archive.py: a Prefect global concurrency limit).
OCR_SLOT: ContextVar[Callable[[], AbstractContextManager[object]]] = ContextVar("hoso_ocr_slot", default=nullcontext)

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
    # A legacy dossier handed over by an archive batch: it keeps its code, dates and state, lands in the
    # new unit, and gets no desk form (pipeline/domain/handover.py).
    handover: Handover | None = None


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
    """Seconds per stage of one intake, and its wall time from the call to the receipt."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def finish(self) -> dict[str, float]:
        """The stages and ``wall``: what the receipt reports (the stages add up to the wall time)."""
        return self.timings | {"wall": round(time.perf_counter() - self.started, 3)}


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
    with clock.stage("prepare"):
        procedure = services.catalog.procedure(request.procedure)
        source = identify_input(request.input_path)
        # A failure of this process that could not reach the registry left its lease looking live: end it, or
        # the retry of that input would wait for itself.
        release_unfinished(services.registry)
        done = _received_already(services, source.sha256, procedure.key)
        _check_handover(services, request.handover, done)
    if done is not None:
        log.info("dossier %s already received from this input; nothing to do", done.code)
        outcome = _already_received(services, done)
        # A run that crashed after recording the dossier left its form, and its save to the citizen's
        # store (an upsert: saving again is harmless), to do.
        with clock.stage("forms"):
            outcome.form = _desk_form(request, services, outcome.receipt, now)
        with clock.stage("save_to_citizen_store"):
            _save_to_citizen_store(services, done)
        kept = services.ocr_results  # a run that recorded the dossier and crashed before dropping its OCR output
        if kept is not None:
            with clock.stage("record"):
                kept.discard(kept.key(source.sha256, services.ocr_engine, services.ocr_options))
        outcome.receipt.timings = clock.finish()  # this run's; the first run's stay in the stored manifest
        return outcome

    with clock.stage("prepare"):
        services.store  # noqa: B018  (open storage now: a misconfigured store must fail before minutes of OCR)
        services.keys.signer("officer")  # likewise the officer's key (a wrong token PIN fails here)
        engine = services.ocr_engine  # and the OCR engine (a bad HOSO_OCR_ENGINE)
        options = services.ocr_options
    with clock.stage("inspect"):
        info = inspect_input(source, options)
    if info.page_count == 0:
        raise InputEmpty("input has no pages", "Hồ sơ không có trang nào.")

    kept = services.ocr_results  # an earlier attempt's OCR of this input, if it failed after OCR
    kept_key = kept.key(source.sha256, engine, options) if kept is not None else None
    with TemporaryDirectory(prefix="hoso-desk-") as tmp:
        ocr = _ocr(services, source, info, Path(tmp) / "searchable.pdf", clock, kept_key)
        try:
            with clock.stage("understand"):
                pages, documents = understand(ocr.pages, services.catalog)
            with clock.stage("national_db"):
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
                    outcome = record_intake(
                        request, services, procedure, source, pages, documents, validation, signed, clock.timings,
                        now, applicant_check=check,
                    )
                with clock.stage("forms"):
                    outcome.form = _desk_form(request, services, outcome.receipt, now)
                if outcome.already_done:  # another desk received it meanwhile
                    if kept and kept_key:
                        kept.discard(kept_key)
                    outcome.receipt.timings = clock.finish()
                    return outcome
                with clock.stage("save_to_citizen_store"):
                    save_dossier_documents(natdb, outcome.receipt, hashlib.sha256(signed).hexdigest())
            finally:
                natdb.close()
        except Exception as err:
            if kept and kept_key and not is_transient(err):  # no retry will come for it
                kept.discard(kept_key)
            raise
    if kept and kept_key:
        with clock.stage("record"):
            kept.discard(kept_key)  # recorded: nothing will OCR this input again
    outcome.signed_pdf = signed
    # The stored receipt was written during "record"; the one handed back covers the whole intake.
    outcome.receipt.timings = clock.finish()
    return outcome


def _ocr(
    services: Services, source: Input, info: InputInfo, searchable: Path, clock: _Stopwatch, key: str | None
) -> OcrResult:
    """The input OCR'd into ``searchable``: an earlier attempt's output kept under ``key`` if there is one
    (:mod:`ocr.result_cache`), else a new run, kept under it until the dossier is recorded."""
    kept, engine, options = services.ocr_results, services.ocr_engine, services.ocr_options
    with clock.stage("ocr"):
        ocr = kept.load(key, searchable, page_count=info.page_count) if kept and key else None
    if ocr is not None:
        log.info("%s: OCR output of an earlier attempt at this input reused (%d page(s))",
                 display_name(source.name), len(ocr.pages))
        return ocr
    with OCR_SLOT.get()(), clock.stage("ocr"):  # waiting for a slot is not OCR time
        ocr = ocr_input(info, searchable, options, engine=engine, executor=services.ocr_executor)
    if kept and key:
        with clock.stage("ocr"):  # keeping the output for a retry is the desk's work too
            kept.store(key, ocr)
    return ocr


def _check_handover(services: Services, handover: Handover | None, done: DossierRecord | None) -> None:
    """Before any OCR: a legacy code that another input's dossier holds, or an input already received under
    another code, is refused (DossierCodeTaken) — never a silent overwrite or a second dossier."""
    if handover is None:
        return
    code = handover.legacy_code
    if done is not None:
        if done.code != code:
            raise DossierCodeTaken(
                f"this input was received already as dossier {done.code}, not {code}",
                f"Hồ sơ này đã được tiếp nhận với mã {done.code}; không bàn giao lại với mã {code}.",
            )
        return
    try:
        holder = services.registry.get(code)
    except DossierNotFound:
        return
    raise DossierCodeTaken(
        f"dossier code {code} is in the registry already, made from another input ({holder.input_name})",
        f"Mã hồ sơ {code} đã có trong hệ thống (một hồ sơ khác); hồ sơ này không được bàn giao lại.",
    )


def _received_already(services: Services, input_sha256: str, procedure: str) -> DossierRecord | None:
    """The dossier this input already made, after waiting (up to ``HOSO_LEASE_WAIT_SECONDS``) for a desk
    that holds it now; None when this desk should go on. InProgressElsewhere if the other is still at it."""
    deadline = time.monotonic() + services.settings.lease_wait_seconds
    while True:
        where, record = services.registry.peek_intake(input_sha256, procedure, holder_alive)
        if where == "done":
            return record
        if where != "busy" or record is None:
            return None
        if time.monotonic() >= deadline:
            raise _busy(record)
        time.sleep(WAIT_STEP_S)


def _save_to_citizen_store(services: Services, record: DossierRecord) -> None:
    digitised = record.artifacts.get(keys.DIGITISED)
    if digitised is None:
        return
    natdb = services.national_db()
    try:
        save_dossier_documents(natdb, Receipt.model_validate(record.receipt_json), digitised.sha256)
    finally:
        natdb.close()


def _busy(record: DossierRecord) -> InProgressElsewhere:
    return InProgressElsewhere(
        f"input of dossier {record.code} is being received by another process (attempt {record.lease_attempt})",
        f"Hồ sơ này đang được tiếp nhận ở quầy khác (mã {record.code}); vui lòng chờ và thử lại sau.",
    )


def _already_received(services: Services, record: DossierRecord) -> IntakeOutcome:
    """A dossier received before: its receipt; any lock a crash left undone is applied now."""
    _lock(services, record.code)
    return IntakeOutcome(Receipt.model_validate(record.receipt_json), already_done=True)


def _lock(services: Services, code: str) -> None:
    """Lock what the registry recorded for dossier ``code`` and is not locked yet."""
    try:
        lock_recorded(services.store, services.registry, services.settings.retention, dossier_code=code)
    except HosoError as err:  # recorded is recorded: the next run, the sweeper or fsck locks it later
        log.warning("could not lock the objects of %s now: %s", code, err)


def _desk_form(
    request: IntakeRequest, services: Services, receipt: Receipt, now: datetime | None
) -> FormIssued | None:
    """After :func:`record_intake`: the desk's form for the dossier, once (see ``issue_intake_forms``), locked
    once recorded like the rest of the dossier; none for a dossier handed over (it was received long ago)."""
    if request.handover is not None:
        return None
    form = issue_intake_forms(services, receipt, request.desk or Actor.for_batch("ingest", request.actor), now=now)
    if form is not None:
        _lock(services, receipt.dossier_code)
    return form


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
) -> IntakeOutcome:
    """Reserve a dossier code under a lease, write this attempt's objects, record the dossier in one
    registry transaction, then lock what was recorded.

    Another desk holding the same input is waited for (then this one reports ``already_done``) or, past
    ``HOSO_LEASE_WAIT_SECONDS``, InProgressElsewhere. A reservation left by a crashed or expired desk is
    resumed under the same code once that desk's objects are removed. A failure removes exactly the
    versions this attempt wrote — never another desk's — and discards the reservation.
    """
    registry, store, settings = services.registry, services.store, services.settings
    received_at = request.handover.received_at if request.handover else now or datetime.now(UTC)
    lease_for = timedelta(seconds=settings.lease_seconds)
    attempt = new_attempt_id()
    claim = _claim(services, request, procedure, source, received_at, attempt, lease_for)
    if claim.status == "done":
        _check_handover(services, request.handover, claim.record)
        return _already_received(services, claim.record)
    record = claim.record
    code = record.code
    assert claim.attempt is not None
    checkpoint("record:after_reserve")
    writer = AttemptWriter(store, registry, claim.attempt, lease_for)
    cleared = claim.status != "resumed"  # nothing of an earlier attempt left under this code
    try:
        if claim.status == "resumed":
            removed = clear_reservation_objects(store, registry, code, keep_attempt=attempt)
            cleared = True
            log.info("resumed reservation %s; removed %d object version(s) of earlier attempts", code, removed)
        input_keys = [(keys.input_key(code, f.name), keys.input_artifact(i, len(source.files)))
                      for i, f in enumerate(source.files, start=1)]
        writer.intend(
            [*input_keys, (keys.digitised_key(code), keys.DIGITISED), (keys.manifest_key(code), keys.MANIFEST)]
        )
        written: list[tuple[str, ObjectInfo]] = []
        for (key, name), f in zip(input_keys, source.files, strict=True):
            stored = writer.put_file(key, f.path, f.content_type, artifact=name)
            written.append((name, stored))
            if stored.sha256 != f.sha256:  # rewritten (a scanner still at it) or swapped since it was identified
                raise InputCorrupt(
                    f"{display_name(f.name)} changed while it was being received (SHA-256 {f.sha256[:12]}… when "
                    f"identified, {stored.sha256[:12]}… when stored)",
                    "Tệp đã thay đổi trong khi đang tiếp nhận (máy quét chưa ghi xong?); vui lòng đợi rồi thử lại.",
                )
        checkpoint("record:after_input")
        written.append((keys.DIGITISED, writer.put_bytes(
            keys.digitised_key(code), signed_pdf, "application/pdf", artifact=keys.DIGITISED)))
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
        manifest: dict[str, object] = {
            "receipt": receipt.model_dump(mode="json"),
            "objects": {name: info.model_dump(mode="json") for name, info in written},
            "attempt": attempt,
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
        written.append((keys.MANIFEST, writer.put_bytes(
            keys.manifest_key(code), json.dumps(manifest, ensure_ascii=False, indent=2).encode(), "application/json",
            artifact=keys.MANIFEST)))
        checkpoint("record:after_objects")
        handover = request.handover
        registry.finalize_intake(
            code,
            state=handover.state if handover else STATE_OF_STATUS[validation.status],
            intake_status=validation.status,
            documents=documents,
            artifacts=written,
            receipt=receipt.model_dump(mode="json"),
            actor=request.actor,
            attempt=attempt,
            handover_note=handover.note if handover else None,
        )
    except BaseException as err:
        log.exception("recording dossier %s failed; removing what this attempt wrote", code)
        # An earlier attempt's objects still stored (the store down while clearing them) keep the reservation:
        # the next run resumes it and clears them; discarded, they would be orphans under a forgotten code.
        writer.rollback(discard=code if cleared else None, reason=f"intake failed: {type(err).__name__}: {err}")
        raise
    checkpoint("record:after_finalize")
    _lock(services, code)
    checkpoint("record:after_lock")
    return IntakeOutcome(receipt)


def _claim(
    services: Services,
    request: IntakeRequest,
    procedure: Procedure,
    source: Input,
    received_at: datetime,
    attempt: str,
    lease_for: timedelta,
) -> IntakeClaim:
    """The reservation for this input, held by ``attempt`` — or ``done`` — after waiting for a desk that holds it."""
    deadline = time.monotonic() + services.settings.lease_wait_seconds
    holder = holder_id()
    handover = request.handover
    due_at = due_date(received_at, procedure.processing_days, services.settings.timezone)
    legacy = None
    if handover is not None:
        due_at = handover.due_at or due_at
        legacy = LegacyIntake(handover.legacy_code, handover.from_agency, handover.batch_id)
    while True:
        claim = services.registry.claim_intake(
            input_sha256=source.sha256,
            input_name=source.name,
            procedure=procedure.key,
            procedure_code=procedure.national_code,
            agency_code=handover.to_agency if handover else services.settings.agency_code,
            received_at=received_at,
            due_at=due_at,
            applicant_id=request.applicant_id,
            actor=request.actor,
            attempt=attempt,
            holder=holder,
            lease_for=lease_for,
            holder_alive=holder_alive,
            legacy=legacy,
        )
        if claim.status != "busy":
            return claim
        if time.monotonic() >= deadline:
            raise _busy(claim.record)
        time.sleep(WAIT_STEP_S)


def _applicant_id(documents: list[DocumentInfo]) -> str | None:
    for doc in documents:
        if doc.type == "cccd" and doc.fields.get("id_number"):
            return doc.fields["id_number"]
    for doc in documents:
        if doc.fields.get("id_number"):
            return doc.fields["id_number"]
    return None



def stored_copy(services: Services, code: str, artifact: str = keys.DIGITISED) -> bytes:
    """The bytes of a dossier's artifact: the version the registry recorded, checked against its SHA-256."""
    art = services.registry.get(code).artifacts.get(artifact)
    if art is None:
        raise DossierNotFound(f"dossier {code} has no {artifact}", "Hồ sơ chưa có tệp này.")
    return read_recorded(services.store, art)


def warm_up(services: Services, sample: Path, procedure: str = "business_household_registration") -> dict[str, float]:
    """Run the desk chain on ``sample`` without recording anything, so that a long-running service pays once
    for what every intake needs: the OCR workers and their engines, the classifier, the officer's signer and
    its stamp font, the desk's form (fonts, QR). Returns seconds per stage."""
    clock = _Stopwatch()
    with clock.stage("prepare"):
        services.keys.signer("officer")
        found = services.catalog.procedure(procedure)
        engine, options = services.ocr_engine, services.ocr_options
        info = inspect_input(identify_input(sample), options)
    with TemporaryDirectory(prefix="hoso-warm-") as tmp:
        with clock.stage("ocr"):
            ocr = ocr_input(info, Path(tmp) / "warm.pdf", options, engine=engine, executor=services.ocr_executor)
        with clock.stage("understand"):
            pages, documents = understand(ocr.pages, services.catalog)
            validation = validate(found, documents, services.catalog)
        with clock.stage("sign"):
            certify_digitised_copy(ocr.pdf_path.read_bytes(), services)
    with clock.stage("forms"):
        now = datetime.now(UTC)
        receipt = Receipt(
            dossier_code=f"{services.settings.agency_code}-000000-0000", procedure=found.key,
            procedure_code=found.national_code, procedure_label=found.label, status=validation.status,
            received_at=now, due_at=due_date(now, found.processing_days, services.settings.timezone),
            pages=pages, documents=documents, missing=validation.missing, unexpected=validation.unexpected,
            reasons_vi=validation.reasons_vi, notice_vi=validation.notice_vi,
        )
        issue_form(desk_form(receipt, services.catalog, agency_name=services.settings.agency_name, issued_at=now),
                   services)
    return clock.finish()
