"""A SoftHSM2 token holding the development PKI's keys, for tests, benchmarks and trying PKCS#11 out.

Production keys live on officials' USB tokens or an HSM, provisioned by the CA; this only mirrors
that layout: per role one private key and one certificate, both labelled with the role name (what
:class:`signing.tokens.Pkcs11Keys` looks for), plus the issuing CA certificate labelled ``ca``.

``python tests/support/softhsm.py provision TOKEN_DIR`` creates ``TOKEN_DIR/softhsm2.conf`` and a token in
``TOKEN_DIR/tokens`` and prints the conf path (export it as ``SOFTHSM2_CONF``). The user PIN comes
from ``HOSO_PKCS11_PIN``, the SO PIN from ``HOSO_PKCS11_SO_PIN`` (default: a random one, not kept),
the keys from the dev PKI in ``HOSO_PKI_DIR`` with ``HOSO_PKI_PASSPHRASE``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from pipeline.core.errors import ConfigurationError
from signing.pki import ROLES, DevPki

__all__ = ["DEFAULT_MODULE", "import_dev_pki", "import_p12", "init_token", "open_token", "write_config"]

DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


def write_config(token_dir: Path) -> Path:
    """Write a SoftHSM2 configuration whose token store is ``token_dir/tokens``; return its path."""
    store = token_dir / "tokens"
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = token_dir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {store}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        encoding="utf-8",
    )
    return conf


def init_token(conf: Path, label: str, pin: str, so_pin: str | None = None) -> None:
    """Initialise a new token ``label`` in the first free slot of the SoftHSM2 store of ``conf``."""
    # softhsm2-util takes the PINs as arguments (visible to local `ps` for a moment): development only.
    cmd = ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
           "--so-pin", so_pin or secrets.token_hex(8)]
    try:
        proc = subprocess.run(cmd, env=os.environ | {"SOFTHSM2_CONF": str(conf)}, capture_output=True,
                              text=True, check=False, timeout=60)
    except OSError as exc:
        raise ConfigurationError(f"softhsm2-util not available ({exc.strerror}); install softhsm2") from None
    if proc.returncode != 0:
        raise ConfigurationError(f"softhsm2-util could not initialise token {label!r}: {proc.stderr.strip()}")


def _key_attributes(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict:
    from pkcs11 import Attribute
    from pkcs11.util.ec import decode_ec_private_key
    from pkcs11.util.rsa import decode_rsa_private_key

    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    attrs = decode_ec_private_key(der) if isinstance(key, ec.EllipticCurvePrivateKey) else decode_rsa_private_key(der)
    return attrs | {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.SIGN: True, Attribute.EXTRACTABLE: False}


def import_p12(session, p12: Path, passphrase: bytes, label: str, ident: bytes, *, with_ca: bool = False) -> None:
    """Put the key and certificate of ``p12`` on the token of ``session`` (both labelled ``label``).

    ``with_ca`` also stores the first extra certificate of the file (the issuing CA) labelled ``ca``.
    """
    from pkcs11 import Attribute
    from pkcs11.util.x509 import decode_x509_certificate

    key, cert, extra = pkcs12.load_key_and_certificates(p12.read_bytes(), passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or cert is None:
        raise ConfigurationError(f"{p12} holds no usable key and certificate")
    names = {Attribute.LABEL: label, Attribute.ID: ident}
    session.create_object(_key_attributes(key) | names)
    der = cert.public_bytes(serialization.Encoding.DER)
    session.create_object(decode_x509_certificate(der) | names | {Attribute.TOKEN: True})
    if with_ca and extra:
        ca = extra[0].public_bytes(serialization.Encoding.DER)
        session.create_object(decode_x509_certificate(ca) | {Attribute.LABEL: "ca", Attribute.TOKEN: True})


def open_token(module: Path, token_label: str, pin: str):
    """A read-write user session on token ``token_label`` (a context manager).

    The process must see the intended ``SOFTHSM2_CONF`` before the module is first loaded.
    """
    import pkcs11

    return pkcs11.lib(str(module)).get_token(token_label=token_label).open(rw=True, user_pin=pin)


def import_dev_pki(module: Path, token_label: str, pin: str, pki: DevPki, passphrase: bytes) -> None:
    """Put every role's key and certificate (label = role) and the issuing CA (label ``ca``) on the token."""
    with open_token(module, token_label, pin) as session:
        for n, role in enumerate(ROLES, start=1):
            import_p12(session, pki.p12[role], passphrase, role, bytes([n]), with_ca=n == 1)


def main() -> None:
    from pipeline.core.settings import get_settings
    from signing.pki import ensure_dev_pki

    parser = argparse.ArgumentParser(prog="python tests/support/softhsm.py")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("provision", help="new SoftHSM2 token with the dev PKI's keys")
    cmd.add_argument("token_dir", type=Path)
    cmd.add_argument("--label", default=None, help="token label (default: HOSO_PKCS11_TOKEN_LABEL)")
    args = parser.parse_args()
    settings = get_settings()
    pin = os.environ.get(settings.pkcs11_pin_env, "")
    if not pin:
        parser.error(f"set {settings.pkcs11_pin_env} to the user PIN")
    label = args.label or settings.pkcs11_token_label
    passphrase = settings.pki_passphrase.get_secret_value().encode()
    pki = ensure_dev_pki(settings.resolved_pki_dir, passphrase, agency_name=settings.agency_name)
    conf = write_config(args.token_dir.resolve())
    init_token(conf, label, pin, os.environ.get("HOSO_PKCS11_SO_PIN"))
    os.environ["SOFTHSM2_CONF"] = str(conf)
    import_dev_pki(settings.pkcs11_module, label, pin, pki, passphrase)
    print(conf)


if __name__ == "__main__":
    main()
