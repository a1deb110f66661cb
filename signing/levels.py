"""PAdES baseline levels and what each needs: B-B, B-T (RFC 3161 signature timestamp), B-LT (revocation
data embedded in the DSS), B-LTA (a document timestamp over everything).

A level that the configuration cannot honour is lowered, never faked: without a TSA URL every level
becomes B-B; a signer certificate that names no OCSP responder or CRL (the dev PKI) stops at B-T.
Each lowering is logged as a warning.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from functools import lru_cache
from io import BytesIO

from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError
from pyhanko_certvalidator.fetchers.api import Fetchers
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.path import ValidationPath

from pipeline.core.errors import SigningFailed

__all__ = [
    "Level",
    "add_document_timestamp",
    "effective_level",
    "forget_validation_contexts",
    "has_revocation_pointers",
    "signing_validation_context",
    "timestamper_for",
]

log = logging.getLogger(__name__)


class Level(enum.StrEnum):
    """PAdES baseline levels, in increasing order of strength."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def rank(self) -> int:
        return list(Level).index(self)

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank >= other.rank

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank < other.rank


def has_revocation_pointers(cert: asn1_x509.Certificate | None) -> bool:
    """Whether ``cert`` names an OCSP responder or a CRL distribution point."""
    if cert is None:
        return False
    return bool(cert.ocsp_urls or cert.crl_distribution_points)


def effective_level(requested: Level, tsa_url: str | None, cert: asn1_x509.Certificate | None) -> Level:
    """The strongest level not above ``requested`` that ``tsa_url`` and ``cert`` allow."""
    level = requested
    if level >= Level.B_T and not tsa_url:
        _warn_once("PAdES %s needs a timestamp server (HOSO_TSA_URL); signing at B-B", requested)
        return Level.B_B
    if level >= Level.B_LT and not has_revocation_pointers(cert):
        _warn_once("PAdES %s needs a certificate with OCSP/CRL pointers; signing at B-T", requested)
        return Level.B_T
    return level


_warned: set[tuple[str, Level]] = set()


def _warn_once(message: str, level: Level) -> None:
    """A configuration's downgrade, logged once per process: not three lines for every dossier signed."""
    if (message, level) not in _warned:
        _warned.add((message, level))
        log.warning(message, level)


class _TimeStamper(RequestsHTTPTimeStamper):
    """Validates the TSA's certificate once per validation context.

    A B-LTA signature validates the TSA's certificate path (with revocation) for the signature
    timestamp and again, in the same context and at the same validation time, for the document
    timestamp; the second run repeats the first.
    """

    def __init__(self, url: str, timeout: int) -> None:
        super().__init__(url, timeout=timeout)
        self._paths: weakref.WeakKeyDictionary[ValidationContext, list[ValidationPath]] = (
            weakref.WeakKeyDictionary()
        )

    async def validation_paths(self, validation_context: ValidationContext) -> AsyncIterator[ValidationPath]:
        paths = self._paths.get(validation_context)
        if paths is None:
            paths = [path async for path in super().validation_paths(validation_context)]
            self._paths[validation_context] = paths
        for path in paths:
            yield path


@lru_cache(maxsize=8)
def timestamper_for(tsa_url: str | None) -> RequestsHTTPTimeStamper | None:
    """An RFC 3161 client for ``tsa_url`` (None when no URL), one per URL and process.

    Kept because pyHanko sizes the signature with a dummy timestamp request per client: a fresh
    client per signature would cost an extra TSA round trip every time.
    """
    if not tsa_url:
        return None
    return _TimeStamper(tsa_url, timeout=10)


#: How long a thread reuses the OCSP responses, CRLs and certificates fetched for signing.
CONTEXT_TTL_SECONDS = 120.0
#: Fetched data that expires sooner than this is fetched again rather than reused.
_FRESH_MARGIN = dt.timedelta(seconds=30)
_fetch_caches = threading.local()


def _next_updates(fetchers: Fetchers) -> Iterator[dt.datetime | None]:
    for response in fetchers.ocsp_fetcher.fetched_responses():
        try:
            singles = response.basic_ocsp_response["tbs_response_data"]["responses"]
        except (ValueError, KeyError, TypeError, AttributeError):  # not a basic response: never reuse it
            yield None
            continue
        for single in singles:
            yield single["next_update"].native
    for crl in fetchers.crl_fetcher.fetched_crls():
        yield crl["tbs_cert_list"]["next_update"].native


