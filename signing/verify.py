"""Verify every signature of a PDF against given trust roots and report in English and Vietnamese.

Validation is offline: the trust anchors are the roots passed in, no certificate or revocation
information is fetched, and revocation is not checked (the dev PKI publishes none; each report says so
as information, not as a failure).

An input that is not a readable PDF raises :class:`pipeline.errors.InputCorrupt` (``InputEmpty`` for
0 bytes, ``InputEncrypted`` for an encrypted PDF) rather than returning a report: "this is not a
PDF" and "the signatures are bad" are different answers with different exit codes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from pydantic import BaseModel
from pyhanko.keys import load_certs_from_pemder_data
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import (
    EmbeddedPdfSignature,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    PdfSignatureStatus,
    TimestampSignatureStatus,
)
from pyhanko_certvalidator import ValidationContext

from pipeline.errors import ConfigurationError, InputCorrupt, InputEmpty, InputEncrypted

__all__ = ["SignatureReport", "VerificationReport", "load_trust_roots", "verify_pdf"]

REVOCATION_INFO = "info: revocation status not checked (offline validation)"
# Later signatures and filling prepared form fields are fine; anything beyond is not.
_ACCEPTABLE = ModificationLevel.FORM_FILLING


class SignatureReport(BaseModel):
    """The verdict on one signature (or document timestamp) of the PDF."""

    field: str
    signer: str
    signing_time: dt.datetime | None
    intact: bool
    trusted: bool
    coverage: str
    modification_level: str
    ok: bool
    problems: list[str]


class VerificationReport(BaseModel):
    """The verdict on all signatures of a PDF; ``ok`` needs at least one signature, all of them ok."""

    signatures: list[SignatureReport]
    ok: bool
    summary_en: str
    summary_vi: str


def load_trust_roots(trust_roots: Sequence[bytes | Path]) -> list[asn1_x509.Certificate]:
    """Parse trust roots given as PEM/DER bytes or paths to PEM/DER files (several per file allowed)."""
    certs: list[asn1_x509.Certificate] = []
    for item in trust_roots:
        try:
            data = Path(item).read_bytes() if isinstance(item, Path) else bytes(item)
            found = list(load_certs_from_pemder_data(data))
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot read trust root {exc.filename}: {exc.strerror}",
                "Không đọc được chứng thư gốc tin cậy.",
            ) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "A trust root is not a PEM or DER certificate", "Chứng thư gốc tin cậy không hợp lệ."
            ) from exc
        if not found:
            raise ConfigurationError(
                "A trust root holds no certificate", "Chứng thư gốc tin cậy không hợp lệ."
            )
        certs.extend(found)
    return certs


def _open(pdf: bytes) -> PdfFileReader:
    if not pdf:
        raise InputEmpty("The file to verify is empty")
    if b"%PDF-" not in pdf[:1024]:  # the header may follow a little junk, as readers tolerate
        raise InputCorrupt("The file to verify is not a PDF", "Tệp cần kiểm tra không phải là tệp PDF.")
    try:
        reader = PdfFileReader(BytesIO(pdf))
        encrypted = reader.encrypted
        if not encrypted:
            reader.root  # noqa: B018  (forces the trailer and catalog to be parsed now)
    except Exception as exc:  # a damaged PDF can fail in many ways inside the parser
        raise InputCorrupt(
            f"The PDF cannot be parsed ({type(exc).__name__}: {exc})",
            "Tệp PDF bị hỏng, không đọc được để kiểm tra chữ ký.",
        ) from exc
    if encrypted:
        raise InputEncrypted("The PDF is encrypted; signatures of encrypted PDFs are not verified")
    return reader


def _common_name(cert: asn1_x509.Certificate | None) -> str:
    if cert is None:
        return ""
    native = cert.subject.native
    name = native.get("common_name") or native.get("organization_name") or cert.subject.human_friendly
    return name if isinstance(name, str) else ", ".join(name)


def _context(roots: list[asn1_x509.Certificate]) -> ValidationContext:
    # Fresh per signature: contexts cache paths and revocation state.
    return ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")


def _trust_problems(status: TimestampSignatureStatus | PdfSignatureStatus, what: str) -> list[str]:
    problems = []
    if not status.intact:
        problems.append(f"{what}: the digest does not match the signed bytes (content changed)")
    elif not status.valid:
        problems.append(f"{what}: the cryptographic signature value is invalid")
    if status.intact and status.valid and not status.trusted:
        indic = getattr(status.trust_problem_indic, "name", "no validation path")
        problems.append(f"{what}: certificate does not chain to a trusted root ({indic})")
    return problems


def _integrity(status: PdfSignatureStatus | DocumentTimestampStatus) -> tuple[str, str, bool, list[str]]:
    coverage = status.coverage.name if status.coverage is not None else "UNKNOWN"
    level = status.modification_level
    level_name = level.name if level is not None else "UNKNOWN"
    problems = []
    if coverage not in ("ENTIRE_FILE", "ENTIRE_REVISION"):
        problems.append(f"signature covers an unusual byte range ({coverage})")
    acceptable = level is not None and level <= _ACCEPTABLE and bool(status.docmdp_ok)
    if not acceptable:
        problems.append(f"the document was changed after signing in a way not allowed ({level_name})")
    return coverage, level_name, acceptable and not problems, problems


async def _check_signature(sig: EmbeddedPdfSignature, roots: list[asn1_x509.Certificate]) -> SignatureReport:
    field = sig.field_name
    try:
        status = await async_validate_pdf_signature(
            sig, signer_validation_context=_context(roots), ts_validation_context=_context(roots)
        )
    except Exception as exc:  # noqa: BLE001 — a broken CMS blob must fail closed, not crash
        return _broken(field, exc)
    problems = _trust_problems(status, "signature")
    coverage, level, integrity_ok, integrity_problems = _integrity(status)
    problems += integrity_problems
    signing_time = status.signer_reported_dt
    ts = status.timestamp_validity
    if ts is not None:
        signing_time = ts.timestamp
        problems += _trust_problems(ts, "signature timestamp")
    ok = status.bottom_line and not problems and integrity_ok
    if not status.bottom_line and not problems:
        problems.append("pyHanko's overall judgement is negative")
    return SignatureReport(
        field=field,
        signer=_common_name(status.signing_cert),
        signing_time=signing_time,
        intact=status.intact and status.valid,
        trusted=status.trusted,
        coverage=coverage,
        modification_level=level,
        ok=ok,
        problems=[*problems, REVOCATION_INFO],
    )


async def _check_timestamp(sig: EmbeddedPdfSignature, roots: list[asn1_x509.Certificate]) -> SignatureReport:
    field = sig.field_name
    try:
        status = await async_validate_pdf_timestamp(sig, validation_context=_context(roots))
    except Exception as exc:  # noqa: BLE001
        return _broken(field, exc)
    problems = _trust_problems(status, "document timestamp")
    coverage, level, integrity_ok, integrity_problems = _integrity(status)
    problems += integrity_problems
    return SignatureReport(
        field=field,
        signer=_common_name(status.signing_cert),
        signing_time=status.timestamp,
        intact=status.intact and status.valid,
        trusted=status.trusted,
        coverage=coverage,
        modification_level=level,
        ok=not problems and integrity_ok,
        problems=[*problems, REVOCATION_INFO],
    )


def _broken(field: str, exc: Exception) -> SignatureReport:
    return SignatureReport(
        field=field,
        signer="",
        signing_time=None,
        intact=False,
        trusted=False,
        coverage="UNKNOWN",
        modification_level="UNKNOWN",
        ok=False,
        problems=[f"signature cannot be processed ({type(exc).__name__}: {exc})"],
    )


async def _check_all(reader: PdfFileReader, roots: list[asn1_x509.Certificate]) -> list[SignatureReport]:
    reports = []
    for sig in reader.embedded_signatures:
        if sig.sig_object_type == "/DocTimeStamp":
            reports.append(await _check_timestamp(sig, roots))
        else:
            reports.append(await _check_signature(sig, roots))
    return reports


def _summaries(reports: list[SignatureReport]) -> tuple[str, str]:
    n = len(reports)
    if n == 0:
        return "No digital signature found.", "Tài liệu không có chữ ký số."
    bad = [r for r in reports if not r.ok]
    if not bad:
        return (
            f"{n} signature(s), all intact and trusted; no disallowed changes after signing.",
            f"Tài liệu có {n} chữ ký số, tất cả hợp lệ và tin cậy; không bị sửa đổi sau khi ký.",
        )
    first = bad[0]
    reason = next((p for p in first.problems if not p.startswith("info:")), "invalid")
    en = f"{len(bad)} of {n} signature(s) NOT valid; field {first.field!r}: {reason}."
    if not first.intact:
        vi_reason = "nội dung đã bị thay đổi sau khi ký"
    elif not first.trusted:
        vi_reason = "chứng thư ký không thuộc tổ chức cung cấp dịch vụ tin cậy"
    else:
        vi_reason = "tài liệu bị sửa đổi trái phép sau khi ký"
    vi = f"Có {len(bad)}/{n} chữ ký số KHÔNG hợp lệ ({vi_reason})."
    return en, vi


def verify_pdf(pdf: bytes, trust_roots: Sequence[bytes | Path]) -> VerificationReport:
    """Validate every signature and document timestamp of ``pdf`` offline against ``trust_roots``.

    A signature is ok when its digest and signature value are intact, its certificate chains to one of
    ``trust_roots`` (with the non-repudiation key usage) and any later change to the document is at
    most a further signature or form filling. The report is ok when there is at least one signature
    and all are ok.
    """
    roots = load_trust_roots(trust_roots)
    reader = _open(pdf)
    reports = asyncio.run(_check_all(reader, roots))
    en, vi = _summaries(reports)
    return VerificationReport(
        signatures=reports, ok=bool(reports) and all(r.ok for r in reports), summary_en=en, summary_vi=vi
    )
