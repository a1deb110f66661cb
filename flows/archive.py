"""The archive job: a batch of dossiers (a folder or an S3 prefix) through the desk chain, one Prefect task per
dossier, on this machine or on the workers of a Prefect work pool.

Exactly once comes from the registry, not from Prefect. The batch flow (``hoso-reprocess``) queues every input
in the registry (:mod:`storage.batches`); whoever works on the batch — its own task runner, or K worker flow
runs (``hoso-archive-worker``) handed to a work pool's workers — claims inputs one at a time under a lease,
runs the desk on each as a task named by the input, and finishes it with its outcome in one transaction. A
worker that dies leaves its claim; once the lease expires (at once when its process is known to be gone)
another worker takes the input again, and the desk's own reservation by input SHA-256 resumes what the dead
one had half written. The batch is over when every input is done: processed, already done, or failed with
its reason.

Prefect shows: a Failed task (with the reason) for each failed dossier, Completed for the others; retries
with backoff for transient errors only (:mod:`flows.retry`); the desk's stage timings in each task's log;
the hoso loggers forwarded to the Prefect API; a table artifact of the batch. The batch flow run itself is
Completed once every input is accounted for, failed dossiers included (they are listed in its artifact and
summary); it fails only when it could not account for every input. A global concurrency limit
(:data:`OCR_LIMIT`) caps simultaneous OCR over all workers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.retry import RETRIES, RETRY_DELAYS, is_transient
from flows.runtime import services
from pipeline.core.errors import HosoError, InputMissing, StorageFailed
from pipeline.core.inputs import display_name, folder_entries
from pipeline.core.settings import Settings
from pipeline.domain.handover import read_agency_map
from pipeline.usecases.archive import (
    MANIFEST,
    BatchInput,
    BatchItemResult,
    discover_batch,
    handover_rows,
    process_one,
)
from pipeline.usecases.desk import OCR_SLOT
from pipeline.usecases.upkeep import sweep_records
from storage.batches import BatchQueue
from storage.records import holder_alive, holder_id
from storage.registry import BatchItemRecord

log = logging.getLogger(__name__)

#: The Prefect global concurrency limit every worker's OCR stage takes a slot of.
OCR_LIMIT = "hoso-ocr"
#: The worker flow's deployment, registered by the batch on the work pool it is given (one per pool: a
#: deployment belongs to one pool, and batches on different pools must not move it under each other).
WORKER_FLOW, WORKER_DEPLOYMENT = "hoso-archive-worker", "archive-worker"
WORKER_ENTRYPOINT = "flows.archive:archive_worker_flow"
#: A process worker starts a flow run with this command itself. Without one it starts a "workspace supervisor"
#: process (Prefect 3.8: pull steps, code download) that then becomes the engine: a second Python start and
#: Prefect import, ~1 s of a core per run, for nothing — hoso's flows are installed code with no pull steps.
#: :mod:`flows.warm` forks the run from the worker's warm process, or becomes ``python -m prefect.engine``;
#: ``python`` is the worker's own (``python -m flows.worker`` puts its interpreter first on PATH).
ENGINE_JOB = {"command": "python -m flows.warm"}
#: How often a worker looks at its running dossiers (and the batch flow at the batch).
POLL_S = 1.0
#: How often the batch flow asks the registry whether its batch is done: its end is not held up by a long poll.
FINISH_POLL_S = 0.25
SLOT_POLL_S = 0.2  # how often a dossier waiting for an OCR slot asks again, at most
SLOT_LEASE_S = 60
SLOT_KEEP_S = 1.0  # a slot given back waits this long for its worker's next dossier (:class:`_OcrSlots`)
SLOT_KEEP_TURNS = 4  # dossiers in a row on one slot, at most
#: A worker run's tag naming its process (:func:`storage.records.holder_id`): a finished batch tells by it a run
#: whose worker died on this machine (marked Crashed at once) from one still ending.
HOLDER_TAG = "hoso-holder:"
#: Longest registry outage a worker waits through before its flow run fails (its claims then expire).
MAX_OUTAGE_S = 600.0
#: Rows of the batch's table artifact (failures first); the rest is in the registry (batch_items).
ARTIFACT_ROWS = 2000


class BatchSummary(BaseModel):
    batch_id: str
    total: int
    processed: int
    already_done: int
    failed: int
    failures: dict[str, str]
    seconds: float
    swept: int = 0  # leftovers of crashed runs resolved before the batch (hoso sweep)
    workers: int = 0  # worker flow runs dispatched to a work pool (0: the batch ran in its own process)
    handover_record: str | None = None  # object key of the signed hand-over record (legacy dossiers handed over)


# --- where the inputs are ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSource:
    """A batch's inputs: a folder (shared by every worker) or ``s3://bucket/prefix`` on the store's endpoint."""

    location: str
    procedure: str | None = None
    agency_map_csv: str | None = None  # the agency map's text (old → new agency codes for hand-over rows)
    batch_id: str = "batch"
    timezone: str = "Asia/Ho_Chi_Minh"

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def names(self, settings: Settings) -> list[str]:
        """The inputs' names as shown and recorded (nothing is read but the listing and the manifest): hand-over
        rows whose file is missing are inputs too, recorded failed with their reason."""
        if self.is_s3:
            from storage.inbox import S3Inbox

            listed = S3Inbox.parse(self.location, settings).names()
            shown = set(listed)
            return listed + [i.name for i in self.handover_inputs(settings, listed) if i.name not in shown]
        folder = Path(self.location)
        if not folder.is_dir():
            raise InputMissing(f"not a folder: {folder}", f"Không tìm thấy thư mục: {folder}")
        if self.hands_over(folder):
            return [i.name for i in self.describe_all(folder)]
        return [display_name(p.name) for p in folder_entries(folder) if p.name != MANIFEST]

    def hands_over(self, folder: Path) -> bool:
        """Whether the folder's manifest.csv has hand-over columns (or an agency map was given)."""
        manifest = folder / MANIFEST
        if self.agency_map_csv:
            return True
        if not manifest.is_file() or manifest.is_symlink():
            return False
        with manifest.open("rb") as fh:
            header = fh.readline().decode("utf-8-sig", "replace")
        return "legacy_code" in header

    def describe_all(self, folder: Path) -> list[BatchInput]:
        """Every input of a folder, with its hand-over."""
        return discover_batch(folder, self.procedure, **self._handover_options())

    def handover_inputs(self, settings: Settings, listed: list[str] | None = None) -> list[BatchInput]:
        """The manifest's hand-over rows as batch inputs — of a folder, or of an S3 prefix (its manifest.csv
        fetched; ``listed``: its entries, if listed already) — read from the manifest alone: what the batch's
        hand-over record needs. Empty when the manifest has no hand-over columns (and no map was given)."""
        if not self.is_s3:
            folder = Path(self.location)
            if not self.hands_over(folder):
                return []
            present = {p.name for p in folder_entries(folder) if p.name != MANIFEST}
            return handover_rows(folder, present, self.procedure, **self._handover_options())
        from storage.inbox import S3Inbox

        inbox = S3Inbox.parse(self.location, settings)
        with TemporaryDirectory(prefix="hoso-inbox-") as tmp:
            if inbox.fetch_manifest(Path(tmp)) is None or not self.hands_over(Path(tmp)):
                return []
            entries = set(listed if listed is not None else inbox.names())
            return handover_rows(Path(tmp), entries, self.procedure, **self._handover_options())

    def _handover_options(self) -> dict[str, Any]:
        from pipeline.domain.handover import parse_agency_map

        agency_map = parse_agency_map(self.agency_map_csv) if self.agency_map_csv else None
        return {"agency_map": agency_map, "batch_id": self.batch_id, "tz": self.timezone}

    @contextmanager
    def materialise(self, name: str, settings: Settings) -> Iterator[BatchInput]:
        """Input ``name`` as a batch input on this machine (an S3 entry fetched to a temporary folder)."""
        if not self.is_s3:
            yield self._describe(Path(self.location), name)
            return
        from storage.inbox import S3Inbox

        with TemporaryDirectory(prefix="hoso-inbox-") as tmp:
            S3Inbox.parse(self.location, settings).fetch(name, Path(tmp))
            yield self._describe(Path(tmp), name)

    def _describe(self, folder: Path, name: str) -> BatchInput:
        found = discover_batch(folder, self.procedure, only={name}, **self._handover_options())
        if found:
            return found[0]
        return BatchInput(name, folder / name, self.procedure, refused=f"input_missing: {name}: no longer in the batch")


