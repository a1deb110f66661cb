"""Archive batch work: find the dossiers in a folder and run the desk chain on each, never stopping."""

from __future__ import annotations

import csv
import io
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipeline.core.errors import HosoError, InputCorrupt, InputError, InputTooLarge
from pipeline.core.inputs import display_name, folder_entries, identify_input, open_regular
from pipeline.core.retry import RetryPolicy, is_transient
from pipeline.domain.handover import (
    HANDOVER_COLUMNS,
    AgencyMap,
    Handover,
    HandoverRowError,
    is_handover_row,
    parse_handover,
)
from pipeline.usecases.desk import IntakeOutcome, IntakeRequest, ingest
from pipeline.usecases.services import Services

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
MAX_MANIFEST_BYTES = 16 << 20  # a line per dossier: far more dossiers than one folder holds
Outcome = Literal["processed", "already_done", "failed"]


@dataclass(frozen=True)
class BatchInput:
    name: str  # the entry's name as it can be shown and recorded (pipeline.core.inputs.display_name)
    path: Path
    procedure: str | None
    refused: str | None = None  # why this entry is not a dossier (it becomes a failed item)
    handover: Handover | None = None  # a legacy dossier handed over (manifest hand-over columns, agency map)
    legacy: dict[str, str] | None = None  # the hand-over columns of its manifest row, as written


@dataclass(frozen=True)
class ManifestRow:
    line: int
    file: str
    procedure: str | None
    values: dict[str, str] = field(default_factory=dict)  # the hand-over columns, stripped


@dataclass(frozen=True)
class BatchItemResult:
    name: str
    outcome: Outcome
    dossier_code: str | None = None
    status: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    attempts: int = 0  # runs of the desk chain (more than one: transient errors were retried)
    timings: dict[str, float] = field(default_factory=dict)  # the desk's stages, when it ran them


def discover_batch(
    folder: Path,
    procedure: str | None = None,
    *,
    agency_map: AgencyMap | None = None,
    batch_id: str = "batch",
    tz: str = "Asia/Ho_Chi_Minh",
    now: datetime | None = None,
    only: Collection[str] | None = None,
) -> list[BatchInput]:
    """Every entry of FOLDER as a batch input: a PDF/image file or a folder of page images is a dossier.

    Entries are told by content (:func:`pipeline.core.inputs.identify_input`), not by name. One that is
    not a dossier — a file of unknown format, a symlink (never followed, so nothing outside FOLDER is
    read), a FIFO or device, a name with control characters or bytes that are not UTF-8 — comes back
    with ``refused`` set, to be recorded as failed; only ``manifest.csv`` and hidden names are passed
    over. Names are kept as shown by :func:`pipeline.core.inputs.display_name`, safe for logs and the
    registry. The procedure comes from ``--procedure`` or else from ``manifest.csv`` (``file,procedure``,
    UTF-8).

    A manifest row with hand-over columns (``legacy_code,received_at,due_at,state,agency_code``) hands a
    legacy dossier over (``handover``, mapped by ``agency_map``); one that cannot be — a malformed legacy code,
    an unknown old agency or state, a bad date, a legacy code twice in the manifest, a file not in FOLDER —
    comes back refused with its reason: nothing handed over is dropped.

    ``only``: just the inputs of these (shown) names — a worker's claimed inputs.
    """
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    rows = _manifest_rows(folder / MANIFEST)
    manifest = {row.file: row for row in rows}  # a file named twice: its last row
    procedures = {row.file: row.procedure for row in rows if row.procedure}
    handovers = _handovers(rows, manifest, agency_map, batch_id, tz, now or datetime.now(UTC))
    legacy = _legacy_values(rows)
    inputs = []
    names = set()
    for child in folder_entries(folder):
        if child.name == MANIFEST:
            continue
        names.add(child.name)
        shown = display_name(child.name)
        if only is not None and shown not in only:
            continue
        item = BatchInput(shown, child, procedure or procedures.get(child.name))
        if child.name in handovers:
            handover, why = handovers[child.name]
            item = replace(item, handover=handover, legacy=legacy[child.name], refused=why)
        try:
            source = identify_input(child)
        except InputError as err:
            item = replace(item, refused=f"{err.reason}: {err}")
        else:
            # An empty file goes on to the desk, which refuses it as empty.
            if not source.is_folder and source.files[0].size and source.files[0].format is None:
                item = replace(item, refused=f"input_unsupported: {shown}: not a PDF, PNG, JPEG or TIFF file")
        inputs.append(item)
    for name in sorted(set(handovers) - names):  # handed over in the manifest, missing from the folder
        if only is not None and display_name(name) not in only:
            continue
        inputs.append(_missing_file(folder, manifest[name], procedure, handovers[name][0], legacy[name]))
    return inputs


