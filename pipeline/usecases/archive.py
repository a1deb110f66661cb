"""Archive batch work: find the dossiers in a folder and run the desk chain on each, never stopping."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pipeline.core.errors import HosoError, InputCorrupt, InputError, InputTooLarge
from pipeline.core.inputs import display_name, folder_entries, identify_input, open_regular
from pipeline.usecases.desk import IntakeRequest, ingest
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


@dataclass(frozen=True)
class BatchItemResult:
    name: str
    outcome: Outcome
    dossier_code: str | None = None
    status: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # the desk's stages, when it ran them


def discover_batch(
    folder: Path, procedure: str | None = None, *, only: Collection[str] | None = None
) -> list[BatchInput]:
    """Every entry of FOLDER as a batch input: a PDF/image file or a folder of page images is a dossier.

    Entries are told by content (:func:`pipeline.core.inputs.identify_input`), not by name. One that is
    not a dossier — a file of unknown format, a symlink (never followed, so nothing outside FOLDER is
    read), a FIFO or device, a name with control characters or bytes that are not UTF-8 — comes back
    with ``refused`` set, to be recorded as failed; only ``manifest.csv`` and hidden names are passed
    over. Names are kept as shown by :func:`pipeline.core.inputs.display_name`, safe for logs and the
    registry. The procedure comes from ``--procedure`` or else from ``manifest.csv`` (``file,procedure``,
    UTF-8). ``only``: just the entries of these (shown) names — a worker's claimed inputs.
    """
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    manifest = _read_manifest(folder / MANIFEST)
    inputs = []
    for child in folder_entries(folder):
        if child.name == MANIFEST:
            continue
        shown = display_name(child.name)
        if only is not None and shown not in only:
            continue
        item = BatchInput(shown, child, procedure or manifest.get(child.name))
        try:
            source = identify_input(child)
        except InputError as err:
            item = replace(item, refused=f"{err.reason}: {err}")
        else:
            # An empty file goes on to the desk, which refuses it as empty.
            if not source.is_folder and source.files[0].size and source.files[0].format is None:
                item = replace(item, refused=f"input_unsupported: {shown}: not a PDF, PNG, JPEG or TIFF file")
        inputs.append(item)
    return inputs


def _read_manifest(path: Path) -> dict[str, str]:
    """``manifest.csv`` as {file: procedure}; InputCorrupt when it is not a UTF-8 CSV file."""
    if not os.path.lexists(path):  # a symlink or FIFO there is refused, not followed
        return {}
    manifest: dict[str, str] = {}
    with open_regular(path) as raw:
        if os.fstat(raw.fileno()).st_size > MAX_MANIFEST_BYTES:
            raise InputTooLarge(
                f"{path}: more than {MAX_MANIFEST_BYTES >> 20} MB", f"Tệp {MANIFEST} quá lớn; vui lòng kiểm tra lại."
            )
        try:
            with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("file") and row.get("procedure"):
                        manifest[row["file"].strip()] = row["procedure"].strip()
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputCorrupt(
                f"{path}: not a UTF-8 CSV file ({exc})",
                f"Tệp {MANIFEST} không đọc được (cần CSV mã UTF-8, hai cột file,procedure); vui lòng lưu lại tệp.",
            ) from exc
    return manifest


def process_one(
    item: BatchInput,
    services: Services,
    *,
    actor: str = "archive",
    reraise: Callable[[Exception], bool] | None = None,
) -> BatchItemResult:
    """Run the desk chain on one batch input; every failure becomes a result with its reason, but those
    ``reraise`` picks (transient ones, for a caller that retries) are raised."""
    import time

    start = time.perf_counter()
    if item.refused is not None:
        return BatchItemResult(item.name, "failed", reason=item.refused)
    if item.procedure is None:
        return BatchItemResult(item.name, "failed", reason="no procedure: not in manifest.csv and no --procedure")
    try:
        outcome = ingest(IntakeRequest(item.path, item.procedure, actor=actor), services)
    except HosoError as err:
        if reraise is not None and reraise(err):
            raise
        log.warning("%s failed: %s", item.name, err)
        return BatchItemResult(item.name, "failed", reason=f"{err.reason}: {err}", seconds=time.perf_counter() - start)
    except Exception as err:  # a bug must not stop the batch; it is recorded with its type
        if reraise is not None and reraise(err):
            raise
        log.exception("%s failed unexpectedly", item.name)
        reason = display_name(f"internal: {type(err).__name__}: {err}", 2000)
        return BatchItemResult(item.name, "failed", reason=reason, seconds=time.perf_counter() - start)
    receipt = outcome.receipt
    return BatchItemResult(
        item.name,
        "already_done" if outcome.already_done else "processed",
        dossier_code=receipt.dossier_code,
        status=receipt.status,
        seconds=time.perf_counter() - start,
        timings=dict(receipt.timings or {}) if not outcome.already_done else {},
    )