# --- one dossier ---------------------------------------------------------------------------------


@dataclass
class _Lease:
    id: UUID
    client: Any  # the API client it was granted through
    turns: int = 1  # dossiers that have used it in a row
    kept_until: float = 0.0  # while given back: when it is released if this process does not take it again


class _OcrSlots:
    """This process's slots of the global OCR limit (:data:`OCR_LIMIT`), under leases that one thread renews and
    releases.

    Each slot costs two requests (asked for, released: ~30 ms of a dossier in a busy worker, measured). A slot
    given back is kept for :data:`SLOT_KEEP_S`: the worker's next dossier, whose OCR follows within a fraction
    of a second, takes it again without asking — at most :data:`SLOT_KEEP_TURNS` dossiers in a row, so that a
    worker waiting for a full limit gets its turn. Requests go through one API client (a new client checks the
    server's version first: ~17 ms).

    Not Prefect's ``concurrency()``: a denied request there waits out the server's Retry-After, the limit's
    mean occupancy (seconds), however soon a slot is freed; here it is asked for again every
    :data:`SLOT_POLL_S` at most. A dead worker's slot comes back when its lease lapses (60 s: the least the
    server accepts), then the server's lease check frees it (every 15 s by default).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._client: Any = None
        self._url: str | None = None
        self._held: dict[UUID, _Lease] = {}  # in use by a dossier
        self._kept: list[_Lease] = []  # given back, to be taken again or released
        self._releasing = 0  # taken off ``_kept`` and being released (no dossier may take them again)
        self._thread: threading.Thread | None = None

    def _api(self) -> Any:
        """The client for the current API URL (made on first use, or when the URL changed: tests)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        with self._cond:
            if self._client is None or self._url != url:
                self._client, self._url = get_client(sync_client=True).__enter__(), url
            return self._client

    def _ask(self, client: Any) -> _Lease | None:
        """A slot from the server, asked for until granted; None when there is no such limit."""
        import random

        import httpx
        from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse

        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[OCR_LIMIT], slots=1, mode="concurrency", lease_duration=SLOT_LEASE_S
                )
                break
            except httpx.HTTPStatusError as err:
                if err.response.status_code != 423:
                    raise
                retry_after = float(err.response.headers.get("Retry-After") or SLOT_POLL_S)
                time.sleep(min(retry_after, SLOT_POLL_S) * random.uniform(0.8, 1.2))
        granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        return _Lease(granted.lease_id, client) if granted.limits else None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One slot while the block runs (one this process kept, or a new one), given back at the end."""
        client = self._api()
        with self._cond:
            lease = next((k for k in self._kept if k.client is client and k.turns < SLOT_KEEP_TURNS), None)
            if lease is not None:
                self._kept.remove(lease)
                lease.turns += 1
        if lease is None:
            lease = self._ask(client)
        if lease is None:  # no such limit (removed by hand): OCR is not capped
            yield
            return
        with self._cond:
            self._held[lease.id] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._keep, name="hoso-ocr-slots", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                del self._held[lease.id]
                # used its turns: released now (kept for no one), so that a waiting worker can have it
                lease.kept_until = time.monotonic() + (SLOT_KEEP_S if lease.turns < SLOT_KEEP_TURNS else 0.0)
                self._kept.append(lease)
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Release every slot given back, now (the end of a worker's run); whether they all were."""
        with self._cond:
            for lease in self._kept:
                lease.kept_until = 0.0
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._kept and not self._releasing, timeout)

    def _keep(self) -> None:
        """Release the slots given back once their keeping is over; renew the held and kept ones each third of a
        lease (a lease granted since the last renewal waits at most one third)."""
        renew_at = time.monotonic() + SLOT_LEASE_S / 3
        while True:
            with self._cond:  # woken by every slot given back: its keeping may end before the others'
                while (wait := min([renew_at, *(k.kept_until for k in self._kept)]) - time.monotonic()) > 0:
                    self._cond.wait(wait)
                now = time.monotonic()
                ending = [k for k in self._kept if k.kept_until <= now]
                self._kept = [k for k in self._kept if k.kept_until > now]  # before the release: no one takes them
                self._releasing += len(ending)
                renewing = [*self._held.values(), *self._kept] if now >= renew_at else []
            for lease in ending:
                try:
                    lease.client.release_concurrency_slots_with_lease(lease.id)
                except Exception as err:  # its lease lapses within a minute; the server then frees the slot
                    log.warning("OCR slot lease %s not released: %s", lease.id, err)
            with self._cond:
                self._releasing -= len(ending)
                self._cond.notify_all()
            for lease in renewing:
                try:
                    lease.client.renew_concurrency_lease(lease.id, lease_duration=SLOT_LEASE_S)
                except Exception as err:  # the server away for a moment: the lease has two more thirds to go
                    log.warning("OCR slot lease %s not renewed: %s", lease.id, err)
            if now >= renew_at:
                renew_at = time.monotonic() + SLOT_LEASE_S / 3


