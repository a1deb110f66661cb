"""Dossiers at any point of their lifecycle, made the way the desk and the steps make them (no OCR)."""

from __future__ import annotations

import hashlib
import itertools
from datetime import datetime, timedelta

from pipeline.core.models import DossierState, Receipt, Role
from pipeline.domain.deadlines import due_date
from pipeline.domain.lifecycle import Actor, Delivery, Payment
from pipeline.usecases import clerk
from pipeline.usecases import lifecycle as lc
from pipeline.usecases.services import Services
from storage.records import holder_id, new_attempt_id
from storage.registry import LegacyIntake

S = DossierState
PROCEDURE = "business_household_registration"
APPLICANT = "001085012345"
_counter = itertools.count(1)


def actor(name: str, *roles: Role) -> Actor:
    return Actor(username=name, display_name=name.capitalize(), roles=frozenset(roles))


DESK = actor("lan", Role.desk)
SPECIALIST = actor("minh", Role.specialist)
APPROVER = actor("hung", Role.approver)
CLERK = actor("thu", Role.clerk)
PAYMENT = Payment(method="bank_transfer", reference="FT25195000123")


def receive(
    services: Services, received_at: datetime, *, status: str = "accepted", procedure: str = PROCEDURE,
    desk: Actor = DESK,
) -> tuple[str, lc.FormIssued | None]:
    """What ``hoso ingest`` records for a dossier (reservation, intake, the desk's form), without the OCR."""
    registry = services.registry
    n = next(_counter)
    days = services.catalog.procedure(procedure).processing_days
    due = due_date(received_at, days, services.settings.timezone)
    rec = registry.reserve(
        input_sha256=hashlib.sha256(f"input-{n}-{received_at}".encode()).hexdigest(), input_name=f"scan-{n}.pdf",
        procedure=procedure, procedure_code=None, agency_code=services.settings.agency_code,
        received_at=received_at, due_at=due, applicant_id=APPLICANT, actor=desk.username,
    )
    receipt = Receipt(
        dossier_code=rec.code, procedure=procedure, status=status, received_at=received_at,  # type: ignore[arg-type]
        due_at=due, applicant_id=APPLICANT, pages=[], documents=[], missing=[["giay_de_nghi_dang_ky_ho_kinh_doanh"]]
        if status == "needs_supplement" else [], unexpected=[],
        reasons_vi=["Thiếu giấy đề nghị đăng ký hộ kinh doanh"] if status != "accepted" else [],
    )
    state = lc.STATE_OF_STATUS[status]
    registry.finalize_intake(rec.code, state=state, intake_status=status, documents=[], artifacts=[],
                             receipt=receipt.model_dump(mode="json"), actor=desk.username, at=received_at)
    form = lc.issue_intake_forms(services, receipt, desk, now=received_at)
    return rec.code, form


def hand_over(services: Services, state: DossierState, received_at: datetime, *, old: str = "000.21.00.H56") -> str:
    """What an archive batch records for a legacy dossier handed over in ``state`` (its own code and dates, the
    new unit, a ``handover`` event), without the OCR."""
    n = next(_counter)
    code = f"{old}-{received_at:%y%m%d}-{n:04d}"
    attempt = new_attempt_id()
    due = due_date(received_at, services.catalog.procedure(PROCEDURE).processing_days, services.settings.timezone)
    services.registry.claim_intake(
        input_sha256=hashlib.sha256(f"legacy-{n}".encode()).hexdigest(), input_name=f"legacy-{n}.pdf",
        procedure=PROCEDURE, procedure_code=None, agency_code=services.settings.agency_code,
        received_at=received_at, due_at=due, applicant_id=APPLICANT, actor="archive", attempt=attempt,
        holder=holder_id(), lease_for=timedelta(minutes=2), legacy=LegacyIntake(code, old, "batch-1"),
    )
    services.registry.finalize_intake(
        code, state=state, intake_status="accepted", documents=[], artifacts=[], actor="archive", attempt=attempt,
        receipt={"dossier_code": code, "documents": []},
        handover_note=f"handed over from {old} to {services.settings.agency_code} by batch-1",
    )
    return code


def take(services: Services, name: str, code: str, who: Actor, *, now: datetime | None = None) -> lc.StepOutcome:
    """Step ``name`` with everything it needs (an opinion, a reason, a delivery, a payment)."""
    if name == "forward":
        return lc.forward(services, code, who, now=now)
    if name == "appraise":
        return lc.appraise(services, code, who, opinion="Hồ sơ đủ điều kiện", now=now)
    if name == "approve":
        return clerk.approve(services, code, who, now=now)
    if name == "seal":
        return clerk.seal(services, code, who, now=now)
    if name == "pay":
        return lc.record_payment(services, code, who, PAYMENT, now=now)
    if name == "return":
        return lc.return_result(services, code, who, delivery=Delivery(channel="counter"), now=now)
    if name == "request_supplement":
        return lc.request_supplement(services, code, who, reasons=["Bản sao CCCD không rõ"], missing=[["cccd"]],
                                     now=now)
    if name == "supplemented":
        return lc.receive_supplement(services, code, who, note="Đã nhận bản bổ sung", now=now)
    if name == "refuse":
        return lc.refuse(services, code, who, reasons=["Không bổ sung trong thời hạn"], now=now)
    if name == "extend":
        due = lc.appointment(services.registry.get(code))
        return lc.extend(services, code, who, working_days=2, reason="Cần xác minh thêm tại địa phương",
                         now=now or due - timedelta(hours=1))
    if name == "stop":
        return lc.stop(services, code, who, reason="Cơ quan có thẩm quyền yêu cầu dừng", now=now)
    if name == "withdraw":
        return lc.withdraw(services, code, who, reason="Công dân có đơn xin rút hồ sơ", now=now)
    raise ValueError(name)


#: Who takes each step on the way to a state, from `received`.
ROUTE: dict[DossierState, list[tuple[str, Actor]]] = {
    S.received: [],
    S.needs_supplement: [("request_supplement", DESK)],
    S.appraisal: [("forward", DESK)],
    S.approval: [("forward", DESK), ("appraise", SPECIALIST)],
    S.sealing: [("forward", DESK), ("appraise", SPECIALIST), ("approve", APPROVER)],
    S.result_ready: [("forward", DESK), ("appraise", SPECIALIST), ("approve", APPROVER), ("seal", CLERK)],
    S.returned: [("forward", DESK), ("appraise", SPECIALIST), ("approve", APPROVER), ("seal", CLERK),
                 ("return", DESK)],
    S.rejected: [("request_supplement", DESK), ("refuse", DESK)],
    S.stopped: [("stop", APPROVER)],
    S.withdrawn: [("withdraw", DESK)],
}


def dossier_in(services: Services, state: DossierState, received_at: datetime, **kw: object) -> str:
    """A dossier received at ``received_at`` and taken to ``state`` by the named users of :data:`ROUTE`."""
    code, _ = receive(services, received_at, **kw)  # type: ignore[arg-type]
    for name, who in ROUTE[state]:
        take(services, name, code, who, now=received_at + timedelta(minutes=1))
    assert services.registry.get(code).state == state
    return code
