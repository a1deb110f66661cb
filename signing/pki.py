"""A development PKI: root CA → intermediate CA → one end-entity certificate per signing role.

For development, tests and demonstrations only; production keys live in an HSM or come from a
licensed CA. Everything is written into one folder:

- ``root.pem`` / ``root-key.pem``: root CA certificate and its key (key encrypted with the passphrase)
- ``intermediate.pem`` / ``intermediate-key.pem``: the issuing CA
- ``officer.p12``, ``approver.p12``, ``seal.p12``: key + certificate + intermediate, passphrase-protected
- ``officer.pem``, ``approver.pem``, ``seal.pem``: each role's certificate, the identity a verifier
  accepts for that role; a replaced one moves to ``retired/`` and stays accepted for what it signed

:func:`ensure_dev_pki` is idempotent: valid files are reused, missing or invalid ones are (re)issued.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pydantic import BaseModel

from pipeline.core.errors import ConfigurationError

Role = Literal["officer", "approver", "seal"]
ROLES: tuple[Role, ...] = get_args(Role)
KeyType = Literal["ec", "rsa"]

DEFAULT_AGENCY = "Trung tâm Phục vụ hành chính công xã (mẫu)"

#: Common names of the person certificates; the seal's CN is the agency name.
PERSON_NAMES: dict[Role, str] = {
    "officer": "Cán bộ tiếp nhận",
    "approver": "Lãnh đạo phê duyệt",
}
ROLE_TITLES: dict[Role, str] = {
    "officer": "Cán bộ tiếp nhận hồ sơ",
    "approver": "Lãnh đạo phê duyệt",
    "seal": "Con dấu cơ quan",
}

_ROOT_YEARS, _INTERMEDIATE_YEARS, _EE_YEARS = 20, 10, 3
# Re-issue an end-entity certificate once less than this is left of its validity.
_MIN_REMAINING = dt.timedelta(days=30)


class DevPki(BaseModel):
    """Paths of the development PKI's files."""

    directory: Path
    root_cert: Path
    intermediate_cert: Path
    p12: dict[Role, Path]
    certs: dict[Role, Path]

    def identity_files(self) -> dict[Role, list[Path]]:
        """Each role's certificate files: the current one and any it replaced (``retired/<role>-*.pem``)."""
        retired = self.directory / "retired"
        return {
            role: [p for p in (path,) if p.exists()] + sorted(retired.glob(f"{role}-*.pem"))
            for role, path in self.certs.items()
        }


def _year_span(years: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # Backdate a little so that clock skew between machines does not make fresh certs "not yet valid".
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=365 * years + years // 4)


def _new_key(key_type: KeyType) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 so that readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Two processes starting at once must not issue two different roots.
    with open(directory / ".lock", "a+b") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _time_ok(cert: x509.Certificate, margin: dt.timedelta = dt.timedelta(0)) -> bool:
    now = dt.datetime.now(dt.UTC)
    return cert.not_valid_before_utc <= now and now + margin < cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load_ca(cert_path: Path, key_path: Path, passphrase: bytes):
    """Return (cert, key) if both files exist, match and are in their validity period, else None."""
    try:
        key_pem = key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        key = serialization.load_pem_private_key(key_pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        if b"ENCRYPTED PRIVATE KEY" in key_pem:
            # Never replace a CA silently because of a mistyped passphrase: signatures made under it
            # would stop verifying.
            raise ConfigurationError(
                f"The passphrase does not open {key_path.name}; "
                f"delete {key_path.parent} to start a new dev PKI",
                "Mật khẩu không mở được khóa ký số thử nghiệm.",
            ) from exc
        return None
    try:
        _ski(cert)
    except x509.ExtensionNotFound:
        return None
    if cert.public_key() != key.public_key() or not _time_ok(cert, _MIN_REMAINING):
        return None
    return cert, key


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _ca_cert(
    subject: x509.Name,
    key,
    issuer_cert: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    years: int,
    path_length: int | None,
) -> x509.Certificate:
    start, end = _year_span(years)
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    own_ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    issuer_ski = _ski(issuer_cert) if issuer_cert is not None else own_ski
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(own_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _ee_subject(role: Role, agency_name: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN")]
    if role == "seal":
        attrs += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency_name),
            x509.NameAttribute(NameOID.COMMON_NAME, agency_name),
        ]
    else:
        attrs += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency_name),
            x509.NameAttribute(NameOID.TITLE, ROLE_TITLES[role]),
            x509.NameAttribute(NameOID.COMMON_NAME, PERSON_NAMES[role]),
        ]
    return x509.Name(attrs)


