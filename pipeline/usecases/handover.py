"""The hand-over record (biên bản bàn giao) of an archive batch: built from what the batch did and what the
registry holds, signed, stored in the object store and recorded in the registry."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pipeline.domain.handover import HandoverEntry, HandoverRecord, sign_handover
from pipeline.usecases.archive import BatchInput, BatchItemResult
from pipeline.usecases.services import Services
from signing.levels import Level
from storage import keys
from storage.records import AttemptWriter
from storage.registry import HandoverRecordInfo

log = logging.getLogger(__name__)

__all__ = ["handover_entries", "handover_record", "write_handover_record"]


def handover_entries(
    services: Services, items: Iterable[BatchInput], results: Iterable[BatchItemResult]
) -> list[HandoverEntry]:
    """One entry per hand-over row of the batch's manifest: a dossier as the registry now holds it, or a failure
    with its reason (a row the batch has no result for is a failure too: nothing is dropped)."""
    by_name = {r.name: r for r in results}
    entries = []
    for item in items:
        if item.legacy is None:
            continue
        raw, handover, result = item.legacy, item.handover, by_name.get(item.name)
        if result is None or result.outcome == "failed" or result.dossier_code is None:
            entries.append(
                HandoverEntry(
                    file=item.name,
                    outcome="failed",
                    legacy_code=raw.get("legacy_code"),
                    procedure=item.procedure,
                    state=raw.get("state"),
                    from_agency=raw.get("agency_code"),
                    to_agency=handover.to_agency if handover else None,
                    reason=(result.reason if result else None) or "no outcome recorded for this row",
                )
            )
            continue
        record = services.registry.get(result.dossier_code)
        entries.append(
            HandoverEntry(
                file=item.name,
                outcome="handed_over" if result.outcome == "processed" else "already_done",
                legacy_code=record.legacy_code or record.code,
                procedure=record.procedure,
                procedure_label=services.catalog.procedure(record.procedure).label,
                state=record.state.value,
                received_at=record.received_at,
                due_at=record.due_at,
                from_agency=record.handed_over_from,
                to_agency=record.agency_code,
                to_agency_name=handover.to_agency_name if handover else None,
            )
        )
    return entries


def handover_record(
    services: Services,
    batch_id: str,
    items: Iterable[BatchInput],
    results: Iterable[BatchItemResult],
    *,
    now: datetime | None = None,
) -> HandoverRecord:
    return HandoverRecord(
        batch_id=batch_id,
        issued_at=now or datetime.now(UTC),
        agency_name=services.settings.agency_name,
        entries=handover_entries(services, items, results),
    )


def write_handover_record(
    services: Services,
    batch_id: str,
    items: Iterable[BatchInput],
    results: Iterable[BatchItemResult],
    *,
    actor: str = "archive",
    now: datetime | None = None,
) -> HandoverRecordInfo:
    """Sign the batch's hand-over record (the desk officer's key, like the forms), store it under
    ``handovers/<batch>/bien-ban-ban-giao.pdf`` and record it in the registry (then lock it, record class
    ``form``). A failure removes what this attempt wrote and raises; the dossiers stay handed over, and a
    re-run of the batch writes the record (listing them as handed over already)."""
    settings, store, registry = services.settings, services.store, services.registry
    record = handover_record(services, batch_id, items, results, now=now)
    pdf = sign_handover(
        record,
        services.keys,
        signer_name=settings.officer_name,
        timestamp_url=settings.tsa_url,
        level=Level(settings.level_digitised),
        trust_roots=services.trust_roots,
    )
    writer = AttemptWriter.open(
        store, registry, "handover", actor=actor, lease_for=timedelta(seconds=settings.lease_seconds)
    )
    try:
        info = writer.put_bytes(keys.handover_key(batch_id), pdf, "application/pdf", artifact="handover")
        recorded = registry.record_handover(batch_id, info, totals=record.totals, summary=record.summary(), actor=actor)
    except BaseException as err:
        log.exception("hand-over record of %s failed; removing what this attempt wrote", batch_id)
        writer.rollback(reason=f"hand-over record failed: {type(err).__name__}: {err}")
        raise
    writer.committed(settings.retention)
    return recorded
