"""The dossier lifecycle as use cases: each step taken by a named user in a role, recorded in the audit trail.

A step (:func:`run_step`) is checked against ``pipeline/data/lifecycle.yaml`` first: the actor's role
(else :class:`~pipeline.core.errors.Forbidden`, exit 21), then the dossier's state (else
:class:`~pipeline.core.errors.InvalidState`, exit 15). A step that signs or stores something — a one-stop
form, the e-result (:mod:`pipeline.usecases.clerk`) — claims the dossier in the registry before it signs
or writes (:meth:`storage.identity.Identity.claim`: of several runs at once exactly one goes ahead, the
others are told it is in progress or done), writes its objects, then one registry transaction moves the
state, records the artifacts and the event (who, role, when, from → to, note, detail) and ends the
claim. A failure removes what the step wrote and gives the claim up; a crash leaves a claim that
expires (:data:`CLAIM_TTL`) and objects no registry row points at, which the next run overwrites.

Forms: the stored copy goes with the dossier (``dossiers/<code>/forms/…``, artifact ``form-NN-n``); a form
with a citizen's copy gets a fresh lookup secret of its own, printed on that copy, which is returned to
the caller and never stored — the registry keeps only its hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy.orm import Session

from pipeline.core.errors import DossierBusy, Forbidden, HosoError, InvalidRequest, InvalidState
from pipeline.core.faults import checkpoint
from pipeline.core.models import DossierState, Receipt, Role
from pipeline.domain.deadlines import due_date
from pipeline.domain.forms import (
    AnyForm,
    ApologyForm,
    Applicant,
    ControlSlipForm,
    FormKind,
    ProcessingStep,
    ReceiptForm,
    ReceivedDocument,
    RefusalForm,
    StopNoticeForm,
    SupplementForm,
    desk_form,
    load_forms,
    lookup_link,
)
from pipeline.domain.lifecycle import (
    CHANNEL_VI,
    Actor,
    Delivery,
    Payment,
    Transition,
    due_soon_until,
    load_lifecycle,
    payment_required,
)
from pipeline.domain.stats import timeliness
from pipeline.national.db import StoredDocument
from pipeline.usecases.forms import issue_form
from pipeline.usecases.services import Services
from storage import keys
from storage.identity import Claim, Identity, TokenRecord, UserRecord, new_lookup_secret
from storage.objects import ObjectInfo
from storage.records import AttemptWriter
from storage.registry import Dossier, DossierRecord

log = logging.getLogger(__name__)

#: How long a step may hold a dossier before another run may take it over (a crashed or hung holder).
CLAIM_TTL = timedelta(minutes=10)
#: Claims of this process whose step failed while the registry was unreachable, so they could not be given up:
#: released at this process's next step, or they would keep the dossier busy for CLAIM_TTL after the outage.
_unreleased: list[Claim] = []
PDF = "application/pdf"


# --- who acts -----------------------------------------------------------------------------------


def identity(services: Services) -> Identity:
    """Users, tokens, lookup secrets and claims in this process's registry."""
    return Identity(services.registry)


def _actor(user: UserRecord, roles: frozenset[Role] | None = None) -> Actor:
    return Actor(username=user.username, display_name=user.display_name, roles=roles or frozenset(user.roles))


def actor_for(services: Services, username: str) -> Actor:
    """An active user named by a trusted interface (the ``hoso`` command on the server); Forbidden otherwise."""
    return _actor(identity(services).active_user(username))


def login(services: Services, username: str, password: str) -> Actor:
    """The user a username and password authenticate, with all their roles; Forbidden otherwise."""
    return _actor(identity(services).authenticate(username, password))


def actor_for_token(services: Services, token: str) -> Actor:
    """The user an API token acts for, in the token's one role; Forbidden otherwise."""
    user, scope = identity(services).authenticate_token(token)
    return _actor(user, frozenset({scope}))


def _admin_or_self(by: Actor, username: str | None = None) -> None:
    if Role.admin in by.roles or (username is not None and by.username == username and not by.batch):
        return
    raise Forbidden(
        f"user {by.username!r} is not an admin" + (f" nor {username!r}" if username else ""),
        "Chỉ quản trị hệ thống (hoặc chính người dùng đó) được thực hiện thao tác này.",
    )


