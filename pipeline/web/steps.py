"""The lifecycle steps as forms: which inputs each step's form has, and the use case each one calls.

The role and state checks are the lifecycle's (:mod:`pipeline.usecases.lifecycle`), not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from pipeline.core.errors import InvalidRequest
from pipeline.domain.lifecycle import Actor, Delivery, Payment
from pipeline.usecases import clerk, lifecycle
from pipeline.usecases.lifecycle import StepOutcome
from pipeline.usecases.services import Services

#: The inputs of each step's form (name -> kind): note (one line of text), lines (one item a line),
#: channel (counter / post / online), tracking, method, reference, days.
FIELDS: dict[str, list[tuple[str, str]]] = {
    "forward": [("note", "note")],
    "appraise": [("note", "note")],
    "approve": [],
    "seal": [],
    "request_supplement": [("reasons", "lines"), ("missing", "lines")],
    "supplemented": [("note", "note")],
    "refuse": [("reasons", "lines")],
    "stop": [("note", "note")],
    "withdraw": [("note", "note")],
    "extend": [("days", "days"), ("note", "note")],
    "pay": [("method", "method"), ("reference", "reference")],
    "return": [("channel", "channel"), ("tracking", "tracking"), ("method", "method"), ("reference", "reference")],
}

Get = Callable[[str], str]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _payment(get: Get, required: bool) -> Payment | None:
    reference = get("reference").strip()
    if not reference and not required:
        return None
    try:
        return Payment.model_validate({"method": get("method") or "bank_transfer", "reference": reference})
    except ValidationError as err:
        raise InvalidRequest(f"payment: {err.errors()[0]['msg']}",
                             "Mã thanh toán không hợp lệ (chuyển khoản hoặc cổng thanh toán).") from None


def _delivery(get: Get) -> Delivery:
    tracking = get("tracking").strip() or None
    try:
        return Delivery(channel=get("channel") or "counter", tracking_number=tracking)  # type: ignore[arg-type]
    except ValidationError:
        raise InvalidRequest("delivery: channel or tracking number invalid",
                             "Hình thức trả kết quả không hợp lệ: gửi bưu chính cần mã bưu gửi (và chỉ khi gửi bưu "
                             "chính).") from None


def take(services: Services, code: str, action: str, actor: Actor, get: Get) -> StepOutcome:
    """Run step ``action`` on dossier ``code`` with the form's values (``get(name)``; "" when absent)."""
    note = get("note").strip() or None
    if action == "forward":
        return lifecycle.forward(services, code, actor, note=note)
    if action == "appraise":
        return lifecycle.appraise(services, code, actor, opinion=note or "")
    if action == "approve":
        return clerk.approve(services, code, actor)
    if action == "seal":
        return clerk.seal(services, code, actor)
    if action == "request_supplement":
        missing = [[k.strip() for k in line.split("|") if k.strip()] for line in _lines(get("missing"))]
        unknown = [k for slot in missing for k in slot if k not in services.catalog.doc_types]
        if unknown:
            raise InvalidRequest(f"unknown document types {unknown}",
                                 f"Loại giấy tờ không có trong danh mục: {', '.join(unknown)}.")
        return lifecycle.request_supplement(services, code, actor, reasons=_lines(get("reasons")), missing=missing)
    if action == "supplemented":
        return lifecycle.receive_supplement(services, code, actor, note=note)
    if action == "refuse":
        return lifecycle.refuse(services, code, actor, reasons=_lines(get("reasons")))
    if action == "stop":
        return lifecycle.stop(services, code, actor, reason=note or "")
    if action == "withdraw":
        return lifecycle.withdraw(services, code, actor, reason=note or "")
    if action == "extend":
        try:
            days = int(get("days") or "0")
        except ValueError:
            raise InvalidRequest("days must be a number", "Số ngày gia hạn phải là số.") from None
        return lifecycle.extend(services, code, actor, working_days=days, reason=note or "")
    if action == "pay":
        payment = _payment(get, required=True)
        assert payment is not None
        return lifecycle.record_payment(services, code, actor, payment)
    if action == "return":
        return lifecycle.return_result(services, code, actor, delivery=_delivery(get), payment=_payment(get, False))
    raise InvalidRequest(f"no form for step {action!r}", "Bước xử lý này không thực hiện được từ trang web.")

