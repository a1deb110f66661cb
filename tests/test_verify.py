"""``hoso verify`` cannot be fooled by names or by unsigned changes: roles need a configured signer
certificate, e-results need the approver then the seal, and only validation data may follow the last
signature (dev PKI, real signatures, the real command)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pikepdf
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from pipeline.core.errors import ConfigurationError, ExitCode, InputCorrupt
from pipeline.domain.results import ResultContent, issue_signed_result, render_result_pdf, result_signature_boxes
from signing.changes import E_RESULT_TYPE, is_e_result
from signing.identities import SignerIdentities, parse_fingerprint
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys, prepare_fields, sign_pdf
from signing.verify import verify_pdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_signing import make_pdf  # noqa: E402

PASS = "hoso-dev"  # the default HOSO_PKI_PASSPHRASE: the command finds the same dev PKI
AGENCY = "Ủy ban nhân dân xã Thử Nghiệm"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verify") / "var"


@pytest.fixture(scope="module")
def pki(data_dir: Path) -> DevPki:
    return ensure_dev_pki(data_dir / "pki", PASS.encode(), agency_name=AGENCY)


@pytest.fixture(scope="module")
def keys(pki: DevPki) -> SigningKeys:
    return SigningKeys(pki, PASS.encode())


@pytest.fixture(scope="module")
def ids(pki: DevPki) -> SignerIdentities:
    return SignerIdentities.from_config(pki.identity_files())


def content() -> ResultContent:
    return ResultContent(
        dossier_code="000.00.00.H00-261130-0001", procedure_label="Đăng ký khai sinh", agency_name=AGENCY,
        issued_at=dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.UTC), verification_code="QW12-ER34",
    )


@pytest.fixture(scope="module")
def result(keys: SigningKeys) -> bytes:
    return issue_signed_result(content(), keys, approver_name="Phạm Văn Duyệt", agency_name=AGENCY)


@pytest.fixture(scope="module")
def forged(keys: SigningKeys) -> bytes:
    """An e-result whose fields are named (and reasons worded) like the approver's and the seal's, both
    signed with the desk officer's key: every name says e-result, no certificate does."""
    pdf = render_result_pdf(content())
    pdf = prepare_fields(pdf, [(name, 0, box) for name, box in result_signature_boxes().items()])
    officer = keys.signer("officer")
    pdf = sign_pdf(pdf, officer, field_name="approver", reason="Phê duyệt kết quả hồ sơ 000.00.00.H00-261130-0001",
                   location="x", signer_name="Phạm Văn Duyệt", role_label="Lãnh đạo phê duyệt",
                   existing_fields_only=True)
    return sign_pdf(pdf, officer, field_name="seal", reason="Đóng dấu xác nhận kết quả hồ sơ 000.00.00.H00-261130-0001",
                    location="x", signer_name=AGENCY, role_label="Con dấu cơ quan", existing_fields_only=True)


def hoso(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSO_")} | {
        "HOSO_DATA_DIR": str(data_dir), "HOSO_AGENCY_NAME": AGENCY}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=data_dir.parent)