_ocr_slots = _OcrSlots()


def _ocr_slot() -> AbstractContextManager[None]:
    """One slot of the global OCR limit for the block (:class:`_OcrSlots`)."""
    return _ocr_slots.slot()


def _retry_if_transient(task: Any, task_run: Any, state: State[Any]) -> bool:
    """Prefect's retry condition: only an exception :func:`flows.retry.is_transient` names (never a dossier
    that failed on its input, which comes back as a Failed state without one)."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


@task(
    name="reprocess-dossier",
    task_run_name="{name}",
    cache_policy=NO_CACHE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry_if_transient,
)
def reprocess_dossier(name: str, batch_id: str, source: BatchSource, holder: str) -> BatchItemResult | State[Any]:
    """The desk chain on one input of the batch, finished in the registry with its outcome: a Failed task
    (with the reason) when the dossier failed; transient errors are raised, to be retried."""
    logger = get_run_logger()
    svc = services()
    token = OCR_SLOT.set(_ocr_slot)
    try:
        with source.materialise(name, svc.settings) as item:
            result = process_one(item, svc)
    finally:
        OCR_SLOT.reset(token)
    stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items())
    queue = BatchQueue(svc.registry)
    if not queue.finish(batch_id, name, holder, result.outcome, dossier_code=result.dossier_code, reason=result.reason):
        logger.warning("%s: another worker took this input over meanwhile; its outcome is recorded there", name)
    if result.outcome == "failed":
        logger.error("%s failed: %s", name, result.reason)
        return Failed(message=f"{name}: {result.reason}")
    logger.info("%s %s: %s in %.2f s (%s)", name, result.outcome, result.dossier_code, result.seconds, stages or "-")
    return result


# --- a worker's loop -----------------------------------------------------------------------------


Start = Callable[[str], "concurrent.futures.Future[Any]"]
Settle = Callable[[str], None]


def drain(
    queue: BatchQueue,
    batch_id: str,
    holder: str,
    start: Start,
    settle: Settle,
    *,
    slots: int = 1,
    lease_for: timedelta,
    poll: float = POLL_S,
    on_progress: Callable[[], None] | None = None,
) -> int:
    """Claim inputs of ``batch_id`` for ``holder`` and run them (``start``), at most ``slots`` at once, until the
    batch has none left — waiting for inputs other workers hold, which come back if those die. ``settle``
    is called once each run has ended. Claims are renewed while their runs go on. Returns how many ran here.
    """
    running: dict[concurrent.futures.Future[Any], str] = {}
    ran = 0
    renewed = time.monotonic()
    outage_since: float | None = None
    while True:
        try:
            while len(running) < slots and (name := queue.claim(batch_id, holder, lease_for)) is not None:
                running[start(name)] = name
            if not running and queue.progress(batch_id).finished:
                return ran
            if running and time.monotonic() - renewed >= lease_for.total_seconds() / 3:
                lost = queue.renew(batch_id, running.values(), holder, lease_for)
                renewed = time.monotonic()
                if lost:
                    log.warning("claims taken over by other workers: %s", ", ".join(lost))
            outage_since = None
        except StorageFailed as err:  # the registry is away: wait for it (the claims' leases run on)
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > MAX_OUTAGE_S:
                raise
            log.warning("batch %s: registry unavailable, waiting: %s", batch_id, err)
        if not running:
            time.sleep(poll)
            continue
        done, _ = concurrent.futures.wait(running, timeout=poll, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            settle(running.pop(future))
            ran += 1
            if on_progress is not None:
                on_progress()


def _work(batch_id: str, source: BatchSource, slots: int, on_progress: Callable[[], None] | None = None) -> int:
    """Run :func:`drain` in the current flow run, each input a :func:`reprocess_dossier` task."""
    svc = services()
    queue = BatchQueue(svc.registry, holder_alive=holder_alive)
    holder = holder_id()
    futures: dict[str, Any] = {}

    def start(name: str) -> concurrent.futures.Future[Any]:
        futures[name] = reprocess_dossier.submit(name, batch_id, source, holder)
        return futures[name].wrapped_future  # type: ignore[no-any-return]

    def settle(name: str) -> None:
        future = futures.pop(name)
        future.wait()  # done already: this takes its final state from the run, not from the API
        state = future.state
        if state.is_completed():
            return
        # The task ended without recording its input (retries exhausted, or it crashed): record it failed.
        exc = state.result(raise_on_failure=False)
        if isinstance(exc, HosoError):
            reason = f"{exc.reason}: {exc}"
        elif isinstance(exc, BaseException):
            reason = f"internal: {type(exc).__name__}: {exc}"
        else:
            reason = state.message or state.name or "failed"
        if isinstance(exc, BaseException) and is_transient(exc):
            reason += f" (after {RETRIES + 1} tries)"
        try:
            queue.finish(batch_id, name, holder, "failed", reason=display_name(reason, 2000))
        except StorageFailed as err:  # its claim lapses and another try takes it
            log.warning("%s: could not record its failure now: %s", name, err)

    lease_for = timedelta(seconds=svc.settings.lease_seconds)
    try:
        return drain(queue, batch_id, holder, start, settle, slots=slots, lease_for=lease_for, on_progress=on_progress)
    finally:
        _ocr_slots.flush()  # the last dossiers' OCR slots, given back as their tasks ended


@flow(name=WORKER_FLOW, validate_parameters=False, task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def archive_worker_flow(
    batch_id: str, source: str, procedure: str | None = None, slots: int = 1, agency_map_csv: str | None = None
) -> int:
    """A worker of an archive batch: claim and process its inputs until none is left; how many ran here."""
    _forward_hoso_logs()
    svc = services()
    svc.preflight()  # a worker that cannot sign or store must not claim anything
    batch = BatchSource(source, procedure, agency_map_csv, batch_id, svc.settings.timezone)
    _tag_holder(holder_id())
    ran = _work(batch_id, batch, max(1, min(slots, 8)))
    get_run_logger().info("batch %s: %d input(s) processed by this worker", batch_id, ran)
    return ran


# --- the batch -----------------------------------------------------------------------------------


@flow(name="hoso-reprocess", validate_parameters=False, task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]  # Prefect's generic runner typing
def reprocess_flow(
    folder: str,
    procedure: str | None = None,
    batch_id: str | None = None,
    show_progress: bool = True,
    pool: str | None = None,
    workers: int = 1,
    concurrency: int = 1,
    ocr_slots: int | None = None,
    agency_map: str | None = None,
) -> BatchSummary:
    """Reprocess every dossier of ``folder`` (a folder, or ``s3://bucket/prefix``), after sweeping what crashed
    runs left. Without ``pool`` the dossiers run here, ``concurrency`` at once; with it, ``workers`` worker
    flow runs go to that work pool (each ``concurrency`` at once). A failed dossier never stops the others.
    Re-running a ``batch_id`` resumes it."""
    _forward_hoso_logs()
    logger = get_run_logger()
    started = datetime.now(UTC)
    batch_id = batch_id or f"batch-{started:%Y%m%dt%H%M%S%f}z"
    svc = services()
    # Workers run elsewhere (other working directories, other machines sharing the folder): an absolute path.
    location = folder if folder.startswith("s3://") else str(Path(folder).resolve())
    # The map's text, not its path: a worker on another machine needs no copy of the file.
    agency_map_csv = read_agency_map(Path(agency_map)) if agency_map else None
    source = BatchSource(location, procedure, agency_map_csv, batch_id, svc.settings.timezone)
    queue = BatchQueue(svc.registry, holder_alive=holder_alive)
    queue.enqueue(batch_id, source.names(svc.settings))
    total = queue.progress(batch_id).total
    _ensure_ocr_limit(ocr_slots or max(1, workers if pool else 1) * concurrency, update=ocr_slots is not None)
    logger.info("batch %s: %d input(s) from %s", batch_id, total, folder)
    runs = _dispatch(pool, workers, batch_id, source, concurrency) if pool else set()
    # While the worker runs start (seconds each), resolve what crashed runs left; it touches only work whose
    # holder is gone or whose lease lapsed, never a live worker's.
    swept = sweep_records(svc.store, svc.registry, svc.settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as bar:
        tracker = bar.add_task(f"reprocess {batch_id}", total=total)

        def advance() -> None:
            bar.update(tracker, completed=queue.progress(batch_id).done)

        if pool:
            late_s = svc.settings.late_worker_seconds
            _await_pool(pool, workers, batch_id, source, concurrency, queue, runs, advance, late_s)
        else:
            _work(batch_id, source, concurrency, advance)
        advance()
    items = svc.registry.batch_items(batch_id)
    summary = _summary(batch_id, items, total, started, len(swept.items), workers if pool else 0)
    summary.handover_record = _handover_record(svc, source, items)
    _table_artifact(summary, items)
    if summary.failed:
        logger.warning("batch %s: %d of %d input(s) failed (listed in its artifact)", batch_id, summary.failed, total)
    return summary


def _summary(
    batch_id: str, items: list[BatchItemRecord], total: int, started: datetime, swept: int, workers: int
) -> BatchSummary:
    last = {i.input_name: i for i in items}  # one per input (storage/batches.py); the last, were there more
    counts = Counter(i.outcome for i in last.values())
    return BatchSummary(
        batch_id=batch_id,
        total=total,
        processed=counts["processed"],
        already_done=counts["already_done"],
        failed=counts["failed"],
        failures={i.input_name: i.reason or "" for i in last.values() if i.outcome == "failed"},
        seconds=round((datetime.now(UTC) - started).total_seconds(), 2),
        swept=swept,
        workers=workers,
    )


def _handover_record(svc: Any, source: BatchSource, items: list[BatchItemRecord]) -> str | None:
    """The batch's signed hand-over record, when it handed legacy dossiers over (the manifest of its folder or
    S3 prefix with hand-over rows; issue 12 item 4: pipeline/usecases/handover.py); its object key."""
    from pipeline.usecases.handover import write_handover_record

    inputs = source.handover_inputs(svc.settings)
    if not any(i.legacy for i in inputs):
        return None
    results = [
        BatchItemResult(i.input_name, i.outcome, dossier_code=i.dossier_code, reason=i.reason)
        for i in {i.input_name: i for i in items}.values()
    ]
    return write_handover_record(svc, source.batch_id, inputs, results).object_key


def _table_artifact(summary: BatchSummary, items: list[BatchItemRecord]) -> None:
    """The batch as a Prefect table artifact: every input (failures first) with its outcome and reason."""
    from prefect.artifacts import create_table_artifact

    order = {"failed": 0, "processed": 1, "already_done": 2}
    rows = [
        {"input": i.input_name, "outcome": i.outcome, "dossier_code": i.dossier_code or "", "reason": i.reason or ""}
        for i in sorted(items, key=lambda i: (order.get(i.outcome, 3), i.input_name))
    ]
    description = (
        f"Batch {summary.batch_id}: {summary.total} input(s) — processed {summary.processed}, "
        f"already done {summary.already_done}, failed {summary.failed}; {summary.seconds:.1f} s"
        + (f" (first {ARTIFACT_ROWS} rows; all in the registry's batch_items)" if len(rows) > ARTIFACT_ROWS else "")
    )
    create_table_artifact(rows[:ARTIFACT_ROWS], key=f"hoso-{summary.batch_id.lower()}", description=description)


# --- Prefect plumbing ----------------------------------------------------------------------------


def _forward_hoso_logs() -> None:
    """Send the hoso loggers' records (INFO and up) to the Prefect API with the run's own logs."""
    from prefect.logging.handlers import APILogHandler

    for name in ("pipeline", "ocr", "signing", "storage", "flows"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            logger.addHandler(APILogHandler())


def _tag_holder(holder: str) -> None:
    """Name this worker run's process on its flow run (:data:`HOLDER_TAG`); without it the batch only waits longer."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, tags=[*flow_run.tags, HOLDER_TAG + holder])
    except Exception as err:  # best effort: the batch then waits HOSO_LATE_WORKER_SECONDS for this run
        log.warning("could not tag this worker run with its process: %s", err)