def add_user(services: Services, by: Actor, username: str, display_name: str, roles: list[Role],
             password: str | None) -> UserRecord:
    """An admin adds a user."""
    _admin_or_self(by)
    return identity(services).add_user(username, display_name, roles, password)


def change_password(services: Services, by: Actor, username: str, password: str) -> UserRecord:
    """A user changes their own password, or an admin anyone's."""
    _admin_or_self(by, username)
    return identity(services).set_password(username, password)


def set_active(services: Services, by: Actor, username: str, active: bool) -> UserRecord:
    """An admin locks a user out (their tokens stop working too) or lets them in again."""
    _admin_or_self(by)
    return identity(services).set_active(username, active)


def issue_token(services: Services, by: Actor, username: str, scope: Role, *, label: str | None = None,
                expires_at: datetime | None = None) -> tuple[str, TokenRecord]:
    """A user's API token in one of their roles, issued by the user or an admin; the token is shown once."""
    _admin_or_self(by, username)
    return identity(services).issue_token(username, scope, label=label, expires_at=expires_at)


# --- what a step produces -----------------------------------------------------------------------


@dataclass
class FormIssued:
    kind: FormKind
    artifact: str
    object_key: str
    sha256: str = ""  # of the stored copy, once written
    citizen_pdf: bytes | None = field(default=None, repr=False)  # with the lookup secret; never stored
    lookup_url: str | None = field(default=None, repr=False)  # the citizen's copy's QR link, with the secret


@dataclass
class IssuedResult:
    dossier_code: str
    object_key: str
    verification_code: str
    pdf: bytes = field(repr=False)


@dataclass
class StepOutcome:
    record: DossierRecord  # the dossier after the step
    action: str
    role: Role
    forms: list[FormIssued] = field(default_factory=list)
    result: IssuedResult | None = None


