"""The test PKI (certomancer): root → issuing CA → officer, approver, seal and a revoked certificate,
with a TSA, an OCSP responder and CRLs served on 127.0.0.1.

The architecture is described in ``tests/support/testpki.yml``; the keys are generated here (RSA, so
that certificates issued in two processes are byte-identical: PKCS#1 v1.5 signatures are
deterministic). :func:`materialise` writes what signers and verifiers need into a folder;
``python tests/support/testpki.py serve DIR PORT`` runs the HTTP services (tests start it as a process).
Never use any of this outside development and tests.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ARCH = "hoso-test"
LOOPBACK = "127.0.0.1"
KEY_LABELS = ("root", "interm", "interm-ocsp", "tsa", "tsa2", "officer", "approver", "seal", "revoked")
SIGNER_LABELS = ("officer", "approver", "seal", "revoked")


@dataclass(frozen=True)
class TestPki:
    """Files and URLs of a materialised test PKI."""

    directory: Path
    port: int
    passphrase: bytes

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def root_cert(self) -> Path:
        return self.directory / "root.pem"

    @property
    def tsa_url(self) -> str:
        return f"{self.base_url}/{ARCH}/tsa/tsa"

    @property
    def tsa2_url(self) -> str:
        """The successor TSA (certificate valid until 2063, the first one's until 2040)."""
        return f"{self.base_url}/{ARCH}/tsa/tsa2"

    def p12(self, label: str) -> Path:
        return self.directory / f"{label}.p12"

    def key_pem(self, label: str) -> Path:
        return self.directory / "keys" / f"{label}.key.pem"

    def cert_pem(self, label: str) -> Path:
        return self.directory / f"{label}.pem"


def config_path() -> Path:
    return Path(str(Path(__file__).with_name("testpki.yml")))


def _ensure_keys(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for label in KEY_LABELS:
        path = key_dir / f"{label}.key.pem"
        if path.exists():
            continue
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)


def load_architecture(directory: Path, port: int):
    """The certomancer PKI architecture with its service URLs on ``127.0.0.1:port``."""
    from certomancer.registry import ArchLabel, CertomancerConfig

    _ensure_keys(directory / "keys")
    cfg = CertomancerConfig.from_file(
        str(config_path()), key_search_dir=str(directory), external_url_prefix=f"http://{LOOPBACK}:{port}"
    )
    return cfg.get_pki_arch(ArchLabel(ARCH))


def materialise(directory: Path, port: int, passphrase: bytes = b"hoso-test") -> TestPki:
    """Generate keys (once) and write ``root.pem``, ``<label>.pem`` and ``<label>.p12`` for every signer."""
    from certomancer.registry import CertLabel

    directory.mkdir(parents=True, exist_ok=True)
    arch = load_architecture(directory, port)
    pki = TestPki(directory, port, passphrase)
    for label in ("root", "interm", "tsa", "tsa2", *SIGNER_LABELS):
        pki.cert_pem(label).write_bytes(_pem(arch.get_cert(CertLabel(label)).dump()))
    for label in SIGNER_LABELS:
        blob = arch.package_pkcs12(
            CertLabel(label), certs_to_embed=[CertLabel("interm"), CertLabel("root")], password=passphrase
        )
        pki.p12(label).write_bytes(blob)
        pki.p12(label).chmod(0o600)
    return pki


def _pem(der: bytes) -> bytes:
    from asn1crypto import pem

    return pem.armor("CERTIFICATE", der)


def _use_parsed_keys() -> None:
    """Make certomancer parse each signing key once per process.

    Its stock backend re-parses (and so re-validates) the RSA key for every timestamp token, OCSP
    response and CRL it signs: ~60 ms of CPU per TSA request, which made the test TSA the bottleneck
    of B-LTA signing (two timestamps per signature).
    """
    from asn1crypto import algos, keys
    from certomancer import crypto_utils
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    class ParsedKeys(crypto_utils.PycaCryptographyBackend):
        def __init__(self) -> None:
            self._keys: dict[bytes, object] = {}

        def generic_sign(
            self, private_key: keys.PrivateKeyInfo, tbs_bytes: bytes, sd_algo: algos.SignedDigestAlgorithm
        ) -> bytes:
            der = private_key.dump()
            key = self._keys.get(der)
            if key is None:
                key = self._keys[der] = serialization.load_der_private_key(der, password=None)
            if sd_algo.signature_algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPrivateKey):
                return key.sign(tbs_bytes, padding.PKCS1v15(), getattr(hashes, sd_algo.hash_algo.upper())())
            return super().generic_sign(private_key, tbs_bytes, sd_algo)

    crypto_utils.CRYPTO_BACKEND = ParsedKeys()


def serve(directory: Path, port: int) -> None:
    """Run the OCSP, CRL, TSA and certificate services on 127.0.0.1:port until killed."""
    from certomancer.integrations.animator import Animator, AnimatorArchStore
    from werkzeug.serving import make_server

    _use_parsed_keys()
    arch = load_architecture(directory, port)
    app = Animator(AnimatorArchStore({arch.arch_label: arch}), with_web_ui=False, allow_time_override=False)
    make_server(LOOPBACK, port, app, threaded=True).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python tests/support/testpki.py")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "materialise"):
        cmd = sub.add_parser(name)
        cmd.add_argument("directory", type=Path)
        cmd.add_argument("port", type=int)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.directory, args.port)
    else:
        print(materialise(args.directory, args.port).directory)


if __name__ == "__main__":
    main()