def run_over(run: Any) -> bool:
    """Whether a worker flow run is over: in a final state, or Running in a process of this machine that is gone
    (killed with its worker: Prefect keeps showing it Running)."""
    if run.state is None:
        return False
    if run.state.is_final():
        return True
    holders = [t.removeprefix(HOLDER_TAG) for t in run.tags or () if t.startswith(HOLDER_TAG)]
    return run.state.is_running() and bool(holders) and holder_alive(holders[0]) is False


def _ensure_ocr_limit(size: int, *, update: bool) -> None:
    """Create the global concurrency limit on OCR if it is absent (of ``size`` slots); set its size if asked."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(OCR_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=OCR_LIMIT, limit=size))
                return
            except ObjectAlreadyExists:  # another batch made it meanwhile
                current = client.read_global_concurrency_limit_by_name(OCR_LIMIT)
        if update and current.limit != size:
            client.update_global_concurrency_limit(OCR_LIMIT, GlobalConcurrencyLimitUpdate(limit=size))


def ensure_worker_deployment(pool: str) -> str:
    """The work pool (a process pool, made if absent) and the worker flow's deployment on it; its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            # a worker and the batch (or two workers) starting together both find it absent: one makes it
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name(WORKER_FLOW)
        client.create_deployment(
            flow_id=flow_id,
            name=f"{WORKER_DEPLOYMENT}-{pool}",
            work_pool_name=pool,
            entrypoint=WORKER_ENTRYPOINT,
            enforce_parameter_schema=False,
            pull_steps=[],
            job_variables=ENGINE_JOB,
            description="A worker of hoso archive batches",
        )
    return f"{WORKER_FLOW}/{WORKER_DEPLOYMENT}-{pool}"


