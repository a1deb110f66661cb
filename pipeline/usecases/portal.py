"""What the public pages ask: a citizen's lookup (with its secret), an e-result's check from its QR.

Both answer the same for an unknown dossier and a wrong secret or verification code (``None`` / Forbidden),
so that sequential dossier codes reveal nothing to someone without the paper in hand.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.core.errors import DossierNotFound
from pipeline.core.models import DossierState
from pipeline.domain.lifecycle import CHANNEL_VI
from pipeline.usecases.lifecycle import PublicStatus, citizen_lookup
from pipeline.usecases.services import Services
from signing.verify import VerificationReport, verify_pdf
from storage import keys
from storage.records import read_recorded
from storage.registry import DossierRecord


class CitizenStatus(BaseModel):
    """The lookup page: the dossier's status, what is missing while it waits on the citizen, and how the
    result was handed over."""

    status: PublicStatus
    missing: list[list[str]] = []  # labels; alternatives of each slot
    reasons: list[str] = []
    delivery_channel: str | None = None
    delivery_label: str | None = None
    tracking_number: str | None = None


def _missing(services: Services, record: DossierRecord) -> tuple[list[list[str]], list[str]]:
    """The newest request to supplement: its slots (document labels) and reasons."""
    if record.state != DossierState.needs_supplement:
        return [], []
    for event in reversed(record.events):
        if event.action == "request_supplement":
            slots = (event.detail or {}).get("missing") or []
            reasons = [r.strip() for r in (event.note or "").split(";") if r.strip()]
            return [[services.catalog.label(k) for k in slot] for slot in slots], reasons
    receipt = record.receipt_json or {}  # asked at intake
    slots = receipt.get("missing") or []
    return [[services.catalog.label(k) for k in slot] for slot in slots], list(receipt.get("reasons_vi") or [])


def _delivery(record: DossierRecord) -> dict[str, Any]:
    for event in reversed(record.events):
        if event.action == "return" and event.detail and event.detail.get("delivery"):
            return dict(event.detail["delivery"])
    return {}


def citizen_status(services: Services, code: str, secret: str) -> CitizenStatus:
    """The lookup of dossier ``code`` for the holder of ``secret``; Forbidden (the same for an unknown code)
    otherwise."""
    status = citizen_lookup(services, code, secret)
    record = services.registry.get(code)
    missing, reasons = _missing(services, record)
    delivery = _delivery(record)
    channel = delivery.get("channel")
    return CitizenStatus(
        status=status, missing=missing, reasons=reasons, delivery_channel=channel,
        delivery_label=CHANNEL_VI.get(channel) if channel else None, tracking_number=delivery.get("tracking_number"),
    )


class ResultCheck(BaseModel):
    """An issued e-result found by its dossier code and verification code, and the verdict on its signatures."""

    dossier_code: str
    procedure_label: str
    issued_at: datetime
    report: VerificationReport


def _verification_code(record: DossierRecord) -> str | None:
    for event in reversed(record.events):
        result = (event.detail or {}).get("result")
        if event.action in ("seal", "approve") and isinstance(result, dict) and result.get("verification_code"):
            return str(result["verification_code"])
    return None


def check_issued_result(services: Services, code: str, verification_code: str) -> ResultCheck | None:
    """The stored e-result of ``code`` verified (approver, then the agency seal) when ``verification_code``
    is the one printed on it; None for an unknown dossier, no result yet, or a wrong code."""
    try:
        record = services.registry.get(code)
    except DossierNotFound:
        return None
    artifact = record.artifacts.get(keys.RESULT)
    expected = _verification_code(record)
    given = verification_code.strip().upper()
    if artifact is None or expected is None or not hmac.compare_digest(given.encode(), expected.upper().encode()):
        return None
    pdf = read_recorded(services.store, artifact)
    report = verify_pdf(pdf, _roots(services), identities=services.signer_identities, profile="result")
    return ResultCheck(dossier_code=code, procedure_label=services.catalog.procedure(record.procedure).label,
                       issued_at=artifact.created_at, report=report)


def check_uploaded_pdf(services: Services, pdf: bytes) -> VerificationReport:
    """Every signature of a PDF anyone uploads, against this agency's trust roots and signer identities."""
    return verify_pdf(pdf, _roots(services), identities=services.signer_identities, profile="auto")


def _roots(services: Services) -> list[bytes | Path]:
    return [c.dump() for c in services.trust_roots]
