"""The e-result's steps of the lifecycle: the leader approves and signs it, the clerk applies the agency
seal; and ``hoso issue-result``, one command through every remaining step for batch use.

The approver's signature and the seal are two PAdES signatures on one PDF (:mod:`pipeline.domain.results`):
:func:`approve` renders and signs it (``result-approved.pdf``, with a new verification code), :func:`seal`
adds the seal to exactly those bytes (checked against the registry's SHA-256) and stores ``result.pdf``.
The seal key is the agency's, shared: the audit trail records which clerk applied it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pipeline.core.errors import DossierBusy, InvalidState
from pipeline.core.models import DossierState
from pipeline.domain.lifecycle import Actor, Delivery, Payment, load_lifecycle
from pipeline.domain.results import ResultContent, seal_result, sign_as_approver
from pipeline.usecases.lifecycle import (
    CLAIM_TTL,
    IssuedResult,
    StepOutcome,
    Work,
    applicant_of,
    appraise,
    check_payment,
    forward,
    identity,
    paper_result,
    return_result,
    run_step,
)
from pipeline.usecases.services import Services
from signing.levels import Level
from storage import keys
from storage.identity import Claim
from storage.records import read_recorded
from storage.registry import DossierRecord

__all__ = ["APPROVER_NAME", "IssuedResult", "approve", "issue_result", "seal"]

APPROVER_NAME = "Lãnh đạo phê duyệt"  # the approver's name on a result a batch issues
BATCH_OPINION = "Thẩm định trong quy trình trả kết quả theo lô (hoso issue-result)"


def _content(services: Services, record: DossierRecord, verification_code: str, when: datetime) -> ResultContent:
    procedure = services.catalog.procedure(record.procedure)
    applicant = applicant_of(record)
    return ResultContent(
        dossier_code=record.code,
        procedure_label=procedure.label,
        procedure_code=procedure.national_code,
        applicant_name=applicant.name,
        applicant_id=applicant.id_number,
        agency_name=services.settings.agency_name,
        issued_at=when,
        verification_code=verification_code,
        public_url=services.settings.public_url,
        body_lines=[
            f"Hồ sơ {record.code} đã được giải quyết theo thủ tục \"{procedure.label}\".",
            "Kết quả điện tử này có giá trị pháp lý như bản giấy (Nghị định 45/2020/NĐ-CP).",
            f"Mã tra cứu: {verification_code}",
        ],
    )


def approve(
    services: Services, code: str, actor: Actor, *, claim: Claim | None = None, now: datetime | None = None
) -> StepOutcome:
    """The leader approves: the e-result is rendered with a new verification code and signed by the approver."""
    s = services.settings

    def work(record: DossierRecord, _role: Any, when: datetime) -> Work:
        code_ = secrets.token_hex(5).upper()
        pdf = sign_as_approver(
            _content(services, record, code_, when), services.keys,
            approver_name=APPROVER_NAME if actor.batch else actor.display_name, agency_name=s.agency_name,
            timestamp_url=s.tsa_url, level=Level(s.level_result), trust_roots=services.trust_roots,
        )
        done = Work(detail={"result": {"verification_code": code_}})
        done.add(keys.RESULT_APPROVED, keys.approved_result_key(code), pdf, {"verification-code": code_})
        return done

    return run_step(services, code, "approve", actor, work=work, claim=claim, end_claim=False, now=now)


def _verification_code(record: DossierRecord) -> str:
    for event in reversed(record.events):
        if event.action == "approve" and event.detail:
            return str(event.detail["result"]["verification_code"])
    raise InvalidState(f"dossier {record.code} has no approval to seal", "Kết quả chưa được lãnh đạo phê duyệt.")


def seal(
    services: Services, code: str, actor: Actor, *, claim: Claim | None = None, now: datetime | None = None
) -> StepOutcome:
    """The clerk applies the agency's seal to the approved e-result (the shared seal key; the clerk is recorded).

    A dossier handed over awaiting the seal carries its old unit's paper result (:func:`paper_result`): the
    clerk seals and releases that paper, recorded as such (``detail.result.medium = "paper"``), no e-result."""
    s = services.settings

    def work(record: DossierRecord, _role: Any, when: datetime) -> Work:
        approved = record.artifacts.get(keys.RESULT_APPROVED)
        if approved is None and paper_result(record):
            return Work(detail={"result": {"medium": "paper", "approved_by": record.handed_over_from}})
        if approved is None:
            raise InvalidState(f"dossier {code} has no approved result", "Chưa có kết quả được lãnh đạo ký duyệt.")
        pdf = read_recorded(services.store, approved)
        verification = _verification_code(record)
        sealed = seal_result(
            pdf, services.keys, dossier_code=code, agency_name=s.agency_name, timestamp_url=s.tsa_url,
            level=Level(s.level_result), trust_roots=services.trust_roots, seal_image=s.seal_image,
        )
        key = keys.result_key(code)
        done = Work(detail={"result": {"verification_code": verification, "sealed_with": "agency seal key"}})
        done.add(keys.RESULT, key, sealed, {"verification-code": verification})
        done.result = IssuedResult(code, key, verification, sealed)
        return done

    return run_step(services, code, "seal", actor, work=work, claim=claim, end_claim=False, now=now)


def issue_result(
    code: str,
    services: Services,
    *,
    actor: Actor | None = None,
    payment: Payment | None = None,
    delivery: Delivery | None = None,
    now: datetime | None = None,
) -> IssuedResult:
    """Every remaining step to a returned e-result in one run (forward, appraise, approve, seal, return as
    the lifecycle orders them from where the dossier is), for batch use: the audit trail records each
    step as taken by the batch (``batch:issue-result``). Delivery defaults to online.

    The run claims the dossier before it signs or writes anything: of several runs at once, one goes
    ahead, the others get DossierBusy (in progress) or InvalidState (done). A fee that certainly applies
    needs ``payment`` (or one recorded before), checked first. A failure leaves the steps done so far
    recorded; the next run goes on from there.
    """
    actor = actor or Actor.for_batch("issue-result")
    lc = load_lifecycle()
    record = services.registry.get(code)
    if record.state == DossierState.returned:
        raise _done(code)
    if paper_result(record):
        raise InvalidState(
            f"dossier {code} carries its old unit's paper result (handed over from {record.handed_over_from}): "
            "no e-result to issue; seal and return the paper result "
            "(hoso step seal, hoso step return --channel counter|post)",
            f"Hồ sơ {code} được bàn giao kèm kết quả giấy của đơn vị cũ: không phát hành kết quả điện tử; "
            "vui lòng đóng dấu, phát hành và trả kết quả giấy tại quầy hoặc qua bưu chính.",
        )
    steps = lc.path(record.state, DossierState.returned)
    for t in steps:
        lc.authorize(t, actor)
    if payment is None:
        check_payment(services, record)
    planned = record.state

    def unchanged(row: Any) -> None:
        if row.state == DossierState.returned.value:
            raise _done(code)
        if row.state != planned.value:
            raise DossierBusy(
                f"dossier {code} moved from {planned.value!r} to {row.state!r} meanwhile",
                f"Hồ sơ {code} vừa được chuyển sang bước khác; vui lòng kiểm tra lại.",
            )

    ident = identity(services)
    claim = ident.claim(code, "issue-result", actor.username, check=unchanged, ttl=CLAIM_TTL)
    when = now or datetime.now(UTC)
    issued: IssuedResult | None = None
    try:
        for t in steps:
            if t.name == "forward":
                forward(services, code, actor, claim=claim, now=when)
            elif t.name == "appraise":
                appraise(services, code, actor, opinion=BATCH_OPINION, claim=claim, now=when)
            elif t.name == "approve":
                approve(services, code, actor, claim=claim, now=when)
            elif t.name == "seal":
                issued = seal(services, code, actor, claim=claim, now=when).result
            elif t.name == "return":
                return_result(services, code, actor, delivery=delivery or Delivery(channel="online"),
                              payment=payment, claim=claim, now=when)
            else:  # the lifecycle file gained a step on the way that this batch does not know
                raise InvalidState(f"issue-result cannot take step {t.name!r}")
    finally:
        ident.release(claim)
    if issued is None:  # sealed before this run: the stored result
        record = services.registry.get(code)
        stored = record.artifacts[keys.RESULT]
        pdf = read_recorded(services.store, stored)
        issued = IssuedResult(code, stored.object_key, _verification_code(record), pdf)
    return issued


def _done(code: str) -> InvalidState:
    return InvalidState(
        f"dossier {code} is returned already: nothing to issue",
        f"Hồ sơ {code} đã được trả kết quả trước đó.",
    )