def _dispatch(pool: str, count: int, batch_id: str, source: BatchSource, slots: int) -> set[Any]:
    """Hand ``count`` worker flow runs of the batch to the pool (deployment registered first); their ids."""
    from prefect.deployments import run_deployment

    deployment = ensure_worker_deployment(pool)
    params = {
        "batch_id": batch_id,
        "source": source.location,
        "procedure": source.procedure,
        "slots": slots,
        "agency_map_csv": source.agency_map_csv,
    }
    # run_deployment is sync here (no running event loop); its declared type also admits a coroutine.
    started: list[Any] = [
        run_deployment(deployment, parameters=params, timeout=0, as_subflow=True) for _ in range(count)
    ]
    runs = {run.id for run in started}
    get_run_logger().info("batch %s: %d worker run(s) on pool %r", batch_id, len(runs), pool)
    return runs


def await_batch(
    finished: Callable[[], bool],
    runs_ended: Callable[[], bool],
    relaunch: Callable[[], None],
    on_progress: Callable[[], None],
    *,
    max_relaunches: int,
    poll: float = FINISH_POLL_S,
    runs_poll: float = POLL_S * 2,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Wait until the batch is ``finished`` (asked every ``poll``: one registry count); every ``runs_poll``, look at
    the worker runs too and, when every one has ended with inputs left (their workers died), ``relaunch``
    another, at most ``max_relaunches`` times; how many were. The runs are looked at before the batch: workers
    that completed because the batch finished meanwhile are not taken for dead ones."""
    relaunches = 0
    since_runs = runs_poll  # the runs are looked at first
    while True:
        ended = False
        if since_runs >= runs_poll:
            ended, since_runs = runs_ended(), 0.0
            on_progress()
        if finished():
            return relaunches
        if ended and relaunches < max_relaunches:
            relaunches += 1
            relaunch()
        sleep(poll)
        since_runs += poll


def _await_pool(
    pool: str,
    workers: int,
    batch_id: str,
    source: BatchSource,
    slots: int,
    queue: BatchQueue,
    runs: set[Any],
    on_progress: Callable[[], None],
    late_s: float,
) -> None:
    """Wait until the batch is done. Should every worker run end while inputs are left (workers that died), hand
    out another; runs still not ended ``late_s`` after the batch (``HOSO_LATE_WORKER_SECONDS``) are marked
    Cancelled (never started) or Crashed (left Running by a dead worker: at once when it was on this machine,
    :func:`run_over`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled, Crashed

    logger = get_run_logger()
    with get_client(sync_client=True) as client:

        def current() -> list[Any]:
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(runs))))

        def ended() -> bool:
            return all(run_over(r) for r in current())

        def relaunch() -> None:
            logger.warning("batch %s: every worker run ended with inputs left; handing out another", batch_id)
            runs.update(_dispatch(pool, 1, batch_id, source, slots))

        def finished() -> bool:
            return queue.progress(batch_id).finished

        await_batch(finished, ended, relaunch, on_progress, max_relaunches=3 * workers)
        # Live workers see the batch done within a poll or two; one still starting (a worker polls its pool,
        # then starts a process: tens of seconds on a loaded machine) finds nothing left and completes.
        deadline = time.monotonic() + late_s
        while time.monotonic() < deadline and not ended():
            time.sleep(FINISH_POLL_S)
        for run in current():
            if run.state is None or run.state.is_final():
                continue
            state: State[Any]
            if run.state.is_scheduled() or run.state.is_pending():  # never started: nothing of it is claimed
                state = Cancelled(message="not needed: the batch was done before this worker run started")
            else:  # its worker is gone; its claims lapsed and were finished by others
                state = Crashed(message="worker lost; its inputs were finished by other workers")
            client.set_flow_run_state(run.id, state, force=True)


__all__ = [
    "OCR_LIMIT",
    "BatchSource",
    "BatchSummary",
    "archive_worker_flow",
    "await_batch",
    "drain",
    "ensure_worker_deployment",
    "reprocess_dossier",
    "reprocess_flow",
    "run_over",
]