def _missing_file(
    folder: Path, row: ManifestRow, procedure: str | None, handover: Handover | None, legacy: dict[str, str]
) -> BatchInput:
    """A hand-over row whose file is not among the batch's inputs: a failure with its reason."""
    return BatchInput(
        display_name(row.file), folder / row.file, procedure or row.procedure,
        refused=f"handover_missing_file: manifest.csv line {row.line} names {display_name(row.file)!r}, "
                "which is not in the folder",
        handover=handover, legacy=legacy,
    )


def handover_rows(
    folder: Path,
    present: Collection[str],
    procedure: str | None = None,
    *,
    agency_map: AgencyMap | None = None,
    batch_id: str = "batch",
    tz: str = "Asia/Ho_Chi_Minh",
    now: datetime | None = None,
) -> list[BatchInput]:
    """The hand-over rows of ``folder/manifest.csv`` as batch inputs, read from the manifest alone (no dossier
    is read: the inputs may be objects under an S3 prefix). ``present``: the names of the batch's entries; a
    row whose file is not among them is refused (``handover_missing_file``). What the hand-over record needs
    of every row (:mod:`pipeline.usecases.handover`)."""
    rows = _manifest_rows(folder / MANIFEST)
    manifest = {row.file: row for row in rows}
    handovers = _handovers(rows, manifest, agency_map, batch_id, tz, now or datetime.now(UTC))
    legacy = _legacy_values(rows)
    inputs = []
    for name in sorted(handovers):
        handover, why = handovers[name]
        if name not in present:
            inputs.append(_missing_file(folder, manifest[name], procedure, handover, legacy[name]))
            continue
        row = manifest[name]
        inputs.append(BatchInput(display_name(name), folder / name, procedure or row.procedure, refused=why,
                                 handover=handover, legacy=legacy[name]))
    return inputs


def _handovers(
    rows: list[ManifestRow], manifest: dict[str, ManifestRow], agency_map: AgencyMap | None, batch_id: str,
    tz: str, now: datetime,
) -> dict[str, tuple[Handover | None, str | None]]:
    """{file: (hand-over, None) or (None, why not)} for the manifest's hand-over rows; a legacy code is handed
    over by its first row only."""
    found: dict[str, tuple[Handover | None, str | None]] = {}
    first_line: dict[str, int] = {}
    lines: dict[str, list[int]] = {}
    for row in rows:
        lines.setdefault(row.file, []).append(row.line)
    legacy = _legacy_values(rows)
    for row in rows:
        if manifest[row.file] is not row:
            continue
        named = lines[row.file]
        if len(named) > 1 and row.file in legacy:
            # Which row holds is a guess: a legacy dossier is neither received anew nor handed over twice.
            shown = " and ".join(map(str, named[:5])) + (f" (and {len(named) - 5} more)" if len(named) > 5 else "")
            found[row.file] = (None, f"handover_duplicate_file: manifest.csv lines {shown} "
                                     f"name {display_name(row.file)!r}")
            continue
        if not is_handover_row(row.values):
            continue
        try:
            handover = parse_handover(row.values, agency_map, batch_id=batch_id, tz=tz, now=now)
        except HandoverRowError as err:
            found[row.file] = (None, f"{err.reason} (manifest.csv line {row.line})")
            continue
        code = handover.legacy_code
        if code in first_line:
            found[row.file] = (None, f"handover_duplicate_legacy_code: {code} is handed over by manifest.csv line "
                                     f"{first_line[code]} already (line {row.line})")
            continue
        first_line[code] = row.line
        found[row.file] = (handover, None)
    return found


def _legacy_values(rows: list[ManifestRow]) -> dict[str, dict[str, str]]:
    """{file: the hand-over columns of its first hand-over row}."""
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.file not in found and is_handover_row(row.values):
            found[row.file] = row.values
    return found


def _read_manifest(path: Path) -> dict[str, str]:
    """``manifest.csv`` as {file: procedure}; InputCorrupt when it is not a UTF-8 CSV file."""
    return {row.file: row.procedure for row in _manifest_rows(path) if row.procedure}


def _manifest_rows(path: Path) -> list[ManifestRow]:
    """``manifest.csv``'s rows that name a file, with their hand-over columns; InputCorrupt when it is not a
    UTF-8 CSV file."""
    if not os.path.lexists(path):  # a symlink or FIFO there is refused, not followed
        return []
    manifest: list[ManifestRow] = []
    with open_regular(path) as raw:
        if os.fstat(raw.fileno()).st_size > MAX_MANIFEST_BYTES:
            raise InputTooLarge(
                f"{path}: more than {MAX_MANIFEST_BYTES >> 20} MB", f"Tệp {MANIFEST} quá lớn; vui lòng kiểm tra lại."
            )
        try:
            with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                reader.fieldnames = _columns(path, reader.fieldnames)
                for row in reader:
                    name = (row.get("file") or "").strip()
                    if not name:
                        continue
                    values = {c: (row.get(c) or "").strip() for c in HANDOVER_COLUMNS if row.get(c)}
                    manifest.append(ManifestRow(reader.line_num, name, (row.get("procedure") or "").strip() or None,
                                                values))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputCorrupt(
                f"{path}: not a UTF-8 CSV file ({exc})",
                f"Tệp {MANIFEST} không đọc được (cần CSV mã UTF-8, hai cột file,procedure); vui lòng lưu lại tệp.",
            ) from exc
    return manifest


