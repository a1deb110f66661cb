"""The clerk: appraise, approve and return an electronic result signed by the approver and sealed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.core.errors import InvalidState
from pipeline.core.models import DossierState
from pipeline.domain.results import ResultContent, issue_signed_result
from pipeline.usecases.services import Services
from signing.levels import Level
from storage import keys

RESULT_ALLOWED_FROM = {DossierState.received}
APPROVER_NAME = "Lãnh đạo phê duyệt"


@dataclass
class IssuedResult:
    dossier_code: str
    object_key: str
    verification_code: str
    pdf: bytes = field(repr=False)


def issue_result(
    code: str, services: Services, *, actor: str = "approver", now: datetime | None = None
) -> IssuedResult:
    """Render, sign (approver, then seal), store the e-result and move the dossier to 'returned'."""
    record = services.registry.get(code)
    if record.state not in RESULT_ALLOWED_FROM:
        raise InvalidState(
            f"dossier {code} is {record.state}; a result can be issued only from {sorted(RESULT_ALLOWED_FROM)}",
            f"Hồ sơ {code} đang ở trạng thái '{record.state}', chưa thể trả kết quả.",
        )
    procedure = services.catalog.procedure(record.procedure)
    receipt = record.receipt_json or {}
    applicant_name = next(
        (d.fields.get("full_name") for d in record.documents if d.fields.get("full_name")), None
    )
    verification_code = secrets.token_hex(5).upper()
    content = ResultContent(
        dossier_code=code,
        procedure_label=procedure.label,
        procedure_code=procedure.national_code,
        applicant_name=applicant_name,
        applicant_id=record.applicant_id or receipt.get("applicant_id"),
        agency_name=services.settings.agency_name,
        issued_at=now or datetime.now(UTC),
        verification_code=verification_code,
        body_lines=[
            f"Hồ sơ {code} đã được giải quyết theo thủ tục \"{procedure.label}\".",
            "Kết quả điện tử này có giá trị pháp lý như bản giấy (Nghị định 45/2020/NĐ-CP).",
            f"Mã tra cứu: {verification_code}",
        ],
    )
    pdf = issue_signed_result(
        content,
        services.keys,
        approver_name=APPROVER_NAME,
        agency_name=services.settings.agency_name,
        timestamp_url=services.settings.tsa_url,
        level=Level(services.settings.level_result),
        trust_roots=services.trust_roots,
        seal_image=services.settings.seal_image,
    )
    key = keys.result_key(code)
    info = services.store.put_bytes(
        key, pdf, "application/pdf", metadata={"verification-code": verification_code}
    )
    services.registry.transition(
        code,
        DossierState.returned,
        actor=actor,
        action="result_issued",
        note=f"verification code {verification_code}",
        artifacts=[(keys.RESULT, info)],
        allowed_from=RESULT_ALLOWED_FROM,
    )
    return IssuedResult(code, key, verification_code, pdf)
