"""Cheaper CMS assembly for pyHanko signers (a mixin shared by the PKCS#12, PKCS#11 and remote signers).

asn1crypto never clears the "mutated" flag of a structure built from Python values, so every
``dump()`` of a freshly built CMS structure re-encodes its whole subtree (and re-checks every
DEFAULT field by building and encoding the default value); pyHanko dumps the signed attributes and
the SignerInfo several times per signature, which made asn1crypto about 40 % of a B-B signature.

:class:`FastCmsMixin` changes nothing in the output, only how it is built:

* the signing-certificate-v2 attribute (ESS certificate ID of the signer) is encoded once per
  certificate and reused as parsed DER;
* the signed attributes and the SignerInfo are re-parsed from their DER once built, so later dumps
  reuse the encoding instead of rebuilding it.
"""

from __future__ import annotations

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.sign import attributes
from pyhanko.sign.general import as_signing_certificate_v2

__all__ = ["FastCmsMixin"]


class _CachedSigningCertificateV2(attributes.CMSAttributeProvider):
    """signing-certificate-v2 from a pre-encoded value (identical to pyHanko's SigningCertificateV2Provider)."""

    attribute_type = "signing_certificate_v2"

    def __init__(self, der: bytes) -> None:
        self._der = der

    async def build_attr_value(self, dry_run: bool = False) -> tsp.SigningCertificateV2:
        return tsp.SigningCertificateV2.load(self._der)


class FastCmsMixin:
    """Mix in before a :class:`pyhanko.sign.signers.Signer` class (see the module docstring)."""

    _ess_cert_id: tuple[bytes, bytes] | None = None  # (certificate SHA-256, encoded SigningCertificateV2)

    def _signing_certificate_v2_der(self, cert: asn1_x509.Certificate) -> bytes:
        cached = self._ess_cert_id
        if cached is None or cached[0] != cert.sha256:  # the certificate may be loaded/replaced later
            cached = self._ess_cert_id = (cert.sha256, as_signing_certificate_v2(cert).dump())
        return cached[1]

    def _signed_attr_providers(self, *args, **kwargs):
        for provider in super()._signed_attr_providers(*args, **kwargs):  # type: ignore[misc]
            if type(provider) is attributes.SigningCertificateV2Provider:
                yield _CachedSigningCertificateV2(self._signing_certificate_v2_der(provider.signing_cert))
            else:
                yield provider

    async def signed_attrs(self, *args, **kwargs) -> cms.CMSAttributes:
        built = await super().signed_attrs(*args, **kwargs)  # type: ignore[misc]
        return cms.CMSAttributes.load(built.dump())

    def signer_info(self, digest_algorithm: str, signed_attrs, signature) -> cms.SignerInfo:
        built = super().signer_info(digest_algorithm, signed_attrs, signature)  # type: ignore[misc]
        return cms.SignerInfo.load(built.dump())
