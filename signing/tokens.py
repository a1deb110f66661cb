"""Where signing keys live: PKCS#11 tokens (officials' USB tokens, an HSM; SoftHSM2 in tests) and a
remote signing service (hash out, signature back).

The token PIN is read from a file or an environment variable named in the settings; it is never
logged and never appears in an exception message. One session per token is opened on first use and
kept for the process, so each signature costs one token operation, not a login.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asn1crypto import algos
from asn1crypto import x509 as asn1_x509
from pyhanko.sign import signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from pipeline.core.errors import ConfigurationError, SigningFailed
from signing.fast_cms import FastCmsMixin
from signing.pki import ROLES

if TYPE_CHECKING:
    from pyhanko.sign.pkcs11 import PKCS11Signer

__all__ = ["Pkcs11Keys", "RemoteSigner", "RemoteSigningService", "read_pin"]


def read_pin(pin_file: Path | None, pin_env: str) -> str:
    """The token PIN from ``pin_file`` (first line) or the environment variable ``pin_env``."""
    if pin_file is not None:
        try:
            pin = pin_file.read_text(encoding="utf-8").splitlines()[0].strip() if pin_file.stat().st_size else ""
        except OSError as exc:
            raise SigningFailed(
                f"Cannot read the token PIN file {pin_file} ({exc.strerror})",
                "Không đọc được tệp mã PIN của thiết bị ký số.",
            ) from None
    else:
        pin = os.environ.get(pin_env, "")
    if not pin:
        raise SigningFailed(
            f"No token PIN: set {pin_env} or HOSO_PKCS11_PIN_FILE", "Chưa cấu hình mã PIN của thiết bị ký số."
        )
    return pin


class Pkcs11Keys:
    """Signers for keys on one PKCS#11 token; the key (and certificate) label is the role name."""

    def __init__(self, module: Path, token_label: str, pin_file: Path | None, pin_env: str) -> None:
        self._module = module
        self._token_label = token_label
        self._pin_file = pin_file
        self._pin_env = pin_env
        self._session: Any = None
        self._cache: dict[str, signers.Signer] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the PIN
        return f"Pkcs11Keys({self._module}, token={self._token_label!r})"

    def _open(self):
        import pkcs11
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign.pkcs11 import open_pkcs11_session

        pin = read_pin(self._pin_file, self._pin_env)
        try:
            return open_pkcs11_session(
                str(self._module), token_criteria=TokenCriteria(label=self._token_label), user_pin=pin
            )
        except pkcs11.PinIncorrect:
            raise SigningFailed(
                f"The PIN for token {self._token_label!r} was refused", "Mã PIN của thiết bị ký số không đúng."
            ) from None
        except (pkcs11.PKCS11Error, OSError, RuntimeError, ValueError) as exc:
            # The PIN is not part of these messages; the exception chain is dropped regardless.
            raise SigningFailed(
                f"Cannot open PKCS#11 token {self._token_label!r} via {self._module} ({type(exc).__name__})",
                "Không kết nối được thiết bị ký số (token).",
            ) from None

    def role_certificates(self) -> dict[str, list[asn1_x509.Certificate]]:
        """The certificates on the token labelled with each role: the identities a verifier accepts.

        Read in a public session (certificates are public objects: no PIN); a token that shows none
        without login is read in the signing session, which needs the PIN.
        """
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        def read(session: Any) -> dict[str, list[asn1_x509.Certificate]]:
            return {
                role: [
                    asn1_x509.Certificate.load(bytes(obj[Attribute.VALUE]))
                    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: role})
                ]
                for role in ROLES
            }

        try:
            token = pkcs11.lib(str(self._module)).get_token(token_label=self._token_label)
            with token.open() as session:
                found = read(session)
            if not any(found.values()):
                with self._lock:
                    if self._session is None:
                        self._session = self._open()
                    found = read(self._session)
        except (pkcs11.PKCS11Error, OSError, RuntimeError, ValueError) as exc:
            raise ConfigurationError(
                f"Cannot read the signers' certificates from PKCS#11 token {self._token_label!r} "
                f"via {self._module} ({type(exc).__name__})",
                "Không đọc được chứng thư của người ký trên thiết bị ký số (token).",
            ) from None
        return found

    def signer(self, role: str) -> signers.Signer:
        """The token signer whose key and certificate are labelled ``role``."""
        token_signer = _pkcs11_signer_class()
        with self._lock:
            if role in self._cache:
                return self._cache[role]
            if self._session is None:
                self._session = self._open()
            try:
                # Raw mechanism: the digest is computed here and only it goes to the token (SoftHSM2 and
                # many USB tokens lack the combined ECDSA-with-SHA256 mechanism; it is also faster).
                signer = token_signer(
                    self._session, cert_label=role, key_label=role, other_certs_to_pull=None,
                    use_raw_mechanism=True,
                )
                signer.signing_cert  # noqa: B018 — load the certificate now: fail here, not mid-signature
            except Exception as exc:  # noqa: BLE001 — python-pkcs11 raises many unrelated types
                raise SigningFailed(
                    f"Token {self._token_label!r} has no usable key/certificate labelled {role!r} "
                    f"({type(exc).__name__})",
                    "Thiết bị ký số không có khóa/chứng thư cho vai trò này.",
                ) from None
            self._cache[role] = signer
            return signer


@lru_cache(maxsize=1)
def _pkcs11_signer_class() -> type[PKCS11Signer]:
    """pyHanko's PKCS11Signer with the cheaper CMS assembly (python-pkcs11 is optional: imported late)."""
    from pyhanko.sign.pkcs11 import PKCS11Signer as Base

    class FastPkcs11Signer(FastCmsMixin, Base):
        """PKCS11Signer building its CMS structures the cheaper way (see :mod:`signing.fast_cms`)."""

    return FastPkcs11Signer


class RemoteSigningService(Protocol):
    """A signing service that holds the key: it receives a digest and returns the raw signature."""

    def certificate(self) -> asn1_x509.Certificate: ...

    def chain(self) -> list[asn1_x509.Certificate]: ...

    def sign_digest(self, digest: bytes, digest_algorithm: str) -> bytes: ...


class RemoteSigner(FastCmsMixin, signers.Signer):
    """Adapts a :class:`RemoteSigningService` to pyHanko: only the hash of the signed attributes leaves."""

    def __init__(self, service: RemoteSigningService, signature_mechanism: str = "ecdsa") -> None:
        self._service = service
        cert = service.certificate()
        registry = SimpleCertificateStore()
        registry.register_multiple(service.chain())
        algo = cert.public_key.algorithm
        mechanism = "rsassa_pkcs1v15" if algo == "rsa" else "ecdsa" if algo == "ec" else signature_mechanism
        super().__init__(
            signing_cert=cert,
            cert_registry=registry,
            signature_mechanism=algos.SignedDigestAlgorithm({"algorithm": f"sha256_{mechanism}"})
            if mechanism == "ecdsa"
            else algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}),
        )

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        digest = hashlib.new(digest_algorithm, data).digest()
        if dry_run:  # pyHanko sizes the signature container first
            return bytes(512)
        return self._service.sign_digest(digest, digest_algorithm)