def _columns(path: Path, header: Sequence[str] | None) -> list[str]:
    """The manifest's column names as meant (``File, procedure`` is ``file,procedure``); InputCorrupt when one is
    named twice, since which one holds would be a guess."""
    names = [unicodedata.normalize("NFC", n).strip().lower() for n in header or ()]
    twice = sorted(n for n, count in Counter(names).items() if n and count > 1)  # a hostile header is long
    if twice:
        raise InputCorrupt(
            f"{path}: column {', '.join(twice)} named twice in the header",
            f"Tệp {MANIFEST} có cột trùng tên ({', '.join(twice)}); vui lòng sửa dòng tiêu đề.",
        )
    return names


@dataclass
class Retries:
    """The desk chain on one dossier, retried on transient errors (:func:`pipeline.core.retry.is_transient`).

    Safe: the desk is idempotent by the input's SHA-256, and the reservation an attempt left half-written is
    resumed under its code, the earlier attempt's objects removed first (storage/records.py).
    """

    policy: RetryPolicy
    attempts: int = 0

    def ingest(self, request: IntakeRequest, services: Services) -> IntakeOutcome:
        def once() -> IntakeOutcome:
            self.attempts += 1
            return ingest(request, services)

        def retrying(n: int, err: BaseException, wait: float) -> None:
            log.warning("%s: attempt %d of %d failed (%s: %s); retrying in %.1f s",
                        request.input_path.name, n, self.policy.attempts, type(err).__name__, err, wait)

        return self.policy.call(once, on_retry=retrying)

    def recorded_here(self, services: Services, code: str, since: datetime) -> bool:
        """Whether an attempt of this call recorded dossier ``code`` though the last one found it done (the
        answer to its commit was lost, or it failed after recording: its form was left to the retry)."""
        if self.attempts < 2:
            return False
        try:
            events = services.registry.get(code).events
        except HosoError:
            return False
        return any(e.action == "intake" and e.at >= since for e in events)

    def explain(self, reason: str, err: BaseException) -> str:
        """The failure's reason, saying when retries ran out on a transient error."""
        if is_transient(err):
            return f"{reason} (transient; gave up after {self.attempts} attempt{'s' if self.attempts > 1 else ''})"
        return reason


def process_one(
    item: BatchInput, services: Services, *, actor: str = "archive", retry: RetryPolicy | None = None
) -> BatchItemResult:
    """Run the desk chain on one batch input; every failure becomes a result with its reason.

    Transient errors are retried under ``retry`` (default: ``HOSO_RETRY_*``), bad input never (:class:`Retries`).
    """
    import time

    start, started_at = time.perf_counter(), datetime.now(UTC)
    if item.refused is not None:
        return BatchItemResult(item.name, "failed", reason=item.refused)
    if item.procedure is None:
        return BatchItemResult(item.name, "failed", reason="no procedure: not in manifest.csv and no --procedure")
    retries = Retries(retry or RetryPolicy.from_settings(services.settings))
    try:
        request = IntakeRequest(item.path, item.procedure, actor=actor, handover=item.handover)
        outcome = retries.ingest(request, services)
    except HosoError as err:
        log.warning("%s failed: %s", item.name, err)
        return BatchItemResult(item.name, "failed", reason=retries.explain(f"{err.reason}: {err}", err),
                               seconds=time.perf_counter() - start, attempts=retries.attempts)
    except Exception as err:  # a bug must not stop the batch; it is recorded with its type
        log.exception("%s failed unexpectedly", item.name)
        reason = retries.explain(display_name(f"internal: {type(err).__name__}: {err}", 2000), err)
        return BatchItemResult(item.name, "failed", reason=reason, seconds=time.perf_counter() - start,
                               attempts=retries.attempts)
    receipt = outcome.receipt
    done_before = outcome.already_done and not retries.recorded_here(services, receipt.dossier_code, started_at)
    return BatchItemResult(
        item.name,
        "already_done" if done_before else "processed",
        dossier_code=receipt.dossier_code,
        status=receipt.status,
        seconds=time.perf_counter() - start,
        attempts=retries.attempts,
        timings={} if done_before else dict(receipt.timings or {}),
    )