def _reusable(fetchers: Fetchers, now: dt.datetime) -> bool:
    """Whether everything ``fetchers`` holds stays valid for :data:`_FRESH_MARGIN` (none without nextUpdate)."""
    return all(nu is not None and nu > now + _FRESH_MARGIN for nu in _next_updates(fetchers))


def signing_validation_context(
    extra_certs: Iterable[asn1_x509.Certificate], trust_roots: Iterable[asn1_x509.Certificate] = ()
) -> ValidationContext:
    """A context that fetches OCSP/CRL data while signing (to embed it for B-LT and up).

    The anchors are the configured trust roots plus any self-signed certificate the signer carries:
    the signer only collects validation data here; whether to trust it is the verifier's decision.

    Every call returns a new context, validating at the current time. Within one thread the contexts
    for the same certificates share their fetchers (and so the OCSP responses, CRLs and certificates
    fetched) for at most :data:`CONTEXT_TTL_SECONDS`, so a burst of signatures fetches each OCSP response
    and CRL once. Reused data is validated again at every signature (signature, freshness at the
    current time, status); fetchers holding any response or CRL without a nextUpdate, or expiring
    within 30 s, are replaced. As with any OCSP cache, a certificate revoked within the window is seen
    as revoked once the cached response is replaced. Fetch failures are cached too: call
    :func:`forget_validation_contexts` after a failure.
    """
    extra = list(extra_certs)
    roots = list(trust_roots) + [c for c in extra if c.self_signed in ("maybe", "yes")]
    key = (tuple(c.sha256 for c in extra), tuple(r.sha256 for r in roots))
    cache: dict = _fetch_caches.__dict__.setdefault("by_key", {})
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and now - hit[0] < CONTEXT_TTL_SECONDS and _reusable(hit[1], dt.datetime.now(dt.UTC)):
        fetchers = hit[1]
    else:
        # The requests backend: plain blocking HTTP, no client sessions to close (aiohttp's, the default,
        # leaks one "Unclosed client session" per context when used through sign_pdf's asyncio.run).
        fetchers = RequestsFetcherBackend(per_request_timeout=10).get_fetchers()
        cache[key] = (now, fetchers)
    return ValidationContext(
        trust_roots=roots or None, other_certs=extra, allow_fetching=True, revocation_mode="hard-fail",
        fetchers=fetchers,
    )


def forget_validation_contexts() -> None:
    """Drop this thread's cached OCSP/CRL fetches (the next signing context fetches afresh)."""
    _fetch_caches.__dict__.pop("by_key", None)


def add_document_timestamp(
    pdf: bytes, tsa_url: str, validation_context: ValidationContext, *, field_name: str | None = None
) -> bytes:
    """Add fresh validation data for the latest (document) timestamp and a new document timestamp.

    This is the archive's upkeep (PAdES B-LTA renewal): run it before the last timestamp's TSA
    certificate expires or its algorithms weaken.
    """
    timestamper = timestamper_for(tsa_url)
    if timestamper is None:
        raise SigningFailed(
            "A document timestamp needs a timestamp server URL", "Chưa cấu hình máy chủ cấp dấu thời gian."
        )
    stamper = signers.PdfTimeStamper(timestamper, field_name=field_name)
    out = BytesIO()
    try:
        writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
        asyncio.run(
            stamper.async_update_archival_timestamp_chain(
                writer.prev, validation_context, in_place=False, output=out
            )
            if writer.prev.embedded_timestamp_signatures
            else stamper.async_timestamp_pdf(writer, "sha256", validation_context, output=out)
        )
    except TimestampRequestError as exc:
        raise SigningFailed(
            f"No document timestamp from {tsa_url} ({exc})",
            "Không lấy được dấu thời gian từ máy chủ cấp dấu thời gian; vui lòng thử lại.",
        ) from exc
    except (PathBuildingError, PathValidationError) as exc:
        raise SigningFailed(
            f"Cannot collect validation data for the timestamp chain ({type(exc).__name__}: {exc})",
            "Không thu thập được dữ liệu kiểm tra chứng thư cho dấu thời gian.",
        ) from exc
    except (SigningError, PdfError, ValueError, KeyError, OSError) as exc:
        raise SigningFailed(f"Adding a document timestamp failed ({type(exc).__name__}: {exc})") from exc
    return out.getvalue()
