"""Archive batch work: find the dossiers in a folder and run the desk chain on each, never stopping."""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pipeline.core.errors import HosoError, InputError
from pipeline.core.inputs import folder_entries, identify_input, open_regular
from pipeline.usecases.desk import IntakeRequest, ingest
from pipeline.usecases.services import Services

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
Outcome = Literal["processed", "already_done", "failed"]


@dataclass(frozen=True)
class BatchInput:
    name: str
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


def discover_batch(folder: Path, procedure: str | None = None) -> list[BatchInput]:
    """Every entry of FOLDER as a batch input: a PDF/image file or a folder of page images is a dossier.

    Entries are told by content (:func:`pipeline.core.inputs.identify_input`), not by name. One that is
    not a dossier — a file of unknown format, a symlink (never followed), a FIFO or device — comes back
    with ``refused`` set, to be recorded as failed; only ``manifest.csv`` and hidden names are passed
    over. The procedure comes from ``--procedure`` or else from ``manifest.csv`` (``file,procedure``).
    """
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    manifest: dict[str, str] = {}
    manifest_path = folder / MANIFEST
    if os.path.lexists(manifest_path):  # a symlink or FIFO there is refused, not followed
        with open_regular(manifest_path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("file") and row.get("procedure"):
                    manifest[row["file"].strip()] = row["procedure"].strip()
    inputs = []
    for child in folder_entries(folder):
        if child.name == MANIFEST:
            continue
        item = BatchInput(child.name, child, procedure or manifest.get(child.name))
        try:
            source = identify_input(child)
        except InputError as err:
            item = replace(item, refused=f"{err.reason}: {err}")
        else:
            # An empty file goes on to the desk, which refuses it as empty.
            if not source.is_folder and source.files[0].size and source.files[0].format is None:
                item = replace(item, refused=f"input_unsupported: {child.name}: not a PDF, PNG, JPEG or TIFF file")
        inputs.append(item)
    return inputs


def process_one(item: BatchInput, services: Services, *, actor: str = "archive") -> BatchItemResult:
    """Run the desk chain on one batch input; every failure becomes a result with its reason."""
    import time

    start = time.perf_counter()
    if item.refused is not None:
        return BatchItemResult(item.name, "failed", reason=item.refused)
    if item.procedure is None:
        return BatchItemResult(item.name, "failed", reason="no procedure: not in manifest.csv and no --procedure")
    try:
        outcome = ingest(IntakeRequest(item.path, item.procedure, actor=actor), services)
    except HosoError as err:
        log.warning("%s failed: %s", item.name, err)
        return BatchItemResult(item.name, "failed", reason=f"{err.reason}: {err}", seconds=time.perf_counter() - start)
    except Exception as err:  # a bug must not stop the batch; it is recorded with its type
        log.exception("%s failed unexpectedly", item.name)
        return BatchItemResult(
            item.name, "failed", reason=f"internal: {type(err).__name__}: {err}", seconds=time.perf_counter() - start
        )
    receipt = outcome.receipt
    return BatchItemResult(
        item.name,
        "already_done" if outcome.already_done else "processed",
        dossier_code=receipt.dossier_code,
        status=receipt.status,
        seconds=time.perf_counter() - start,
    )
