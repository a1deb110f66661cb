"""Verify every signature of a PDF against given trust roots and report in English and Vietnamese.

Validation is offline: the trust anchors are the roots passed in and nothing is fetched. Signatures
go through pyHanko's AdES long-term (LTA) validation: a signature is judged at its proven signing time
(signature timestamp, document timestamps) with the OCSP/CRL data embedded in the PDF, so a B-LT/B-LTA
file keeps verifying after those responses and the signer's certificate expire. The newest document
timestamp is the archive's own anchor: its TSA certificate is assumed not revoked at validation time
(renew it with ``hoso signing refresh`` long before that certificate expires). A certificate that names
no OCSP responder or CRL (the dev PKI) cannot be checked for revocation; its report says so as info.

An input that is not a readable PDF raises :class:`pipeline.core.errors.InputCorrupt` (``InputEmpty`` for
0 bytes, ``InputEncrypted`` for an encrypted PDF) rather than returning a report: "this is not a
PDF" and "the signatures are bad" are different answers with different exit codes.

Names in the document prove nothing: the role a signature claims (its field name, its reason) holds
only when its certificate is configured for that role (:class:`signing.identities.SignerIdentities`).
Changes after the last signature other than validation data fail verification
(:mod:`signing.changes`), and so does an e-result (:data:`signing.changes.E_RESULT_TYPE`) that is not
signed by the approver and then sealed by the agency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Literal

from asn1crypto import x509 as asn1_x509
from pydantic import BaseModel
from pyhanko.keys import load_certs_from_pemder_data
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel, SuspiciousModification
from pyhanko.sign.validation import (
    EmbeddedPdfSignature,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.ades import AdESLTAValidationResult, ades_lta_validation
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    PdfSignatureStatus,
    TimestampSignatureStatus,
)
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import (
    NO_REVOCATION,
    REQUIRE_REVINFO,
    CertRevTrustPolicy,
    FreshnessReqType,
    NonRevokedStatusAssertion,
)
from pyhanko_certvalidator.registry import SimpleTrustManager

from pipeline.core.errors import ConfigurationError, InputCorrupt, InputEmpty, InputEncrypted
from signing.changes import DIFF_POLICY, Finding, changes_after_last_signature, is_e_result
from signing.identities import SignerIdentities
from signing.levels import has_revocation_pointers

__all__ = ["Profile", "SignatureReport", "VerificationReport", "load_trust_roots", "verify_pdf"]

#: ``result``: an e-result (the approver's signature, then the agency seal's); ``basic``: every
#: signature holds; ``auto``: ``result`` for files whose metadata marks them as hoso e-results.
Profile = Literal["auto", "result", "basic"]
RESULT_ROLES = ["approver", "seal"]

REVOCATION_INFO = "info: revocation status not checked (the certificate names no OCSP responder or CRL)"
REVOCATION_NOT_EMBEDDED = (
    "info: revocation status not checked (no revocation data embedded: B-B/B-T; offline validation "
    "cannot detect a revoked certificate — sign at B-LT or higher)"
)
#: Signature field names hoso creates, and the role each claims (compared without case or separators).
FIELD_ROLES = {"CanBoTiepNhan": "officer", "officer": "officer", "approver": "approver", "seal": "seal"}
#: Beginnings of the signing reasons hoso writes, and the role each claims.
REASON_ROLES = {
    "Chứng thực bản số hóa": "officer",
    "Phê duyệt kết quả": "approver",
    "Đóng dấu xác nhận kết quả": "seal",
}
ROLE_VI = {"officer": "cán bộ tiếp nhận", "approver": "lãnh đạo phê duyệt", "seal": "con dấu cơ quan"}
# Later signatures and filling prepared form fields are fine; anything beyond is not.
_ACCEPTABLE = ModificationLevel.FORM_FILLING


class SignatureReport(BaseModel):
    """The verdict on one signature (or document timestamp) of the PDF."""

    field: str
    kind: str = "signature"  # or "document_timestamp"
    signer: str
    role: str = ""  # officer / approver / seal: the role its certificate is configured for, else ""
    claimed_role: str = ""  # the role the document claims for it (field name, reason), else ""
    role_ok: bool = True  # False when the claim is not backed by the certificate
    signing_time: dt.datetime | None
    signing_time_source: str = "none"  # signature_timestamp / document_timestamp / signer_claimed
    intact: bool
    trusted: bool
    revocation: str = "not_checked"  # good / revoked / unknown / not_checked, at the signing time
    coverage: str
    modification_level: str
    certification: str | None = None  # DocMDP permission of a certification signature
    ades_indication: str = ""
    ok: bool
    problems: list[str]


class VerificationReport(BaseModel):
    """The verdict on all signatures of a PDF; ``ok`` needs at least one signature, all of them ok, and no
    problem with the document as a whole (``problems``: unsigned changes, the profile's requirements)."""

    signatures: list[SignatureReport]
    ok: bool
    validation_time: dt.datetime | None = None
    profile: str = "basic"  # the profile applied: basic / result
    problems: list[str] = []
    problems_vi: list[str] = []
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
            reader.embedded_signatures  # noqa: B018  (and the signature fields, kept by the reader)
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


def _context(roots: list[asn1_x509.Certificate], when: dt.datetime | None = None) -> ValidationContext:
    # Fresh per signature: contexts cache paths and revocation state.
    return ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail", moment=when)


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
    acceptable = level is not None and level <= _ACCEPTABLE and status.docmdp_ok is not False
    if not acceptable:
        why = status.diff_result if isinstance(status.diff_result, SuspiciousModification) else None
        detail = f": {why}" if why is not None and str(why) else ""
        problems.append(f"the document was changed after signing in a way not allowed ({level_name}{detail})")
    return coverage, level_name, acceptable and not problems, problems


def _lta_spec(
    roots: list[asn1_x509.Certificate], reader: PdfFileReader, when: dt.datetime, revocation: bool
) -> PdfSignatureValidationSpec:
    trust = SimpleTrustManager.build(trust_roots=roots)
    assertions = []
    stamps = reader.embedded_timestamp_signatures
    if stamps and stamps[-1].signer_cert is not None:
        assertions.append(NonRevokedStatusAssertion(stamps[-1].signer_cert.sha256, at=when))
    rev_policy = (
        CertRevTrustPolicy(
            REQUIRE_REVINFO, freshness=None, freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION
        )
        if revocation
        else CertRevTrustPolicy(NO_REVOCATION)
    )
    return PdfSignatureValidationSpec(
        SignatureValidationSpec(
            cert_validation_policy=CertValidationPolicySpec(trust_manager=trust, revinfo_policy=rev_policy),
            revinfo_gathering_policy=RevocationInfoGatheringSpec(
                online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY
            ),
            local_knowledge=LocalKnowledge(nonrevoked_assertions=assertions),
        ),
        diff_policy=DIFF_POLICY,
    )


def _folded(text: str) -> str:
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFC", text).casefold())


_FIELD_CLAIMS = {_folded(name): role for name, role in FIELD_ROLES.items()}
_REASON_CLAIMS = {_folded(prefix): role for prefix, role in REASON_ROLES.items()}


def _claimed_roles(sig: EmbeddedPdfSignature) -> set[str]:
    """The roles the document claims for ``sig``: by its field name and by its reason."""
    claims = set()
    if (role := _FIELD_CLAIMS.get(_folded(sig.field_name))) is not None:
        claims.add(role)
    try:
        reason = str(sig.sig_object.get("/Reason", ""))
    except Exception:  # noqa: BLE001 — a damaged signature dictionary claims nothing
        reason = ""
    folded = _folded(reason)
    claims |= {role for prefix, role in _REASON_CLAIMS.items() if folded.startswith(prefix)}
    return claims


def _with_role(report: SignatureReport, sig: EmbeddedPdfSignature, identities: SignerIdentities) -> SignatureReport:
    """``report`` with the role its certificate is configured for, checked against what the document claims."""
    try:
        configured = identities.roles_of(sig.signer_cert)
    except Exception:  # noqa: BLE001 — no readable certificate: no role (the report already fails)
        configured = []
    claims = _claimed_roles(sig)
    claimed = next(iter(claims)) if len(claims) == 1 else ""
    problems = []
    if len(claims) > 1:
        problems.append(f"the field name and the reason claim different roles ({', '.join(sorted(claims))})")
    elif claimed and claimed not in configured:
        whose = (
            f"it is configured for: {', '.join(configured)}" if configured
            else "it is not configured for any role" if identities
            else "no signer identities are configured"
        )
        problems.append(f"claims the {claimed} role, but its certificate is not the {claimed}'s ({whose})")
    role = claimed if claimed and claimed in configured else configured[0] if len(configured) == 1 else ""
    return report.model_copy(update={
        "role": role,
        "claimed_role": claimed,
        "role_ok": not problems,
        "ok": report.ok and not problems,
        "problems": [*problems, *report.problems],
    })


def _revocation(result: AdESLTAValidationResult, checked: bool) -> str:
    indic = str(getattr(result.ades_subindic, "name", ""))
    if "REVOKED" in indic or "REVOKED" in (result.failure_msg or ""):
        return "revoked"
    if not checked:
        return "not_checked"
    if result.ades_subindic.status.name == "PASSED":
        return "good"
    if indic in ("TRY_LATER", "REVOCATION_OUT_OF_BOUNDS_NO_POE", "NO_POE"):
        return "unknown"
    return "unknown" if "CHAIN" not in indic else "not_checked"


async def _check_signature(
    sig: EmbeddedPdfSignature, reader: PdfFileReader, roots: list[asn1_x509.Certificate], when: dt.datetime
) -> SignatureReport:
    field = sig.field_name
    cert = sig.signer_cert
    checked = has_revocation_pointers(cert)
    timing = ValidationTimingInfo(when, when, point_in_time_validation=False)
    try:
        timestamped = next(extract_tst_data_iter(sig.signer_info, signed=False), None) is not None
        has_dss = "/DSS" in reader.root
        if not (timestamped and checked and has_dss):  # B-B/B-T, or no revocation services to use
            return await _check_basic(sig, roots, when)
        result = await ades_lta_validation(sig, _lta_spec(roots, reader, when, checked), timing_info=timing)
    except Exception as exc:  # noqa: BLE001 — a broken CMS blob must fail closed, not crash
        return _broken(field, exc)
    status = result.api_status
    if status is None:
        return _broken(field, RuntimeError(result.failure_msg or "no status"))
    problems = _trust_problems(status, "signature")
    coverage, level, integrity_ok, integrity_problems = _integrity(status)
    problems += integrity_problems
    revocation = _revocation(result, checked)
    if revocation == "revoked":
        problems.append("the signer's certificate was revoked at the signing time")
    passed = result.ades_subindic.status.name == "PASSED"
    ts = status.timestamp_validity
    if ts is not None:
        signing_time, source = ts.timestamp, "signature_timestamp"
        if not passed:  # once the TSA certificate has expired only the LTA verdict (with POE) speaks for it
            problems += _trust_problems(ts, "signature timestamp")
    else:
        signing_time, source = status.signer_reported_dt, "signer_claimed"
    if not passed and not problems:
        indication = getattr(result.ades_subindic, "name", "")
        problems.append(f"long-term validation failed ({indication}): {result.failure_msg}")
    if revocation != "revoked" and any("REVOKED" in p for p in problems):
        revocation = "revoked"
    ok = passed and integrity_ok and not problems
    perms = sig.docmdp_level
    return SignatureReport(
        field=field,
        signer=_common_name(status.signing_cert),
        signing_time=signing_time,
        signing_time_source=source,
        intact=status.intact and status.valid,
        trusted=status.trusted or passed,
        revocation=revocation,
        coverage=coverage,
        modification_level=level,
        certification=perms.name if perms is not None else None,
        ades_indication=str(getattr(result.ades_subindic, "name", "")),
        ok=ok,
        problems=problems if checked else [*problems, REVOCATION_INFO],
    )


async def _check_basic(
    sig: EmbeddedPdfSignature, roots: list[asn1_x509.Certificate], when: dt.datetime
) -> SignatureReport:
    """Validation at ``when`` without revocation data (B-B/B-T, or certificates without revocation services).

    Offline and with nothing embedded, a revoked certificate is not detected: the report says
    ``revocation: not_checked``; sign at B-LT or higher to make revocation checkable.
    """
    field = sig.field_name
    status = await async_validate_pdf_signature(
        sig, signer_validation_context=_context(roots, when), ts_validation_context=_context(roots, when),
        diff_policy=DIFF_POLICY,
    )
    problems = _trust_problems(status, "signature")
    coverage, level, integrity_ok, integrity_problems = _integrity(status)
    problems += integrity_problems
    signing_time, source = status.signer_reported_dt, "signer_claimed"
    ts = status.timestamp_validity
    if ts is not None:
        signing_time, source = ts.timestamp, "signature_timestamp"
        problems += _trust_problems(ts, "signature timestamp")
    ok = status.bottom_line and not problems and integrity_ok
    if not status.bottom_line and not problems:
        problems.append("pyHanko's overall judgement is negative")
    perms = sig.docmdp_level
    checked = has_revocation_pointers(sig.signer_cert)
    return SignatureReport(
        field=field,
        signer=_common_name(status.signing_cert),
        signing_time=signing_time,
        signing_time_source=source,
        intact=status.intact and status.valid,
        trusted=status.trusted,
        revocation="not_checked",
        coverage=coverage,
        modification_level=level,
        certification=perms.name if perms is not None else None,
        ades_indication="current-time validation",
        ok=ok,
        problems=[*problems, REVOCATION_NOT_EMBEDDED]
        if checked
        else [*problems, REVOCATION_INFO],
    )


async def _check_timestamp(
    sig: EmbeddedPdfSignature, roots: list[asn1_x509.Certificate], when: dt.datetime
) -> SignatureReport:
    field = sig.field_name
    try:
        status = await async_validate_pdf_timestamp(
            sig, validation_context=_context(roots, when), diff_policy=DIFF_POLICY
        )
    except Exception as exc:  # noqa: BLE001
        return _broken(field, exc)
    problems = _trust_problems(status, "document timestamp")
    coverage, level, integrity_ok, integrity_problems = _integrity(status)
    problems += integrity_problems
    return SignatureReport(
        field=field,
        kind="document_timestamp",
        signer=_common_name(status.signing_cert),
        role="timestamp_authority",
        signing_time=status.timestamp,
        signing_time_source="document_timestamp",
        intact=status.intact and status.valid,
        trusted=status.trusted,
        coverage=coverage,
        modification_level=level,
        ok=not problems and integrity_ok,
        problems=problems,
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


async def _check_all(
    reader: PdfFileReader, roots: list[asn1_x509.Certificate], when: dt.datetime, identities: SignerIdentities
) -> list[SignatureReport]:
    sigs = list(reader.embedded_signatures)
    stamp_reports: dict[int, SignatureReport] = {}
    # Newest document timestamp first, at ``when``; each earlier one at the time of the valid timestamp
    # that covers it (its proof of existence): a renewed archive keeps verifying after old TSA
    # certificates expire.
    moment = when
    for i in reversed(range(len(sigs))):
        if sigs[i].sig_object_type == "/DocTimeStamp":
            report = stamp_reports[i] = await _check_timestamp(sigs[i], roots, moment)
            if report.ok and report.signing_time is not None:
                moment = min(moment, report.signing_time)
    reports = []
    for i, sig in enumerate(sigs):
        if i in stamp_reports:
            reports.append(stamp_reports[i])
        else:
            reports.append(_with_role(await _check_signature(sig, reader, roots, when), sig, identities))
    return reports


def _unsigned_changes(reader: PdfFileReader, pdf: bytes, reports: list[SignatureReport]) -> list[Finding]:
    """Changes after the last signature or document timestamp other than validation data."""
    findings = changes_after_last_signature(reader, pdf)
    if reports[-1].modification_level not in ("NONE", "LTA_UPDATES", "UNKNOWN"):
        findings.insert(0, Finding(
            f"the document was changed after the last signature ({reports[-1].modification_level})",
            "tài liệu bị sửa đổi sau chữ ký cuối cùng",
        ))
    return findings


def _profile_findings(reports: list[SignatureReport], profile: str) -> list[Finding]:
    if profile != "result":
        return []
    roles = [r.role or "?" for r in reports if r.kind == "signature"]
    if roles == RESULT_ROLES:
        return []
    return [Finding(
        "an e-result needs exactly the approver's signature and then the agency seal's, in that order; "
        f"found: {', '.join(roles) or 'none'}",
        "kết quả điện tử phải có chữ ký của lãnh đạo phê duyệt rồi đến con dấu của cơ quan, đúng thứ tự",
    )]


def _summaries(
    reports: list[SignatureReport], changes: list[Finding], profile: list[Finding]
) -> tuple[str, str]:
    """One line each for the log and the clerk: unsigned changes first (they explain every signature that
    fails because of them), then the first bad signature, then what the profile misses."""
    n = len(reports)
    if n == 0:
        return "No digital signature found.", "Tài liệu không có chữ ký số."
    bad = [r for r in reports if not r.ok]
    if not bad and not changes and not profile:
        return (
            f"{n} signature(s), all intact and trusted; no disallowed changes after signing.",
            f"Tài liệu có {n} chữ ký số, tất cả hợp lệ và tin cậy; không bị sửa đổi sau khi ký.",
        )
    if changes or not bad:
        finding = (changes or profile)[0]
        return (
            f"NOT valid: {finding.en} ({len(bad)} of {n} signature(s) not valid).",
            f"Tài liệu KHÔNG hợp lệ: {finding.vi}.",
        )
    first = bad[0]
    reason = next((p for p in first.problems if not p.startswith("info:")), "invalid")
    en = f"{len(bad)} of {n} signature(s) NOT valid; field {first.field!r}: {reason}."
    if first.revocation == "revoked":
        vi_reason = "chứng thư ký số đã bị thu hồi tại thời điểm ký"
    elif not first.intact:
        vi_reason = "nội dung đã bị thay đổi sau khi ký"
    elif not first.trusted:
        vi_reason = "chứng thư ký không thuộc tổ chức cung cấp dịch vụ tin cậy"
    elif not first.role_ok:
        claimed = ROLE_VI.get(first.claimed_role, first.claimed_role)
        vi_reason = (
            f"chữ ký ở ô '{first.field}' ghi là của {claimed} nhưng chứng thư ký không phải "
            "của người được giao vai trò này"
        )
    else:
        vi_reason = "tài liệu bị sửa đổi trái phép sau khi ký"
    vi = f"Có {len(bad)}/{n} chữ ký số KHÔNG hợp lệ ({vi_reason})."
    return en, vi


def verify_pdf(
    pdf: bytes,
    trust_roots: Sequence[bytes | Path],
    *,
    validation_time: dt.datetime | None = None,
    identities: SignerIdentities | None = None,
    profile: Profile = "auto",
) -> VerificationReport:
    """Validate every signature and document timestamp of ``pdf`` offline against ``trust_roots``.

    A signature is ok when its digest and signature value are intact, its certificate chains to one of
    ``trust_roots`` (with the non-repudiation key usage), any later change to the document is at most
    a further signature or form filling, and a role the document claims for it is one its certificate
    is configured for in ``identities`` (none configured: no claim holds). After the last signature
    only validation data may follow. The report is ok when there is at least one signature, all are
    ok and ``profile`` is met. ``validation_time`` (default: now) lets an auditor ask "would this hold
    then?".
    """
    roots = load_trust_roots(trust_roots)
    reader = _open(pdf)
    when = validation_time or dt.datetime.now(dt.UTC)
    identities = identities if identities is not None else SignerIdentities()
    reports = asyncio.run(_check_all(reader, roots, when, identities))
    applied = profile if profile != "auto" else "result" if is_e_result(reader) else "basic"
    changes = _unsigned_changes(reader, pdf, reports) if reports else []
    missing = _profile_findings(reports, applied) if reports else []
    findings = changes + missing
    en, vi = _summaries(reports, changes, missing)
    return VerificationReport(
        signatures=reports,
        ok=bool(reports) and all(r.ok for r in reports) and not findings,
        validation_time=when,
        profile=applied,
        problems=[f.en for f in findings],
        problems_vi=[f.vi for f in findings],
        summary_en=en,
        summary_vi=vi,
    )
