"""Keys on a PKCS#11 token (SoftHSM2) end to end through the ``hoso`` command, and the PIN kept secret."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from pyhanko.pdf_utils.reader import PdfFileReader
from support.cli import SAMPLE, Hoso

from pipeline.core.errors import ExitCode

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "739152846"  # distinctive, so that any leak is found by a plain substring search
WRONG_PIN = "518273649"
PASSPHRASE = "hoso-dev"

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not MODULE.exists(), reason="softhsm2 not installed"
)


def _signer_serials(pdf: bytes) -> list[int]:
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    return [s.signer_cert.serial_number for s in reader.embedded_signatures if s.sig_object_type != "/DocTimeStamp"]


def _p12_serial(path: Path) -> int:
    _key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), PASSPHRASE.encode())
    assert cert is not None
    return cert.serial_number


pytestmark = pytest.mark.slow  # a SoftHSM2 token provisioned by a script, then `hoso` runs


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> tuple[Hoso, dict[str, int], Path]:
    """A SoftHSM2 token holding the dev PKI's keys; the PKCS#12 files are then re-issued with new keys."""
    base = tmp_path_factory.mktemp("token")
    runner = Hoso(base / "var")
    env = runner.env | {"HOSO_PKCS11_PIN": PIN}
    provision = Path(__file__).resolve().parent / "support" / "softhsm.py"
    proc = subprocess.run([sys.executable, str(provision), "provision", str(base / "softhsm")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=base)
    assert proc.returncode == 0, proc.stderr
    conf = Path(proc.stdout.strip().splitlines()[-1])
    pki = base / "var" / "pki"
    on_token = {role: _p12_serial(pki / f"{role}.p12") for role in ("officer", "approver", "seal")}
    for role in on_token:  # the files go: whatever hoso signs with now must come from the token
        (pki / f"{role}.p12").unlink()
    pin_file = base / "pin"
    pin_file.write_text(PIN + "\n", encoding="utf-8")
    pin_file.chmod(0o600)
    runner.env |= {"SOFTHSM2_CONF": str(conf), "HOSO_KEY_SOURCE": "pkcs11", "HOSO_PKCS11_PIN_FILE": str(pin_file)}
    return runner, on_token, pin_file


def _leaks(texts: list[str], data_dir: Path, *secrets: str) -> list[str]:
    logs = [p.read_text(errors="replace") for p in data_dir.rglob("*") if p.suffix in (".log", ".json", ".txt")]
    return [s for s in secrets for t in [*texts, *logs] if s in t]


def test_wrong_pin_is_a_clean_signing_failure_before_any_work(token: tuple[Hoso, dict[str, int], Path]) -> None:
    runner, _serials, _pin_file = token
    wrong = Hoso(runner.data_dir, {k: v for k, v in runner.env.items() if k != "HOSO_PKCS11_PIN_FILE"})
    wrong.env["HOSO_PKCS11_PIN"] = WRONG_PIN
    proc = wrong("-v", "ingest", str(SAMPLE), "--procedure", "business_household_registration", "--json")
    assert proc.returncode == ExitCode.signing_failed, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hoso: lỗi [signing_failed]: Mã PIN của thiết bị ký số không đúng."), line
    assert not _leaks([proc.stdout, proc.stderr], runner.data_dir, WRONG_PIN, PIN)
    assert runner.stored_keys() == []  # refused before OCR: nothing stored, nothing recorded
    missing = Hoso(runner.data_dir, {k: v for k, v in wrong.env.items() if k != "HOSO_PKCS11_PIN"})
    proc = missing("ingest", str(SAMPLE), "--procedure", "business_household_registration")
    assert proc.returncode == ExitCode.signing_failed
    assert "Chưa cấu hình mã PIN" in proc.stderr


def test_ingest_result_and_verify_with_keys_on_softhsm(
    token: tuple[Hoso, dict[str, int], Path], tmp_path: Path
) -> None:
    runner, on_token, _pin_file = token
    out = tmp_path / "d"
    outputs: list[str] = []
    proc = runner("-v", "ingest", str(SAMPLE), "--procedure", "business_household_registration",
                  "--out", str(out), "--json")
    outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == 0, proc.stderr
    digitised = (out / "sample_dossier.pdf").read_bytes()
    assert _signer_serials(digitised) == [on_token["officer"]]
    pki = runner.data_dir / "pki"
    assert _p12_serial(pki / "officer.p12") != on_token["officer"]  # re-issued file, not used
    code = json.loads(proc.stdout)["dossier_code"]
    # The clerk's run takes the PIN from the environment variable instead of the file.
    clerk = Hoso(runner.data_dir, {k: v for k, v in runner.env.items() if k != "HOSO_PKCS11_PIN_FILE"})
    clerk.env["HOSO_PKCS11_PIN"] = PIN
    proc = clerk("-v", "issue-result", code, "--out", str(out))
    outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == 0, proc.stderr
    result = (out / f"{code}-ket-qua.pdf").read_bytes()
    assert _signer_serials(result) == [on_token["approver"], on_token["seal"]]
    for pdf in (out / "sample_dossier.pdf", out / f"{code}-ket-qua.pdf"):
        proc = runner("verify", str(pdf))
        outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not _leaks(outputs, runner.data_dir, PIN)


class _PrehashService:
    """A remote signing service stand-in: holds the key, sees only digests."""

    def __init__(self, p12: Path, passphrase: bytes) -> None:
        from pyhanko.keys import internal

        key, cert, extra = pkcs12.load_key_and_certificates(p12.read_bytes(), passphrase)
        assert key is not None and cert is not None
        self._key = key
        self._cert = internal.translate_pyca_cryptography_cert_to_asn1(cert)
        self._chain = [internal.translate_pyca_cryptography_cert_to_asn1(c) for c in extra]
        self.digests: list[bytes] = []

    def certificate(self):  # type: ignore[no-untyped-def]
        return self._cert

    def chain(self):  # type: ignore[no-untyped-def]
        return self._chain

    def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        assert digest_algorithm == "sha256" and len(digest) == 32
        self.digests.append(digest)
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        return self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_remote_signer_signs_with_only_the_digest_leaving(tmp_path: Path) -> None:
    from test_signing import ids, make_pdf

    from signing.pki import ensure_dev_pki
    from signing.signers import sign_pdf
    from signing.tokens import RemoteSigner
    from signing.verify import verify_pdf

    pki = ensure_dev_pki(tmp_path / "pki", PASSPHRASE.encode())
    service = _PrehashService(pki.p12["seal"], PASSPHRASE.encode())
    signed = sign_pdf(make_pdf(), RemoteSigner(service), field_name="seal", reason="r", location="l",
                      signer_name="Cơ quan", role_label="Con dấu", visible_box=(300, 700, 550, 780))
    assert len(service.digests) == 1  # one real signature; pyHanko's size estimate did not reach the service
    report = verify_pdf(signed, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
