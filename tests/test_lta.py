"""PAdES B-LT/B-LTA with the certomancer test PKI: long-term verification, tampering, revocation, refresh."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.fields import MDPPerm
from support.cli import Hoso

from pipeline.domain.results import ResultContent, issue_signed_result
from signing.identities import SignerIdentities
from signing.levels import Level, add_document_timestamp, signing_validation_context
from signing.pki import ensure_dev_pki
from signing.signers import _load_signer, sign_pdf
from signing.verify import verify_pdf
from storage import keys as object_keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_results import pdfa_2b_problems, revisions  # noqa: E402
from test_signing import flattened_text, make_pdf  # noqa: E402

pytestmark = pytest.mark.slow  # the certomancer PKI's OCSP, CRL and TSA services (a server of their own)


def ids(pki) -> SignerIdentities:
    """The test PKI's signers by role."""
    return SignerIdentities.from_config({role: [pki.cert_pem(role)] for role in ("officer", "approver", "seal")})


class P12Keys:
    """SigningKeys-like access to the test PKI's PKCS#12 files."""

    def __init__(self, pki) -> None:
        self.pki = pki

    def signer(self, role: str):
        return _load_signer(self.pki.p12(role), self.pki.passphrase, role)  # type: ignore[arg-type]


def content() -> ResultContent:
    return ResultContent(
        dossier_code="000.00.00.H00-261124-0007", procedure_label="Đăng ký khai sinh",
        agency_name="Ủy ban nhân dân phường Thử Nghiệm", issued_at=dt.datetime.now(dt.UTC),
        verification_code="AB12-CD34", body_lines=["Kết quả: Giấy khai sinh."],
    )


@pytest.fixture(scope="module")
def lta_result(test_pki) -> bytes:
    pki = test_pki.pki
    root = load_cert_from_pemder(str(pki.root_cert))
    return issue_signed_result(
        content(), P12Keys(pki), approver_name="Phạm Văn Hòa", agency_name="Ủy ban nhân dân phường Thử Nghiệm",
        timestamp_url=pki.tsa_url, level=Level.B_LTA, trust_roots=[root],
    )


