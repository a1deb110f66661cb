"""Archive batch work: find the dossiers in a folder and run the desk chain on each, never stopping."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.core.errors import HosoError
from pipeline.usecases.desk import IntakeRequest, ingest
from pipeline.usecases.services import Services

log = logging.getLogger(__name__)

DOSSIER_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
Outcome = Literal["processed", "already_done", "failed"]


@dataclass(frozen=True)
class BatchInput:
    name: str
    path: Path
    procedure: str | None


@dataclass(frozen=True)
class BatchItemResult:
    name: str
    outcome: Outcome
    dossier_code: str | None = None
    status: str | None = None
    reason: str | None = None
    seconds: float = 0.0


def discover_batch(folder: Path, procedure: str | None = None) -> list[BatchInput]:
    """Every dossier in FOLDER: one PDF/image file or one folder of page images each.

    The procedure comes from ``--procedure`` or else from ``manifest.csv`` (``file,procedure``) beside them.
    """
    if not folder.is_dir():
        raise NotADirectoryError(folder)
    manifest: dict[str, str] = {}
    manifest_path = folder / "manifest.csv"
    if manifest_path.exists():
        with manifest_path.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                if row.get("file") and row.get("procedure"):
                    manifest[row["file"].strip()] = row["procedure"].strip()
    inputs = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child == manifest_path:
            continue
        if child.is_dir() or child.suffix.lower() in DOSSIER_SUFFIXES:
            inputs.append(BatchInput(child.name, child, procedure or manifest.get(child.name)))
    return inputs


def process_one(item: BatchInput, services: Services, *, actor: str = "archive") -> BatchItemResult:
    """Run the desk chain on one batch input; every failure becomes a result with its reason."""
    import time

    start = time.perf_counter()
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