def _ee_cert(role: Role, agency_name: str, key, ca_cert: x509.Certificate, ca_key) -> x509.Certificate:
    start, end = _year_span(_EE_YEARS)
    return (
        x509.CertificateBuilder()
        .subject_name(_ee_subject(role, agency_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca_cert)), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _p12_cert(
    path: Path, passphrase: bytes, role: Role, agency_name: str, ca: x509.Certificate
) -> x509.Certificate | None:
    """The certificate of the PKCS#12 file at ``path`` if the file is valid for ``role``, else None."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), passphrase)
    except (OSError, ValueError, TypeError):
        return None
    valid = (
        key is not None
        and cert is not None
        and cert.public_key() == key.public_key()
        and cert.subject == _ee_subject(role, agency_name)
        and _issued_by(cert, ca)
        and _time_ok(cert, _MIN_REMAINING)
        and any(c == ca for c in extra)
    )
    return cert if valid else None


def _publish_cert(path: Path, cert: x509.Certificate, role: Role) -> None:
    """Write ``cert`` to ``path``; a different certificate already there moves to ``retired/``."""
    pem = cert.public_bytes(serialization.Encoding.PEM)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old == pem:
        return
    if old is not None:
        try:
            previous = x509.load_pem_x509_certificate(old)
        except ValueError:
            previous = None  # not a certificate: nothing worth keeping
        if previous is not None:
            retired = path.parent / "retired"
            retired.mkdir(exist_ok=True, mode=0o700)
            digest = previous.fingerprint(hashes.SHA256()).hex()[:16]
            _write_atomic(retired / f"{role}-{digest}.pem", old)
    _write_atomic(path, pem)


def _encrypt(passphrase: bytes) -> serialization.KeySerializationEncryption:
    if not passphrase:
        raise ConfigurationError(
            "The PKI passphrase must not be empty", "Mật khẩu bảo vệ khóa ký số không được để trống."
        )
    return serialization.BestAvailableEncryption(passphrase)


def _p12_encryption(passphrase: bytes) -> serialization.KeySerializationEncryption:
    # AES-256 + PBKDF2 instead of the legacy RC2/3DES defaults of some tools.
    return (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )


def _key_pem(key, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encrypt(passphrase)
    )


def ensure_dev_pki(
    directory: Path,
    passphrase: bytes,
    *,
    agency_name: str = DEFAULT_AGENCY,
    key_type: KeyType = "ec",
) -> DevPki:
    """Create (or reuse) the development PKI in ``directory`` and return the paths of its files.

    Existing files are kept when they are valid (parse, match the passphrase, chain correctly and are
    not about to expire); otherwise the affected certificates are issued again. A new root is issued
    only when the root itself is missing or invalid — which also re-issues everything below it.
    """
    _encrypt(passphrase)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the PKI folder {directory}: {exc.strerror}",
            "Không tạo được thư mục chứa khóa ký số.",
        ) from exc
    pki = DevPki(
        directory=directory,
        root_cert=directory / "root.pem",
        intermediate_cert=directory / "intermediate.pem",
        p12={role: directory / f"{role}.p12" for role in ROLES},
        certs={role: directory / f"{role}.pem" for role in ROLES},
    )
    root_key_path = directory / "root-key.pem"
    int_key_path = directory / "intermediate-key.pem"
    pem = serialization.Encoding.PEM
    try:
        with _locked(directory):
            root = _load_ca(pki.root_cert, root_key_path, passphrase)
            if root is None:
                key = _new_key(key_type)
                name = x509.Name([
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hoso (phát triển)"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "hoso Dev Root CA"),
                ])
                root = (_ca_cert(name, key, None, key, _ROOT_YEARS, None), key)
                _write_atomic(root_key_path, _key_pem(key, passphrase))
                _write_atomic(pki.root_cert, root[0].public_bytes(pem))
            root_cert, root_key = root

            inter = _load_ca(pki.intermediate_cert, int_key_path, passphrase)
            if inter is None or not _issued_by(inter[0], root_cert):
                key = _new_key(key_type)
                name = x509.Name([
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hoso (phát triển)"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "hoso Dev Issuing CA"),
                ])
                inter = (_ca_cert(name, key, root_cert, root_key, _INTERMEDIATE_YEARS, 0), key)
                _write_atomic(int_key_path, _key_pem(key, passphrase))
                _write_atomic(pki.intermediate_cert, inter[0].public_bytes(pem))
            inter_cert, inter_key = inter

            for role in ROLES:
                path = pki.p12[role]
                cert = _p12_cert(path, passphrase, role, agency_name, inter_cert)
                if cert is None:
                    key = _new_key(key_type)
                    cert = _ee_cert(role, agency_name, key, inter_cert, inter_key)
                    blob = pkcs12.serialize_key_and_certificates(
                        role.encode(), key, cert, [inter_cert], _p12_encryption(passphrase)
                    )
                    _write_atomic(path, blob)
                _publish_cert(pki.certs[role], cert, role)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot write the development PKI in {directory}: {exc.strerror}",
            "Không ghi được khóa ký số thử nghiệm.",
        ) from exc
    return pki