def test_two_signer_b_lta_verifies_offline_and_after_ocsp_expiry(test_pki, lta_result: bytes) -> None:
    pki = test_pki.pki
    report = verify_pdf(lta_result, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    kinds = [s.kind for s in report.signatures]
    assert kinds == ["signature", "signature", "document_timestamp"]
    approver, seal, _ts = report.signatures
    assert (approver.role, seal.role) == ("approver", "seal")
    assert approver.certification == "FILL_FORMS"
    assert approver.signing_time_source == "signature_timestamp" and approver.revocation == "good"
    assert seal.revocation == "good"
    test_pki.stop()  # TSA/OCSP/CRL gone: everything must come from the file
    try:
        assert verify_pdf(lta_result, [pki.root_cert], identities=ids(pki)).ok
        # The OCSP responses are valid for 10 minutes; one day later they have long expired.
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        report = verify_pdf(lta_result, [pki.root_cert], identities=ids(pki), validation_time=later)
        assert report.ok, report
    finally:
        from support.servers import start_test_pki

        test_pki.process = start_test_pki(pki.directory, port=pki.port).process


def test_lta_result_stays_pdfa_2b_through_signatures_dss_and_document_timestamp(test_pki, lta_result: bytes) -> None:
    assert b"/DSS" in lta_result and b"/DocTimeStamp" in lta_result
    pki = test_pki.pki
    root = load_cert_from_pemder(str(pki.root_cert))
    refreshed = add_document_timestamp(lta_result, pki.tsa_url, signing_validation_context([], [root]))
    history = revisions(refreshed)
    assert len(history) > len(revisions(lta_result)) > 5
    for n, revision in enumerate(history):  # RSA keys; every signature, DSS update and timestamp
        assert pdfa_2b_problems(revision) == [], n


def test_e_result_stamps_extract_back_exactly(lta_result: bytes) -> None:
    text = flattened_text(lta_result, 0)
    lines = [line.strip() for line in text.splitlines()]
    # Approver: the name given, the role title, the agency from the certificate; then the seal.
    assert "Ký bởi: Phạm Văn Hòa" in lines and "Lãnh đạo phê duyệt" in lines
    assert "Ký bởi: Ủy ban nhân dân phường Thử Nghiệm" in lines
    assert lines.count("Ủy ban nhân dân phường Thử Nghiệm") >= 2  # the organisation line of both stamps
    assert len(re.findall(r"Ký ngày: \d\d/\d\d/\d{4} \d\d:\d\d", text)) == 2


def test_untrusted_root_is_rejected(test_pki, lta_result: bytes, tmp_path: Path) -> None:
    other = ensure_dev_pki(tmp_path / "other", b"pass")
    report = verify_pdf(lta_result, [other.root_cert])
    assert not report.ok
    assert not report.signatures[0].trusted


def test_revoked_certificate_is_detected(test_pki) -> None:
    pki = test_pki.pki
    signed = sign_pdf(
        make_pdf(), P12Keys(pki).signer("revoked"), field_name="officer", reason="r", location="l",
        signer_name="Lê Văn Bị Thu Hồi", role_label="Cán bộ", timestamp_url=pki.tsa_url, level=Level.B_T,
    )
    # The known limit of B-T: nothing about revocation is embedded, so offline it cannot be detected;
    # the report says so instead of claiming the certificate is good.
    plain = verify_pdf(signed, [pki.root_cert], identities=ids(pki))
    assert plain.signatures[0].revocation == "not_checked"
    assert any("no revocation data embedded" in p for p in plain.signatures[0].problems)
    # Embedding validation data fails already at signing: the OCSP responder says revoked.
    from pipeline.core.errors import SigningFailed

    with pytest.raises(SigningFailed):
        sign_pdf(make_pdf(), P12Keys(pki).signer("revoked"), field_name="officer", reason="r", location="l",
                 signer_name="x", role_label="y", timestamp_url=pki.tsa_url, level=Level.B_LT)
    # A B-T signature by the revoked certificate, with its OCSP "revoked" answer added afterwards.
    # A B-T signature by the revoked certificate, with the responder's "revoked" answer and the CRLs
    # embedded afterwards (as an archive would collect them).
    import urllib.request

    from asn1crypto import crl, ocsp
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation.dss import DocumentSecurityStore

    revoked = load_cert_from_pemder(str(pki.cert_pem("revoked")))
    interm = load_cert_from_pemder(str(pki.cert_pem("interm")))
    from pyhanko_certvalidator.authority import CertTrustAnchor
    from pyhanko_certvalidator.fetchers.common_utils import format_ocsp_request

    authority = CertTrustAnchor(interm).authority
    req = format_ocsp_request(revoked, authority, certid_hash_algo="sha256", request_nonces=False)
    http = urllib.request.Request(
        revoked.ocsp_urls[0], data=req.dump(), headers={"Content-Type": "application/ocsp-request"}
    )
    ocsp_resp = ocsp.OCSPResponse.load(urllib.request.urlopen(http, timeout=10).read())
    crls = [crl.CertificateList.load(urllib.request.urlopen(f"{pki.base_url}/hoso-test/crls/{n}/latest.crl").read())
            for n in ("root", "interm")]
    out = io.BytesIO(signed)
    sig = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    DocumentSecurityStore.add_dss(out, sig.pkcs7_content, certs=[interm], ocsps=[ocsp_resp], crls=crls)
    report = verify_pdf(out.getvalue(), [pki.root_cert], identities=ids(pki))
    assert not report.ok
    assert report.signatures[0].revocation == "revoked", report
    assert "thu hồi" in report.summary_vi


def test_tampering_after_lta_is_detected(test_pki, lta_result: bytes) -> None:
    pki = test_pki.pki
    # A changed byte inside the signed range.
    pos = 400  # inside the first revision, which every signature covers
    tampered = bytearray(lta_result)
    tampered[pos] ^= 0x01
    assert not verify_pdf(bytes(tampered), [pki.root_cert], identities=ids(pki)).ok
    # An incremental update that changes page content.
    w = IncrementalPdfFileWriter(io.BytesIO(lta_result))
    page = w.root["/Pages"]["/Kids"][0].get_object()
    stream = generic.StreamObject(stream_data=b"BT /F1 30 Tf 100 400 Td (FORGED) Tj ET")
    page["/Contents"] = w.add_object(stream)
    w.update_container(page)
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(out.getvalue(), [pki.root_cert], identities=ids(pki))
    assert not report.ok


def test_certified_copy_rejects_added_annotation(test_pki) -> None:
    pki = test_pki.pki
    signed = sign_pdf(
        make_pdf(), P12Keys(pki).signer("officer"), field_name="CanBoTiepNhan", reason="r", location="l",
        signer_name="Nguyễn Thị Ánh Tuyết", role_label="Cán bộ tiếp nhận", timestamp_url=pki.tsa_url,
        level=Level.B_T, certify=MDPPerm.NO_CHANGES, visible_box=(355, 752, 580, 830),
    )
    assert verify_pdf(signed, [pki.root_cert], identities=ids(pki)).ok
    w = IncrementalPdfFileWriter(io.BytesIO(signed))
    page = w.root["/Pages"]["/Kids"][0].get_object()
    annot = generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/Text"),
        generic.NameObject("/Rect"): generic.ArrayObject([generic.NumberObject(v) for v in (10, 10, 50, 50)]),
        generic.NameObject("/Contents"): generic.pdf_string("sửa"),
    })
    annots = page.get("/Annots", generic.ArrayObject())
    annots.append(w.add_object(annot))
    page["/Annots"] = annots
    w.update_container(page)
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(out.getvalue(), [pki.root_cert], identities=ids(pki))
    assert not report.ok


