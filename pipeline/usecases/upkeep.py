"""Archive upkeep: renew the long-term validity of stored signed PDFs (``hoso signing refresh``).

A B-LTA file stays verifiable for as long as its newest document timestamp can be trusted, i.e. until
that timestamp's TSA certificate expires (or its algorithms weaken). Before then, a new document
timestamp over the file, with fresh validation data for the previous one, carries the proof forward.
A B-LT file (validation data, no document timestamp) gets its first one.

The renewed file is stored only after it verifies, as a new version of the same object: the
previous version stays in the store (both backends keep versions, and it was locked when it was
recorded) and is also copied to ``dossiers/<code>/history/<artifact>/<n>.pdf``
(:func:`storage.keys.history_key`, registered as artifact ``history:<artifact>:<n>``). Both writes are
one attempt: recorded together with an event in one registry transaction, then locked; a failure
removes exactly what the attempt wrote.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Literal

from asn1crypto import x509 as asn1_x509
from pydantic import BaseModel
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter

from pipeline.core.errors import ConfigurationError, HosoError, SigningFailed
from pipeline.core.models import DossierState
from pipeline.core.settings import Settings
from signing.identities import SignerIdentities
from signing.levels import add_document_timestamp, forget_validation_contexts, signing_validation_context
from signing.verify import verify_pdf
from storage import keys
from storage.objects import ObjectStore
from storage.records import AttemptWriter, Retention, SweepReport, sweep
from storage.registry import Registry

__all__ = ["REFRESHABLE_ARTIFACTS", "RefreshItem", "refresh_reason", "refresh_stored", "sweep_records"]

log = logging.getLogger(__name__)

#: Registry artifacts that carry long-term signatures.
REFRESHABLE_ARTIFACTS = (keys.RESULT, keys.DIGITISED)


class RefreshItem(BaseModel):
    """What happened to one stored PDF."""

    dossier_code: str
    artifact: str
    object_key: str
    reason: str
    action: Literal["refreshed", "would_refresh", "failed"]
    history_key: str | None = None
    error: str | None = None


def refresh_reason(pdf: bytes, within: dt.timedelta, now: dt.datetime) -> str | None:
    """Why ``pdf`` needs a new document timestamp now, or None.

    Yes when the newest document timestamp's TSA certificate expires within ``within`` of ``now``, or
    when there is no document timestamp but the file is at B-LT (a DSS and timestamped signatures).
    """
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        stamps = reader.embedded_timestamp_signatures
        if stamps:
            cert = stamps[-1].signer_cert
            if cert is None:
                return "the last document timestamp carries no TSA certificate"
            expires = cert.not_valid_after
            if expires - now <= within:
                return f"the TSA certificate of the last document timestamp expires on {expires:%Y-%m-%d}"
            return None
        sigs = reader.embedded_regular_signatures
        timestamped = sigs and all(
            next(extract_tst_data_iter(s.signer_info, signed=False), None) is not None for s in sigs
        )
        if timestamped and "/DSS" in reader.root:
            return "B-LT without a document timestamp"
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the signatures of a stored PDF: %s", exc)
    return None


def _history_key(store: ObjectStore, code: str, artifact: str) -> str:
    """The first free version key in the artifact's history."""
    taken = {info.key for info in store.list(keys.history_prefix(code, artifact))}
    n = 1
    while keys.history_key(code, artifact, n) in taken:
        n += 1
    return keys.history_key(code, artifact, n)


def refresh_stored(
    store: ObjectStore,
    registry: Registry,
    *,
    tsa_url: str | None,
    trust_roots: Sequence[asn1_x509.Certificate],
    trust_root_files: Sequence[bytes | Path],
    within: dt.timedelta,
    identities: SignerIdentities | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    on_item: Callable[[RefreshItem], None] | None = None,
    retention: Retention | None = None,
) -> list[RefreshItem]:
    """Add a document timestamp to every stored result/digitised copy that needs one (see module doc);
    the renewed file must verify as ``hoso verify`` would, with ``identities`` for the signers' roles.
    ``retention`` (``HOSO_RETENTION``) locks the new versions once recorded."""
    if not tsa_url and not dry_run:
        raise ConfigurationError(
            "hoso signing refresh needs a timestamp server (HOSO_TSA_URL)",
            "Cần cấu hình máy chủ cấp dấu thời gian (HOSO_TSA_URL) để gia hạn chữ ký.",
        )
    now = now or dt.datetime.now(dt.UTC)
    items: list[RefreshItem] = []
    for record in registry.list_dossiers():
        for name in REFRESHABLE_ARTIFACTS:
            art = record.artifacts.get(name)
            if art is None:
                continue
            pdf = store.get_bytes(art.object_key, art.version_id)
            reason = refresh_reason(pdf, within, now)
            if reason is None:
                continue
            item = RefreshItem(
                dossier_code=record.code, artifact=name, object_key=art.object_key, reason=reason,
                action="would_refresh" if dry_run else "refreshed",
            )
            if not dry_run:
                item = _refresh_one(store, registry, record.code, record.state, item, pdf, tsa_url or "",
                                    trust_roots, trust_root_files, identities, retention)
            items.append(item)
            if on_item is not None:
                on_item(item)
    return items


def _refresh_one(
    store: ObjectStore,
    registry: Registry,
    code: str,
    state: str,
    item: RefreshItem,
    pdf: bytes,
    tsa_url: str,
    trust_roots: Sequence[asn1_x509.Certificate],
    trust_root_files: Sequence[bytes | Path],
    identities: SignerIdentities | None,
    retention: Retention | None,
) -> RefreshItem:
    writer: AttemptWriter | None = None
    try:
        context = signing_validation_context([], trust_roots)
        renewed = add_document_timestamp(pdf, tsa_url, context)
        report = verify_pdf(renewed, trust_root_files, identities=identities)
        if not report.ok:
            raise SigningFailed(f"the renewed file does not verify: {report.summary_en}")
        history = _history_key(store, item.dossier_code, item.artifact)
        kept_as = keys.history_artifact(item.artifact, int(history.rsplit("/", 1)[1].removesuffix(".pdf")))
        writer = AttemptWriter.open(store, registry, "refresh", actor="archive", dossier_code=code)
        kept = writer.put_bytes(history, pdf, "application/pdf", artifact=kept_as)
        info = writer.put_bytes(item.object_key, renewed, "application/pdf", artifact=item.artifact)
        registry.transition(
            code, DossierState(state), actor="archive", action="signatures_refreshed",
            note=f"{item.artifact}: {item.reason}; previous version {history}",
            artifacts=[(item.artifact, info), (kept_as, kept)], allowed_from={DossierState(state)},
        )
    except HosoError as exc:
        forget_validation_contexts()
        if writer is not None:
            writer.rollback(reason=f"signature refresh failed: {exc}")
        return item.model_copy(update={"action": "failed", "error": str(exc)})
    try:
        writer.committed(retention)
    except HosoError as exc:  # recorded is recorded: the sweeper or fsck locks it later
        log.warning("could not lock the renewed %s of %s: %s", item.artifact, code, exc)
    return item.model_copy(update={"history_key": history})


def sweep_records(store: ObjectStore, registry: Registry, settings: Settings) -> SweepReport:
    """Resolve what crashed or failed attempts left (``hoso sweep``, and the start of every ``hoso reprocess``):
    stale reservations discarded with their objects, unrecorded versions removed, missing locks applied."""
    return sweep(store, registry, settings.retention, lease_for=dt.timedelta(seconds=settings.lease_seconds))
