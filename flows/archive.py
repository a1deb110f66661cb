"""The archive job: reprocess every dossier in a folder, one Prefect task per dossier."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.runtime import services
from pipeline.domain.handover import load_agency_map
from pipeline.usecases.archive import BatchInput, BatchItemResult, discover_batch, process_one
from pipeline.usecases.handover import write_handover_record
from pipeline.usecases.upkeep import sweep_records


class BatchSummary(BaseModel):
    batch_id: str
    total: int
    processed: int
    already_done: int
    failed: int
    failures: dict[str, str]
    seconds: float
    swept: int = 0  # leftovers of crashed runs resolved before the batch (hoso sweep)
    handover_record: str | None = None  # object key of the signed hand-over record (legacy dossiers handed over)


# Idempotency lives in the registry (input SHA-256), not in Prefect's result cache: the registry is
# the source of truth, and a cache that outlived a wiped registry would skip work wrongly.
@task(name="reprocess-dossier", cache_policy=NO_CACHE, task_run_name="{item.name}")
def reprocess_dossier(item: BatchInput, batch_id: str) -> BatchItemResult:
    """Desk chain on one archived dossier, recorded as a batch item whatever happens."""
    svc = services()
    result = process_one(item, svc)
    svc.registry.record_batch_item(
        batch_id,
        item.name,
        outcome=result.outcome,
        dossier_code=result.dossier_code,
        reason=result.reason,
    )
    return result


@flow(name="hoso-reprocess", validate_parameters=False, task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]  # Prefect's generic runner typing
def reprocess_flow(
    folder: str, procedure: str | None = None, batch_id: str | None = None, show_progress: bool = True,
    agency_map: str | None = None,
) -> BatchSummary:
    """Reprocess a folder of dossiers, after sweeping what crashed runs left; a failed dossier never stops the
    others."""
    start = datetime.now(UTC)
    batch_id = batch_id or f"batch-{start:%Y%m%dT%H%M%S%fZ}"
    svc = services()
    swept = sweep_records(svc.store, svc.registry, svc.settings)
    items = discover_batch(Path(folder), procedure, **_handover_options(agency_map, batch_id, svc.settings.timezone))
    results: list[BatchItemResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        tracker = bar.add_task("reprocess", total=len(items))
        futures = [reprocess_dossier.submit(item, batch_id) for item in items]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            bar.update(tracker, advance=1, description=f"{result.name}: {result.outcome}")
    counts = Counter(r.outcome for r in results)
    handover = write_handover_record(svc, batch_id, items, results) if any(i.legacy for i in items) else None
    return BatchSummary(
        batch_id=batch_id,
        total=len(items),
        processed=counts["processed"],
        already_done=counts["already_done"],
        failed=counts["failed"],
        failures={r.name: r.reason or "" for r in results if r.outcome == "failed"},
        seconds=round((datetime.now(UTC) - start).total_seconds(), 2),
        swept=len(swept.items),
        handover_record=handover.object_key if handover else None,
    )


def _handover_options(agency_map: str | None, batch_id: str, tz: str) -> dict[str, Any]:
    """discover_batch's hand-over arguments (issue 12 item 4: pipeline/usecases/handover.py)."""
    return {"agency_map": load_agency_map(Path(agency_map)) if agency_map else None, "batch_id": batch_id, "tz": tz}