def test_archive_refresh_adds_a_timestamp_that_verifies(test_pki, lta_result: bytes) -> None:
    pki = test_pki.pki
    root = load_cert_from_pemder(str(pki.root_cert))
    ctx = signing_validation_context([load_cert_from_pemder(str(pki.cert_pem("interm")))], [root])
    refreshed = add_document_timestamp(lta_result, pki.tsa_url, ctx)
    report = verify_pdf(refreshed, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    assert [s.kind for s in report.signatures].count("document_timestamp") == 2


@pytest.mark.skipif(shutil.which("pdfsig") is None, reason="poppler-utils (pdfsig) missing")
def test_pdfsig_agrees_digests_are_valid(lta_result: bytes, tmp_path: Path) -> None:
    path = tmp_path / "result.pdf"
    path.write_bytes(lta_result)
    out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, check=False).stdout
    blocks = out.split("Signature #")[1:]
    assert len(blocks) == 3, out
    # poppler 22.12 checks CMS signatures but not RFC 3161 document timestamps ("not yet verified").
    cms = [b for b in blocks if "ETSI.CAdES.detached" in b]
    assert len(cms) == 2, out
    assert all(re.search(r"Signature Validation: Signature is Valid\.", b) for b in cms), out


def _received_dossier(services) -> str:  # type: ignore[no-untyped-def]
    from pipeline.core.models import DossierState

    now = dt.datetime.now(dt.UTC)
    record = services.registry.reserve(
        input_sha256=secrets.token_hex(32), input_name="scan.pdf", procedure="business_household_registration",
        procedure_code=None, agency_code=services.settings.agency_code, received_at=now,
        due_at=now + dt.timedelta(days=5), applicant_id=None, actor="test",
    )
    services.registry.finalize_intake(
        record.code, state=DossierState.received, intake_status="accepted", documents=[], artifacts=[],
        receipt={}, actor="test",
    )
    return str(record.code)


