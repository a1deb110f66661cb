"""The desk job as a Prefect flow (used when a Prefect API is configured, and by workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.runtime import services
from pipeline.usecases.desk import IntakeRequest, ingest


@flow(name="hoso-ingest", validate_parameters=False)
def ingest_flow(input_path: str, procedure: str, applicant_id: str | None = None) -> dict[str, Any]:
    """Ingest one dossier; returns the receipt as JSON-ready data."""
    outcome = ingest(IntakeRequest(Path(input_path), procedure, applicant_id), services())
    return outcome.receipt.model_dump(mode="json") | {"already_done": outcome.already_done}