@dataclass
class Work:
    """What a step signed, to be stored with its transition: objects by artifact name, the event's detail."""

    objects: list[tuple[str, str, bytes, dict[str, str] | None]] = field(default_factory=list, repr=False)
    forms: list[FormIssued] = field(default_factory=list)
    secrets: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (secret, form artifact)
    detail: dict[str, Any] = field(default_factory=dict)
    result: IssuedResult | None = None

    def add(self, artifact: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self.objects.append((artifact, key, data, metadata))


#: A step's work: given the dossier (read while the step holds it), the role acted in and the step's time.
Doer = Callable[[DossierRecord, Role, datetime], Work]


# --- the step machinery -------------------------------------------------------------------------


def _history(record: DossierRecord) -> list[tuple[DossierState | None, DossierState]]:
    return [(e.from_state, e.to_state) for e in record.events]


def run_step(
    services: Services,
    code: str,
    action: str,
    actor: Actor,
    *,
    note: str | None = None,
    detail: dict[str, Any] | None = None,
    check: Callable[[DossierRecord], None] | None = None,
    work: Doer | None = None,
    claim: Claim | None = None,
    end_claim: bool = True,
    now: datetime | None = None,
) -> StepOutcome:
    """Take lifecycle step ``action`` on dossier ``code`` as ``actor``.

    ``check`` adds the step's own conditions (a payment made, the dossier due soon…); ``work`` signs what
    the step issues. ``claim`` is a claim the caller holds already (a batch running several steps): the
    step runs under it and ends it only if ``end_claim``. ``now`` (default: the current time) is when
    the step happens, for the audit trail and the forms; claims always run on the current time.
    """
    lc = load_lifecycle()
    t = lc.transition(action)
    role = lc.authorize(t, actor)
    note = (note or "").strip() or None
    if t.note == "required" and note is None:
        raise InvalidRequest(
            f"{action!r} needs a reason or opinion (note)", f"Bước \"{t.label}\" cần ghi rõ lý do hoặc ý kiến."
        )

    def admissible(record: DossierRecord) -> None:
        lc.check_state(t, code, record.state)
        if check is not None:
            check(record)

    return _perform(
        services, code, action, actor, role, admissible=admissible,
        target=lambda record: lc.target(t, record.state, _history(record)),
        note=note, detail=detail, work=work, claim=claim, end_claim=end_claim, when=now or datetime.now(UTC),
    )


def _release_unreleased(ident: Identity) -> None:
    """Give up the claims an earlier failed step of this process could not (see ``_unreleased``)."""
    for held in list(_unreleased):
        try:
            ident.release(held)  # False when it expired or was taken over meanwhile: gone either way
        except HosoError:
            return  # still unreachable: the step about to run finds out itself
        with suppress(ValueError):  # another thread of this process released it too
            _unreleased.remove(held)


def _perform(
    services: Services,
    code: str,
    action: str,
    actor: Actor,
    role: Role,
    *,
    admissible: Callable[[DossierRecord], None],
    target: Callable[[DossierRecord], DossierState],
    note: str | None,
    detail: dict[str, Any] | None,
    work: Doer | None,
    claim: Claim | None,
    end_claim: bool,
    when: datetime,
) -> StepOutcome:
    registry, ident = services.registry, identity(services)
    detail = dict(detail or {})
    if actor.batch:
        detail["batch"] = actor.batch

    if work is None:  # nothing to sign: the state compare-and-set is the transition itself
        record = registry.get(code)
        admissible(record)
        after = registry.transition(
            code, target(record), actor=actor.username, action=action, note=note, role=role, detail=detail or None,
            allowed_from={record.state}, at=when, guard=Identity.guard(claim, end=end_claim and claim is not None),
        )
        return StepOutcome(after, action, role)

    _release_unreleased(ident)
    own = claim is None
    held = claim or ident.claim(
        code, action, actor.username, ttl=CLAIM_TTL, check=lambda row: admissible(DossierRecord.model_validate(row))
    )
    writer: AttemptWriter | None = None
    try:
        checkpoint("step:claimed", action)
        record = registry.get(code)  # as it is now that this step holds it
        if not own:  # the caller's claim was checked for its own purpose, not this step's
            admissible(record)
        done = work(record, role, when)
        if not ident.holds(held):
            raise _lost(held)
        infos: list[tuple[str, ObjectInfo]] = []
        if done.objects:  # written as one attempt: new versions that a failure removes exactly (storage/records.py)
            writer = AttemptWriter.open(services.store, registry, action, actor=actor.username, dossier_code=code)
            writer.intend((key, artifact) for artifact, key, _, _ in done.objects)
            for artifact, key, data, metadata in done.objects:
                infos.append((artifact, writer.put_bytes(key, data, PDF, metadata, artifact=artifact)))
        sha = {info.key: info.sha256 for _, info in infos}
        for form in done.forms:
            form.sha256 = sha[form.object_key]
        detail |= done.detail
        if done.forms:
            detail["forms"] = [
                {"kind": f.kind, "artifact": f.artifact, "key": f.object_key, "sha256": f.sha256} for f in done.forms
            ]
        claim_guard = Identity.guard(held, end=end_claim or own)

        def guard(session: Session, row: Dossier) -> None:
            claim_guard(session, row)
            for secret, form_artifact in done.secrets:
                Identity.record_lookup_secret(session, code, secret, form_artifact, when)

        after = registry.transition(
            code, target(record), actor=actor.username, action=action, note=note, role=role, detail=detail,
            artifacts=infos, allowed_from={record.state}, at=when, guard=guard,
        )
    except BaseException as err:
        if writer is not None:  # only this attempt's unrecorded versions: safe whoever holds the claim now
            writer.rollback(reason=f"{action} failed: {type(err).__name__}: {err}")
        if own:
            try:
                if ident.holds(held):
                    ident.release(held)
            except HosoError as lost:  # the registry is down: give the claim up at the next step instead
                log.warning("could not release the claim on %s for %s: %s", code, action, lost)
                _unreleased.append(held)
        raise
    if writer is not None:
        try:
            writer.committed(services.settings.retention)  # recorded: now locked
        except HosoError as err:  # the sweeper or fsck locks it later
            log.warning("could not lock what %s recorded for %s: %s", action, code, err)
    return StepOutcome(after, action, role, done.forms, done.result)


def _lost(claim: Claim) -> DossierBusy:
    return DossierBusy(
        f"the claim on {claim.dossier_code} for {claim.action!r} expired and was taken over",
        f"Bước {claim.action} trên hồ sơ {claim.dossier_code} đã quá thời gian và bị hủy; vui lòng thực hiện lại.",
    )


# --- forms --------------------------------------------------------------------------------------


def applicant_of(record: DossierRecord) -> Applicant:
    """The applicant as the desk read them: the ID given or read, the name on the matching document."""
    applicant_id = record.applicant_id or (record.receipt_json or {}).get("applicant_id")
    named = [d for d in record.documents if d.fields.get("full_name")]
    owner = next((d for d in named if applicant_id and d.fields.get("id_number") == applicant_id), None)
    owner = owner or next((d for d in named if d.doc_type == "cccd"), None)
    return Applicant(name=owner.fields["full_name"] if owner else None, id_number=applicant_id)


#: States a dossier handed over in has its result decided by the old unit (approved, or sealed and ready).
PAPER_RESULT_STATES = frozenset({DossierState.sealing, DossierState.result_ready, DossierState.returned})


def paper_result(record: DossierRecord) -> bool:
    """Whether the dossier's result is its old unit's paper result: handed over in ``sealing`` or later, when
    the old unit's leader had signed the result on paper (the manifest carries no e-result, and no approval
    happened in hoso), and no e-result made here. The clerk releases that paper result (``seal``: the agency
    seal on the paper, recorded without an e-result) and the desk hands it over at the counter or by post;
    an e-result needs an approval in hoso, which a dossier past ``approval`` cannot go back to."""
    handover = next((e for e in record.events if e.action == "handover"), None)
    return (
        handover is not None
        and handover.to_state in PAPER_RESULT_STATES
        and keys.RESULT_APPROVED not in record.artifacts
        and keys.RESULT not in record.artifacts
    )


def check_paper_delivery(record: DossierRecord, delivery: Delivery) -> None:
    """InvalidRequest when a paper result is to be returned online (there is no e-result to send)."""
    if delivery.channel == "online" and paper_result(record):
        raise InvalidRequest(
            f"dossier {record.code} carries its old unit's paper result (handed over in "
            f"{record.handed_over_from}): return it at the counter or by post, there is no e-result to send online",
            f"Hồ sơ {record.code} được bàn giao kèm kết quả giấy của đơn vị cũ, không có kết quả điện tử: "
            "vui lòng trả kết quả tại quầy hoặc qua bưu chính.",
        )


def _form_fields(services: Services, record: DossierRecord, actor: Actor, when: datetime) -> dict[str, Any]:
    """What every form of ``record`` carries; the signer is the acting user (a batch: the settings' name)."""
    procedure = services.catalog.procedure(record.procedure)
    return {
        "dossier_code": record.code,
        "procedure_label": procedure.label,
        "procedure_code": procedure.national_code,
        "applicant": applicant_of(record),
        "agency_name": services.settings.agency_name,
        "issued_at": when,
        "signer_name": None if actor.batch else actor.display_name,
    }


def _sign_form(services: Services, record: DossierRecord, form: AnyForm, work: Work, n: int | None = None) -> None:
    """Sign ``form`` as the ``n``-th of its kind (default: the next), with a fresh lookup secret on the
    citizen's copy when it has one, and add it to ``work``."""
    spec = load_forms().forms[form.kind]
    if n is None:
        prefix = f"{keys.FORM}-{spec.number}-"
        n = 1 + sum(1 for name in record.artifacts if name.startswith(prefix))
    secret = new_lookup_secret() if "citizen" in spec.copies else None
    if secret is not None:
        form = form.model_copy(update={"lookup_secret": secret})
    signed = issue_form(form, services, n=n)
    url = None if secret is None else lookup_link(form, "citizen").url(services.settings.public_url)
    issued = FormIssued(form.kind, keys.form_artifact(spec.number, n), signed.object_key, citizen_pdf=signed.citizen,
                        lookup_url=url)
    work.add(issued.artifact, issued.object_key, signed.stored)
    work.forms.append(issued)
    if secret is not None:
        work.secrets.append((secret, issued.artifact))


def _form_work(services: Services, actor: Actor, build: Callable[[DossierRecord, dict[str, Any]], AnyForm]) -> Doer:
    """A step's work that issues the one form ``build`` makes from the dossier and the common fields."""

    def work(record: DossierRecord, _role: Role, when: datetime) -> Work:
        done = Work()
        _sign_form(services, record, build(record, _form_fields(services, record, actor, when)), done)
        return done

    return work


def appointment(record: DossierRecord) -> datetime:
    """When the result is due now: the newest appointment of an apology (Mẫu 04) or of the receipt re-issued
    once a supplement completed the dossier (Mẫu 01), else ``due_at``."""
    for event in reversed(record.events):
        if event.action in ("extend", "supplemented") and event.detail and event.detail.get("new_due_at"):
            return datetime.fromisoformat(event.detail["new_due_at"])
    return record.due_at


def _control_work(services: Services, actor: Actor, t: Transition, *, final: bool) -> Doer:
    """Mẫu 06 for step ``t``: intake and every step of the audit trail so far, then this one (on the final
    slip with the dossier's timeliness as Decision 766 counts it)."""
    lc = load_lifecycle()
    ident = identity(services)
    unit = services.settings.agency_name

    def work(record: DossierRecord, role: Role, when: datetime) -> Work:
        names = {actor.username: actor.display_name}

        def who(username: str) -> str:
            if username not in names:
                user = ident.user(username)
                names[username] = user.display_name if user else username
            return names[username]

        steps = []
        for e in record.events:
            if e.action == "intake":
                steps.append(ProcessingStep(action=lc.intake(e.to_state).label, unit=unit, actor=who(e.actor),
                                            role=lc.roles[Role.desk], at=e.at))
            elif e.action == "handover":  # received by the old unit: the trail here starts with the hand-over
                from pipeline.domain.handover import load_labels as load_handover_labels

                steps.append(ProcessingStep(
                    action=load_handover_labels().slip_step.format(old=record.handed_over_from or "?"), unit=unit,
                    actor=who(e.actor), role=lc.roles[Role.desk], at=e.at, note=(e.note or "")[:200] or None))
            elif e.action in lc.transitions and e.role is not None:
                steps.append(ProcessingStep(action=lc.transitions[e.action].label, unit=unit, actor=who(e.actor),
                                            role=lc.roles[e.role], at=e.at, note=(e.note or "")[:200] or None))
        outcome = timeliness(record, when, services.settings.timezone)[0] if final else None
        steps.append(ProcessingStep(action=t.label, unit=unit, actor=who(actor.username), role=lc.roles[role],
                                    at=when, outcome=outcome))
        form = ControlSlipForm(**_form_fields(services, record, actor, when), received_at=record.received_at,
                               due_at=appointment(record), steps=steps)
        done = Work()
        _sign_form(services, record, form, done)
        return done

    return work


# --- intake -------------------------------------------------------------------------------------

STATE_OF_STATUS = {
    "accepted": DossierState.received,
    "needs_supplement": DossierState.needs_supplement,
    "rejected": DossierState.rejected,
}


def issue_intake_forms(
    services: Services, receipt: Receipt, actor: Actor, *, now: datetime | None = None
) -> FormIssued | None:
    """After the desk recorded the dossier: Mẫu 01, 02 or 03 by the intake's outcome, signed and stored with
    the dossier, the desk user recorded (event ``intake_forms``, role desk); the issued form with the
    citizen's copy and its lookup link. Once per dossier: None when it was issued before or is being
    issued by another run."""
    lc = load_lifecycle()
    state = STATE_OF_STATUS[receipt.status]
    t = lc.intake(state)
    role = lc.authorize(t, actor)
    if t.form is None:
        return None
    artifact = keys.form_artifact(load_forms().forms[t.form].number, 1)

    def admissible(record: DossierRecord) -> None:
        if record.state != state or artifact in record.artifacts:
            raise InvalidState(f"intake forms of {record.code} are issued already, or it moved on")

    def work(record: DossierRecord, _role: Role, when: datetime) -> Work:
        form = desk_form(receipt, services.catalog, agency_name=services.settings.agency_name, issued_at=when,
                         signer_name=None if actor.batch else actor.display_name)
        done = Work()
        _sign_form(services, record, form, done, n=1)
        return done

    try:
        admissible(services.registry.get(receipt.dossier_code))
        outcome = _perform(
            services, receipt.dossier_code, "intake_forms", actor, role, admissible=admissible,
            target=lambda record: record.state, note=t.label, detail={"step": t.name}, work=work, claim=None,
            end_claim=True, when=now or datetime.now(UTC),
        )
    except (DossierBusy, InvalidState) as err:  # issued, or being issued, by another run
        log.info("intake forms of %s not issued here: %s", receipt.dossier_code, err)
        return None
    return outcome.forms[0]


# --- the steps ----------------------------------------------------------------------------------


def forward(services: Services, code: str, actor: Actor, *, note: str | None = None, claim: Claim | None = None,
            now: datetime | None = None) -> StepOutcome:
    """The desk hands the dossier to the processing office (chuyển xử lý), with the control slip (Mẫu 06)."""
    t = load_lifecycle().transition("forward")
    return run_step(services, code, "forward", actor, note=note, work=_control_work(services, actor, t, final=False),
                    claim=claim, end_claim=False, now=now)


def appraise(services: Services, code: str, actor: Actor, *, opinion: str, claim: Claim | None = None,
             now: datetime | None = None) -> StepOutcome:
    """The specialist's appraisal, in words, hands the dossier to the leader."""
    return run_step(services, code, "appraise", actor, note=opinion, claim=claim, end_claim=False, now=now)


def request_supplement(
    services: Services, code: str, actor: Actor, *, reasons: list[str], missing: list[list[str]] | None = None,
    now: datetime | None = None,
) -> StepOutcome:
    """Ask the citizen to supplement (Mẫu 02): ``missing`` slots (document type keys, alternatives per slot)
    and ``reasons`` in Vietnamese."""
    reasons = [r.strip() for r in reasons if r.strip()]
    catalog = services.catalog
    labels = [[catalog.label(k) for k in slot] for slot in (missing or []) if slot]

    def build(record: DossierRecord, common: dict[str, Any]) -> AnyForm:
        return SupplementForm(**common, missing=labels, reasons=reasons)

    return run_step(services, code, "request_supplement", actor, note="; ".join(reasons) or None,
                    detail={"missing": missing or []}, work=_form_work(services, actor, build), now=now)


def receive_supplement(services: Services, code: str, actor: Actor, *, note: str | None = None,
                       now: datetime | None = None) -> StepOutcome:
    """The citizen's supplement is in: back to the desk or to the specialist, wherever it was asked for.

    Back at the desk (asked at intake, or before the dossier was forwarded) the dossier is complete only now:
    the desk issues a new Mẫu 01 whose appointment counts the procedure's working days from now, signed and
    stored with the dossier, the citizen's copy with a new lookup secret; the event keeps the previous and
    the new appointment (see :func:`appointment`).
    """
    lc = load_lifecycle()
    t = lc.transition("supplemented")

    def work(record: DossierRecord, _role: Role, when: datetime) -> Work:
        if lc.target(t, record.state, _history(record)) != DossierState.received:
            return Work()  # back to the specialist: the appraisal goes on under the appointment given
        procedure = services.catalog.procedure(record.procedure)
        new_due = due_date(when, procedure.processing_days, services.settings.timezone)
        form = ReceiptForm(
            **_form_fields(services, record, actor, when),
            documents=[ReceivedDocument(label=services.catalog.label(d.doc_type), pages=len(d.pages))
                       for d in record.documents],
            processing_days=procedure.processing_days, received_at=when, due_at=new_due,
            fee_line=procedure.fee_line_vi(),
        )
        done = Work()
        _sign_form(services, record, form, done)
        done.detail = {"previous_due_at": appointment(record).isoformat(), "new_due_at": new_due.isoformat()}
        return done

    return run_step(services, code, "supplemented", actor, note=note, work=work, now=now)


def refuse(services: Services, code: str, actor: Actor, *, reasons: list[str], now: datetime | None = None
           ) -> StepOutcome:
    """Refuse the dossier in writing (Mẫu 03), with the reasons."""
    reasons = [r.strip() for r in reasons if r.strip()]

    def build(record: DossierRecord, common: dict[str, Any]) -> AnyForm:
        return RefusalForm(**common, reasons=reasons)

    return run_step(services, code, "refuse", actor, note="; ".join(reasons) or None,
                    work=_form_work(services, actor, build), now=now)


def stop(services: Services, code: str, actor: Actor, *, reason: str, now: datetime | None = None) -> StepOutcome:
    """Stop handling the dossier: the leader's notice (Mẫu 05)."""

    def build(record: DossierRecord, common: dict[str, Any]) -> AnyForm:
        return StopNoticeForm(**common, received_at=record.received_at, reason=reason.strip())

    return run_step(services, code, "stop", actor, note=reason, work=_form_work(services, actor, build), now=now)


def withdraw(services: Services, code: str, actor: Actor, *, reason: str, now: datetime | None = None) -> StepOutcome:
    """The citizen withdraws the dossier (at the desk); ``reason`` as they gave it."""
    return run_step(services, code, "withdraw", actor, note=reason, now=now)


def extend(
    services: Services, code: str, actor: Actor, *, working_days: int, reason: str, now: datetime | None = None
) -> StepOutcome:
    """A dossier overdue or due within one working day: the leader's apology with a new appointment
    (Mẫu 04), ``working_days`` after the current appointment (or after now, if that has passed)."""
    if working_days < 1:
        raise InvalidRequest("the extension needs at least one working day", "Cần gia hạn ít nhất một ngày làm việc.")
    tz = services.settings.timezone
    when = now or datetime.now(UTC)

    def due_soon_check(record: DossierRecord) -> None:
        current = appointment(record)
        if current > due_soon_until(when, tz):
            raise InvalidState(
                f"dossier {code} is due {current.isoformat()}, not within one working day: no apology yet",
                f"Hồ sơ {code} chưa đến hạn (hẹn trả {current.astimezone(ZoneInfo(tz)):%H:%M %d/%m/%Y}); "
                "chưa cần văn bản xin lỗi.",
            )

    def new_due(record: DossierRecord) -> datetime:
        return due_date(max(appointment(record), when), working_days, tz)

    def build(record: DossierRecord, common: dict[str, Any]) -> AnyForm:
        return ApologyForm(**common, received_at=record.received_at, due_at=appointment(record),
                           new_due_at=new_due(record), reason=reason.strip())

    form_work = _form_work(services, actor, build)

    def work(record: DossierRecord, role: Role, at: datetime) -> Work:
        done = form_work(record, role, at)
        done.detail = {"previous_due_at": appointment(record).isoformat(), "new_due_at": new_due(record).isoformat()}
        return done

    return run_step(services, code, "extend", actor, note=reason, check=due_soon_check, work=work, now=when)


def paid(record: DossierRecord) -> Payment | None:
    """The newest payment recorded on the dossier, if any."""
    for event in reversed(record.events):
        if event.action == "pay" and event.detail and "payment" in event.detail:
            return Payment.model_validate(event.detail["payment"])
    return None


def record_payment(services: Services, code: str, actor: Actor, payment: Payment, *, claim: Claim | None = None,
                   now: datetime | None = None) -> StepOutcome:
    """Record a cashless payment of the fee (bank transfer or gateway reference)."""
    note = f"{payment.method}: {payment.reference}"
    detail = {"payment": payment.model_dump(mode="json", exclude_none=True)}
    return run_step(services, code, "pay", actor, note=note, detail=detail, claim=claim, end_claim=False, now=now)


def check_payment(services: Services, record: DossierRecord) -> None:
    """InvalidRequest when the procedure's fee certainly applies and no payment is recorded."""
    if payment_required(services.catalog.procedure(record.procedure)) and paid(record) is None:
        raise InvalidRequest(
            f"dossier {record.code}: the fee applies and no payment reference is recorded",
            f"Hồ sơ {record.code} phải nộp phí, lệ phí: cần ghi nhận mã thanh toán (chuyển khoản hoặc cổng thanh "
            "toán) trước khi trả kết quả.",
        )


def return_result(
    services: Services, code: str, actor: Actor, *, delivery: Delivery, payment: Payment | None = None,
    claim: Claim | None = None, now: datetime | None = None,
) -> StepOutcome:
    """Hand the result over (at the counter, by post with its tracking number, or online — then the e-result
    also goes to the citizen's electronic data store). Where the fee certainly applies, a payment must be
    recorded first (``payment`` records it now). The final control slip (Mẫu 06) is stored with the dossier."""
    when = now or datetime.now(UTC)
    if payment is not None:
        record_payment(services, code, actor, payment, claim=claim, now=when)
    t = load_lifecycle().transition("return")
    control = _control_work(services, actor, t, final=True)

    def work(record: DossierRecord, role: Role, at: datetime) -> Work:
        done = control(record, role, at)
        done.detail = {"delivery": delivery.model_dump(mode="json", exclude_none=True)}
        if delivery.channel == "online":
            done.detail["pushed_to_citizen_store"] = _push_to_citizen_store(services, record)
        return done

    note = f"{CHANNEL_VI[delivery.channel]}" + (f", mã bưu gửi {delivery.tracking_number}"
                                               if delivery.tracking_number else "")
    def check(record: DossierRecord) -> None:
        check_paper_delivery(record, delivery)
        check_payment(services, record)

    return run_step(services, code, "return", actor, note=note, check=check, work=work, claim=claim, now=when)


def _push_to_citizen_store(services: Services, record: DossierRecord) -> bool:
    """The e-result into the applicant's electronic data store (Kho); False when that cannot be done."""
    result = record.artifacts.get(keys.RESULT)
    applicant = applicant_of(record).id_number
    if result is None or not applicant:
        return False
    natdb = services.national_db()
    try:
        natdb.save_document(StoredDocument(
            id_number=applicant, doc_type=f"ket_qua_{record.procedure}", object_key=result.object_key,
            sha256=result.sha256, dossier_code=record.code, pages=[], fields={}, saved_at=result.created_at,
        ))
        return True
    except (HosoError, ValueError) as err:
        log.warning("e-result of %s not saved to the citizen's store: %s", record.code, err)
        return False
    finally:
        natdb.close()


# --- work lists ---------------------------------------------------------------------------------


class WorkItem(BaseModel):
    """A dossier in a work list."""

    code: str
    procedure: str
    state: DossierState
    state_label: str
    received_at: datetime
    appointment: datetime
    overdue: bool


def _item(record: DossierRecord, now: datetime) -> WorkItem:
    due = appointment(record)
    return WorkItem(code=record.code, procedure=record.procedure, state=record.state,
                    state_label=load_lifecycle().state_label(record.state), received_at=record.received_at,
                    appointment=due, overdue=due < now)


def worklist(services: Services, role: Role, *, now: datetime | None = None) -> list[WorkItem]:
    """The dossiers awaiting ``role``, soonest appointment first."""
    now = now or datetime.now(UTC)
    states = load_lifecycle().awaiting(Role(role))
    if not states:
        return []
    items = [_item(r, now) for r in services.registry.list_dossiers(states=states)]
    return sorted(items, key=lambda i: (i.appointment, i.code))


def _on_the_clock() -> frozenset[DossierState]:
    """States the agency's clock runs in: open, not waiting on the citizen (the supplement time does not
    count) and not done (đã xử lý xong ends a dossier for Decision 766)."""
    return load_lifecycle().open_states - {DossierState.needs_supplement, DossierState.result_ready}


def _due_by(services: Services, until: datetime, now: datetime) -> list[WorkItem]:
    """Dossiers on the clock whose appointment is at or before ``until``, soonest first."""
    # due_at is never later than the appointment, so it bounds the query.
    records = services.registry.list_dossiers(states=_on_the_clock(), due_by=until)
    items = [_item(r, now) for r in records]
    return sorted((i for i in items if i.appointment <= until), key=lambda i: (i.appointment, i.code))


def due_soon(services: Services, *, now: datetime | None = None) -> list[WorkItem]:
    """Open dossiers not yet overdue whose appointment falls within one working day (by the close of the
    next working day after today, weekends and holidays skipped)."""
    now = now or datetime.now(UTC)
    horizon = due_soon_until(now, services.settings.timezone)
    return [i for i in _due_by(services, horizon, now) if not i.overdue]


def overdue(services: Services, *, now: datetime | None = None) -> list[WorkItem]:
    """Open dossiers past their appointment (an apology's new appointment counts)."""
    now = now or datetime.now(UTC)
    return [i for i in _due_by(services, now, now) if i.overdue]


# --- the citizen's lookup -----------------------------------------------------------------------


class PublicStatus(BaseModel):
    """What the lookup link shows the citizen who holds its secret."""

    dossier_code: str
    procedure_label: str
    state: DossierState
    state_label: str
    received_at: datetime
    appointment: datetime
    returned_at: datetime | None


def citizen_lookup(services: Services, code: str, secret: str) -> PublicStatus:
    """The dossier's status for the holder of a lookup secret; Forbidden (the same for an unknown code)
    otherwise."""
    refused = Forbidden(f"lookup of {code!r} refused: unknown code or wrong secret",
                        "Mã hồ sơ hoặc mã tra cứu không đúng.")
    if not secret or not identity(services).check_lookup_secret(code, secret):
        raise refused
    record = services.registry.get(code)
    return PublicStatus(
        dossier_code=code, procedure_label=services.catalog.procedure(record.procedure).label, state=record.state,
        state_label=load_lifecycle().state_label(record.state), received_at=record.received_at,
        appointment=appointment(record), returned_at=record.returned_at,
    )