def test_signing_refresh_renews_stored_results_and_keeps_history(test_pki, tmp_path: Path) -> None:
    from pipeline.core.settings import Settings
    from pipeline.usecases.clerk import issue_result
    from pipeline.usecases.services import Services

    pki = test_pki.pki
    data = tmp_path / "var"
    codes = {}
    for level in ("B-LT", "B-LTA"):
        services = Services(Settings(data_dir=data, tsa_url=pki.tsa_url, trust_roots=[pki.root_cert],
                                     level_result=level))
        services.__dict__["keys"] = P12Keys(pki)
        codes[level] = _received_dossier(services)
        issue_result(codes[level], services)
    store, registry = services.store, services.registry
    key = {lv: registry.get(c).artifacts["result"].object_key for lv, c in codes.items()}
    before = {lv: store.get_bytes(k) for lv, k in key.items()}
    assert b"/DocTimeStamp" not in before["B-LT"] and b"/DocTimeStamp" in before["B-LTA"]

    hoso = Hoso(data, {"HOSO_TSA_URL": pki.tsa_url, "HOSO_TRUST_ROOTS": json.dumps([str(pki.root_cert)]),
                         "HOSO_SIGNER_CERTS": json.dumps({r: [str(pki.cert_pem(r))] for r in ("approver", "seal")})})

    def refresh(*args: str) -> list[dict]:
        proc = hoso("signing", "refresh", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    planned = refresh("--dry-run")
    assert [(i["dossier_code"], i["action"]) for i in planned] == [(codes["B-LT"], "would_refresh")]
    assert store.get_bytes(key["B-LT"]) == before["B-LT"]  # a dry run changes nothing

    (done,) = refresh()
    assert done["action"] == "refreshed" and done["reason"] == "B-LT without a document timestamp"
    assert store.get_bytes(done["history_key"]) == before["B-LT"]  # nothing lost
    assert done["history_key"] == object_keys.history_key(codes["B-LT"], "result", 1)
    renewed = store.get_bytes(key["B-LT"])
    assert renewed.startswith(before["B-LT"])  # an incremental update of the same file
    report = verify_pdf(renewed, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    assert [s.kind for s in report.signatures].count("document_timestamp") == 1
    events = registry.get(codes["B-LT"]).events
    assert events[-1].action == "signatures_refreshed" and done["history_key"] in (events[-1].note or "")
    assert refresh() == []  # the TSA certificate is good for decades: nothing more to do now

    # Within 60 years every TSA certificate of the test PKI expires: both results get a new timestamp.
    items = refresh("--within-days", str(60 * 365))
    assert sorted(i["dossier_code"] for i in items) == sorted(codes.values())
    chained = store.get_bytes(key["B-LTA"])
    report = verify_pdf(chained, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    assert [s.kind for s in report.signatures].count("document_timestamp") == 2
    assert len(list(store.list(key["B-LTA"].rsplit("/", 1)[0] + "/history/result/"))) == 1


def test_refresh_onto_a_successor_tsa_keeps_the_result_valid_twenty_years_on(test_pki, lta_result: bytes) -> None:
    pki = test_pki.pki
    root = load_cert_from_pemder(str(pki.root_cert))
    # +20 years: the signers' certificates (to 2030) and the first TSA's (to 2040) have expired; the
    # successor TSA's (to 2063) has not.
    twenty_years_on = dt.datetime.now(dt.UTC) + dt.timedelta(days=20 * 365)
    assert dt.datetime(2040, 1, 1, tzinfo=dt.UTC) < twenty_years_on < dt.datetime(2063, 1, 1, tzinfo=dt.UTC)
    # Without renewal:
    assert not verify_pdf(lta_result, [pki.root_cert], identities=ids(pki), validation_time=twenty_years_on).ok
    refreshed = add_document_timestamp(lta_result, pki.tsa2_url, signing_validation_context([], [root]))
    assert verify_pdf(refreshed, [pki.root_cert], identities=ids(pki)).ok
    test_pki.stop()  # offline, from the file alone
    try:
        report = verify_pdf(refreshed, [pki.root_cert], identities=ids(pki), validation_time=twenty_years_on)
    finally:
        from support.servers import start_test_pki

        test_pki.process = start_test_pki(pki.directory, port=pki.port).process
    assert report.ok, report
    assert [s.kind for s in report.signatures] == ["signature", "signature", "document_timestamp",
                                                   "document_timestamp"]
    # A tampered renewal still fails: one byte changed in the first revision.
    tampered = bytearray(refreshed)
    tampered[400] ^= 0x01
    assert not verify_pdf(bytes(tampered), [pki.root_cert], identities=ids(pki), validation_time=twenty_years_on).ok


def test_verify_command_at_a_given_time_shows_roles_and_time_sources(
    test_pki, lta_result: bytes, tmp_path: Path
) -> None:
    pki = test_pki.pki
    path = tmp_path / "ket-qua.pdf"
    path.write_bytes(lta_result)
    hoso = Hoso(tmp_path / "v")
    base = ["verify", str(path), "--trust", str(pki.root_cert),
            "--signer", f"approver={pki.cert_pem('approver')}", "--signer", f"seal={pki.cert_pem('seal')}"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)).strftime("%Y-%m-%dT%H:%M:%S")
    proc = hoso(*base, "--json", "--at", later, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["validation_time"].startswith(later)
    assert [(s["role"], s["signing_time_source"]) for s in data["signatures"]] == [
        ("approver", "signature_timestamp"), ("seal", "signature_timestamp"),
        ("timestamp_authority", "document_timestamp")]
    assert [s["revocation"] for s in data["signatures"][:2]] == ["good", "good"]
    # Before the signer's certificate was valid (2025-01-01), nothing can hold.
    proc = hoso(*base, "--at", "2024-06-01", timeout=120)
    assert proc.returncode == 1
    assert "KHÔNG hợp lệ" in proc.stdout and "Vai trò" in proc.stdout and "2024-06-01T00:00:00" in proc.stdout