def write(tmp_path: Path, name: str, pdf: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(pdf)
    return str(path)


def incremental(pdf: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == ExitCode.failed, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hoso: lỗi [failed]: ") and " — " in line, line  # Vietnamese — English
    return line


# --- roles ----------------------------------------------------------------------------------------


def test_genuine_e_result_verifies_with_confirmed_roles(result: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    report = verify_pdf(result, [pki.root_cert], identities=ids)
    assert report.ok, report
    assert report.profile == "result"  # from the file's XMP marker
    assert [(s.role, s.claimed_role, s.role_ok) for s in report.signatures] == [
        ("approver", "approver", True), ("seal", "seal", True)]


def test_forged_role_fails_verification(forged: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    report = verify_pdf(forged, [pki.root_cert], identities=ids)
    assert not report.ok
    approver, seal = report.signatures
    assert approver.intact and approver.trusted  # cryptographically fine ...
    assert (approver.role, approver.claimed_role, approver.role_ok) == ("officer", "approver", False)  # not hers
    assert (seal.role, seal.claimed_role, seal.role_ok) == ("officer", "seal", False)
    assert "not the approver's" in report.summary_en and "lãnh đạo phê duyệt" in report.summary_vi
    # Even without the e-result profile the names alone do not make an approver.
    assert not verify_pdf(forged, [pki.root_cert], identities=ids, profile="basic").ok


@pytest.mark.slow  # a `hoso` run
def test_forged_role_fails_the_command_with_a_clear_reason(forged: bytes, pki: DevPki, data_dir: Path,
                                                           tmp_path: Path) -> None:
    proc = hoso(data_dir, "verify", write(tmp_path, "forged.pdf", forged))
    line = failure_line(proc)
    assert "không phải của người được giao vai trò này" in line and "not the approver's" in line
    assert "✘ ghi là" in proc.stdout  # the panel's role column shows the claim against the certificate
    data = json.loads(hoso(data_dir, "verify", "--json", write(tmp_path, "f.pdf", forged)).stdout)
    assert [s["role"] for s in data["signatures"]] == ["officer", "officer"] and not data["ok"]


def test_a_role_claimed_by_the_reason_alone_needs_the_certificate_too(keys: SigningKeys, pki: DevPki,
                                                                      ids: SignerIdentities) -> None:
    signed = sign_pdf(make_pdf(), keys.signer("seal"), field_name="Chu_ky_1",
                      reason="Phê duyệt kết quả hồ sơ 000.00.00.H00-261130-0002", location="x",
                      signer_name="Cơ quan", role_label="Con dấu")
    (sig,) = verify_pdf(signed, [pki.root_cert], identities=ids).signatures
    assert (sig.role, sig.claimed_role, sig.ok) == ("seal", "approver", False)
    # Field names are compared without case or separators: "APPROVER" claims the approver role too.
    signed = sign_pdf(make_pdf(), keys.signer("officer"), field_name="APPROVER", reason="r", location="x",
                      signer_name="x", role_label="y")
    (sig,) = verify_pdf(signed, [pki.root_cert], identities=ids).signatures
    assert sig.claimed_role == "approver" and not sig.ok


def test_without_identities_no_claim_holds_and_unclaimed_signatures_still_verify(
    result: bytes, keys: SigningKeys, pki: DevPki
) -> None:
    report = verify_pdf(result, [pki.root_cert])
    assert not report.ok and "no signer identities are configured" in report.signatures[0].problems[0]
    plain = sign_pdf(make_pdf(), keys.signer("officer"), field_name="Signature1", reason="r", location="x",
                     signer_name="x", role_label="y")
    report = verify_pdf(plain, [pki.root_cert])  # a signature that claims no role: nothing to confirm
    assert report.ok and report.signatures[0].role == "" and report.profile == "basic"


def test_e_result_profile_needs_approver_then_seal(result: bytes, keys: SigningKeys, pki: DevPki,
                                                   ids: SignerIdentities, data_dir: Path, tmp_path: Path) -> None:
    # The approver's revision alone (the seal's cut off) is a valid PDF signed by the approver ...
    reader = PdfFileReader(io.BytesIO(result))
    _, _, start, length = reader.embedded_signatures[0].byte_range
    approver_only = result[: start + length]
    assert is_e_result(PdfFileReader(io.BytesIO(approver_only)))
    report = verify_pdf(approver_only, [pki.root_cert], identities=ids)
    assert report.signatures[0].ok and not report.ok  # ... but not an e-result
    assert "approver's signature and then the agency seal's" in report.problems[0]
    assert verify_pdf(approver_only, [pki.root_cert], identities=ids, profile="basic").ok
    # Seal first, then the approver: the right people in the wrong order.
    pdf = prepare_fields(render_result_pdf(content()), [(n, 0, b) for n, b in result_signature_boxes().items()])
    pdf = sign_pdf(pdf, keys.signer("seal"), field_name="seal", reason="Đóng dấu xác nhận kết quả", location="x",
                   signer_name=AGENCY, role_label="Con dấu", existing_fields_only=True)
    pdf = sign_pdf(pdf, keys.signer("approver"), field_name="approver", reason="Phê duyệt kết quả", location="x",
                   signer_name="A", role_label="Lãnh đạo", existing_fields_only=True)
    report = verify_pdf(pdf, [pki.root_cert], identities=ids)
    assert all(s.ok for s in report.signatures) and not report.ok and "found: seal, approver" in report.problems[0]
    # --profile result on a file without the marker (a desk officer's copy) applies it all the same.
    desk = sign_pdf(make_pdf(), keys.signer("officer"), field_name="CanBoTiepNhan", reason="Chứng thực bản số hóa",
                    location="x", signer_name="x", role_label="y")
    assert hoso(data_dir, "verify", write(tmp_path, "desk.pdf", desk)).returncode == 0
    failure_line(hoso(data_dir, "verify", "--profile", "result", write(tmp_path, "desk2.pdf", desk)))


@pytest.mark.slow  # `hoso` runs
def test_the_command_takes_signers_from_options_and_settings(result: bytes, pki: DevPki, data_dir: Path,
                                                             tmp_path: Path) -> None:
    path = write(tmp_path, "result.pdf", result)
    assert hoso(data_dir, "verify", path).returncode == 0  # the dev PKI configures itself
    other = ensure_dev_pki(tmp_path / "other", PASS.encode(), agency_name=AGENCY)
    # Another approver configured: the real one's signature no longer counts as the approver's.
    proc = hoso(data_dir, "verify", path, "--signer", f"approver={other.certs['approver']}",
                "--signer", f"seal={pki.certs['seal']}")
    failure_line(proc)
    approver = x509.load_pem_x509_certificate(pki.certs["approver"].read_bytes())
    fingerprint = approver.fingerprint(hashes.SHA256()).hex(":")
    proc = hoso(data_dir, "verify", path, "--signer", f"approver=sha256:{fingerprint.upper()}",
                "--signer", f"seal={pki.certs['seal']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = hoso(data_dir, "verify", path, "--signer", "approver")
    assert bad.returncode == ExitCode.configuration and "ROLE=CERT" in bad.stderr
    missing = hoso(data_dir, "verify", path, "--signer", f"approver={tmp_path / 'nope.pem'}")
    assert missing.returncode == ExitCode.configuration and "Không đọc được tệp chứng thư" in missing.stderr


def test_signer_identities_from_config(pki: DevPki, tmp_path: Path) -> None:
    digest = bytes(range(32))
    assert parse_fingerprint(digest.hex()) == digest
    assert parse_fingerprint("SHA256:" + digest.hex(":").upper()) == digest
    assert parse_fingerprint(digest.hex()[:-2]) is None and parse_fingerprint("approver.pem") is None
    ids = SignerIdentities.from_config({"seal": [digest.hex(), str(pki.certs["seal"])]})
    assert ids and repr(ids) == "SignerIdentities(seal: 2)"
    with pytest.raises(ConfigurationError):
        SignerIdentities.from_config({"mayor": [digest.hex()]})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigurationError):
        SignerIdentities.from_config({"seal": [str(junk)]})


def test_signer_certs_setting(monkeypatch: pytest.MonkeyPatch, pki: DevPki) -> None:
    from pipeline.core.settings import Settings
    from pipeline.usecases.services import Services

    monkeypatch.setenv("HOSO_SIGNER_CERTS", json.dumps({"seal": [str(pki.certs["seal"])]}))
    settings = Settings(data_dir=pki.directory.parent)
    assert settings.signer_certs == {"seal": [str(pki.certs["seal"])]}
    ids = Services(settings).signer_identities
    assert repr(ids) == "SignerIdentities(seal: 1)"
    monkeypatch.setenv("HOSO_SIGNER_CERTS", json.dumps({"mayor": ["x"]}))
    with pytest.raises(ValueError):
        Settings()


def test_a_replaced_dev_certificate_keeps_what_it_signed(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, PASS.encode())
    old = issue_signed_result(content(), SigningKeys(pki, PASS.encode()), approver_name="A", agency_name=AGENCY)
    pki.p12["approver"].unlink()  # the approver gets a new key and certificate
    pki = ensure_dev_pki(tmp_path, PASS.encode())
    retired = pki.identity_files()["approver"]
    assert len(retired) == 2 and retired[1].parent.name == "retired"
    ids = SignerIdentities.from_config(pki.identity_files())
    assert verify_pdf(old, [pki.root_cert], identities=ids).ok
    new = issue_signed_result(content(), SigningKeys(pki, PASS.encode()), approver_name="A", agency_name=AGENCY)
    assert verify_pdf(new, [pki.root_cert], identities=ids).ok
    assert ensure_dev_pki(tmp_path, PASS.encode()).identity_files() == pki.identity_files()  # nothing more retired


# --- changes after the last signature ---------------------------------------------------------------


def test_info_only_update_after_the_last_signature_fails(result: bytes, pki: DevPki, ids: SignerIdentities,
                                                         data_dir: Path, tmp_path: Path) -> None:
    def retitle(w: IncrementalPdfFileWriter) -> None:
        w.set_info(generic.DictionaryObject({generic.pdf_name("/Title"): generic.pdf_string("Giấy phép xây dựng")}))

    changed = incremental(result, retitle)
    report = verify_pdf(changed, [pki.root_cert], identities=ids)
    assert not report.ok
    assert any("after the last signature" in p for p in report.problems)
    assert "document information changed after signing: /Title" in report.signatures[-1].problems[0]
    assert report.summary_vi == "Tài liệu KHÔNG hợp lệ: tài liệu bị sửa đổi sau chữ ký cuối cùng."
    line = failure_line(hoso(data_dir, "verify", write(tmp_path, "retitled.pdf", changed)))
    assert "sau chữ ký cuối cùng" in line and "after the last signature" in line


def test_any_unsigned_revision_after_the_last_signature_fails(keys: SigningKeys, pki: DevPki,
                                                              ids: SignerIdentities) -> None:
    signed = sign_pdf(make_pdf(), keys.signer("officer"), field_name="CanBoTiepNhan", reason="Chứng thực bản số hóa",
                      location="x", signer_name="x", role_label="y")
    assert verify_pdf(signed, [pki.root_cert], identities=ids).ok
    # Only what signing software itself writes (a new modification date) — still not validation data.
    def touch(w: IncrementalPdfFileWriter) -> None:
        info = w.trailer.raw_get("/Info")
        info.get_object()[generic.pdf_name("/ModDate")] = generic.pdf_date(dt.datetime.now(dt.UTC))
        w.mark_update(info)

    touched = incremental(signed, touch)
    report = verify_pdf(touched, [pki.root_cert], identities=ids)
    assert report.signatures[0].ok and not report.ok
    assert "without adding validation data" in report.problems[0]


def test_an_xmp_change_after_signing_fails(result: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    """pyHanko's default analysis lets any XMP change pass as an archival update; a new title must not."""

    def retitle(w: IncrementalPdfFileWriter) -> None:
        w.document_meta.title = "Giấy phép xây dựng"
        w.update_root()  # pyHanko writes a revision only when something is marked as changed

    report = verify_pdf(incremental(result, retitle), [pki.root_cert], identities=ids)
    assert not report.ok
    assert [s.modification_level for s in report.signatures] == ["OTHER", "OTHER"]
    assert "XMP metadata changed after signing: title" in report.signatures[0].problems[0]
    # The same kind of revision that changes only what pyHanko updates itself is bookkeeping ...
    report = verify_pdf(incremental(result, lambda w: w.update_root()), [pki.root_cert], identities=ids)
    assert report.signatures[-1].modification_level == "LTA_UPDATES"
    assert not report.ok and "without adding validation data" in report.problems[0]  # ... yet still unsigned


def test_bytes_after_the_last_eof_fail(result: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    assert verify_pdf(result + b"\r\n", [pki.root_cert], identities=ids).ok  # an end-of-line is fine
    report = verify_pdf(result + b"\n1 0 obj\n(forged) \nendobj\n", [pki.root_cert], identities=ids)
    assert not report.ok and "appended" in report.problems[0]
    with pytest.raises(InputCorrupt):  # junk after a second %%EOF: not a readable PDF any more
        verify_pdf(result + b"\n%%EOF\n" + b"x" * 10, [pki.root_cert], identities=ids)
    # Junk dressed up as a revision end ("startxref" of the real last revision, then %%EOF).
    startxref = result[result.rindex(b"startxref"):]
    report = verify_pdf(result + b"\n(forged)\n" + startxref, [pki.root_cert], identities=ids)
    assert not report.ok and "appended" in report.problems[0]


def test_validation_data_after_the_last_signature_is_fine(result: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    from pyhanko.keys import load_cert_from_pemder

    sig = PdfFileReader(io.BytesIO(result)).embedded_signatures[-1]
    out = io.BytesIO(result)
    DocumentSecurityStore.add_dss(out, sig.pkcs7_content, certs=[load_cert_from_pemder(str(pki.intermediate_cert))])
    report = verify_pdf(out.getvalue(), [pki.root_cert], identities=ids)
    assert report.ok, report
    assert report.signatures[-1].modification_level == "LTA_UPDATES"


def test_marker_is_in_the_xmp_and_there_is_no_info_dictionary(result: bytes) -> None:
    with pikepdf.open(io.BytesIO(result)) as pdf:
        meta = pdf.open_metadata()
        assert E_RESULT_TYPE in meta.get("dc:type", set())
        assert "/Info" not in pdf.trailer
        assert meta.get("dc:title", "").startswith("Kết quả giải quyết thủ tục hành chính")
    assert not is_e_result(PdfFileReader(io.BytesIO(make_pdf())))


def test_damaged_signed_files_fail_cleanly(result: bytes, pki: DevPki, ids: SignerIdentities) -> None:
    """Damage anywhere in a signed e-result gives a failed report or an input error, never a crash."""
    import random

    from pipeline.core.errors import InputError

    rng = random.Random(7)
    for _ in range(24):
        damaged = bytearray(result)
        start = rng.randrange(len(result) // 2, len(result))  # the signatures' revisions
        damaged[start : start + rng.randint(1, 40)] = rng.randbytes(rng.randint(0, 40))
        try:
            report = verify_pdf(bytes(damaged), [pki.root_cert], identities=ids)
        except InputError:
            continue
        assert not report.ok or bytes(damaged) == result
    for cut in (len(result) - 20, len(result) * 3 // 4):
        with pytest.raises(InputError):
            verify_pdf(result[:cut], [pki.root_cert], identities=ids)
