"""Who may sign in which role: the certificates configured per signing role, by SHA-256 fingerprint.

A role a signature claims in the document (its field name, its reason) is only a name anyone can
write; it counts when the signing certificate is one configured for that role. Identities come from
the settings (``HOSO_SIGNER_CERTS``: PEM/DER files or SHA-256 fingerprints per role), else from the
key source itself: the development PKI's role certificates, or the certificates a PKCS#11 token holds
under each role's label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from pyhanko.keys import load_certs_from_pemder_data

from pipeline.core.errors import ConfigurationError
from signing.pki import ROLES, Role

__all__ = ["SignerIdentities", "parse_fingerprint"]

_FINGERPRINT = re.compile(r"(?:sha256:)?((?:[0-9a-f]{2}:?){31}[0-9a-f]{2})", re.IGNORECASE)


def parse_fingerprint(text: str) -> bytes | None:
    """The SHA-256 in ``text`` (64 hex digits, colons and a ``sha256:`` prefix allowed), else None."""
    match = _FINGERPRINT.fullmatch(text.strip())
    return bytes.fromhex(match.group(1).replace(":", "")) if match else None


def _certificates_in(path: Path) -> list[asn1_x509.Certificate]:
    try:
        found = list(load_certs_from_pemder_data(path.read_bytes()))
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read signer certificate {path}: {exc.strerror}",
            "Không đọc được tệp chứng thư của người ký đã cấu hình.",
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"Signer certificate {path} is not a PEM or DER certificate",
            "Tệp chứng thư của người ký đã cấu hình không hợp lệ.",
        ) from exc
    if not found:
        raise ConfigurationError(
            f"Signer certificate file {path} holds no certificate",
            "Tệp chứng thư của người ký đã cấu hình không chứa chứng thư nào.",
        )
    return found


class SignerIdentities:
    """The certificates (SHA-256 of their DER) configured for each signing role."""

    def __init__(self, by_role: Mapping[str, Iterable[bytes]] | None = None) -> None:
        self._by_role = {role: frozenset(fps) for role, fps in (by_role or {}).items() if role in ROLES}

    @classmethod
    def from_certificates(
        cls, by_role: Mapping[str, Iterable[asn1_x509.Certificate]] | Mapping[Role, Iterable[asn1_x509.Certificate]]
    ) -> SignerIdentities:
        return cls({role: [cert.sha256 for cert in certs] for role, certs in by_role.items()})

    @classmethod
    def from_config(
        cls, by_role: Mapping[str, Sequence[str | Path]] | Mapping[Role, Sequence[str | Path]]
    ) -> SignerIdentities:
        """Identities from entries per role: a SHA-256 fingerprint, or a PEM/DER file (all its certificates)."""
        fingerprints: dict[str, list[bytes]] = {}
        for role, entries in by_role.items():
            if role not in ROLES:
                raise ConfigurationError(
                    f"Unknown signing role {role!r} in the signer identities (roles: {', '.join(ROLES)})",
                    "Vai trò ký số trong cấu hình người ký không hợp lệ.",
                )
            found = fingerprints.setdefault(role, [])
            for entry in entries:
                fingerprint = parse_fingerprint(entry) if isinstance(entry, str) else None
                if fingerprint is not None:
                    found.append(fingerprint)
                else:
                    found.extend(cert.sha256 for cert in _certificates_in(Path(entry)))
        return cls(fingerprints)

    def roles_of(self, cert: asn1_x509.Certificate | None) -> list[str]:
        """The roles ``cert`` is configured for (in :data:`signing.pki.ROLES` order)."""
        if cert is None:
            return []
        digest = cert.sha256
        return [role for role in ROLES if digest in self._by_role.get(role, ())]

    def __bool__(self) -> bool:
        return any(self._by_role.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{role}: {len(fps)}" for role, fps in self._by_role.items())
        return f"SignerIdentities({counts})"
