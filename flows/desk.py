"""The desk job as a Prefect flow (used when a Prefect API is configured, and by workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.runtime import services
from pipeline.usecases.desk import ingest, intake_request


@flow(name="hoso-ingest", validate_parameters=False)
def ingest_flow(
    input_path: str, procedure: str, applicant_id: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """Ingest one dossier (received by the desk ``user``, if named); returns the receipt as JSON-ready data.

    Not the citizen's lookup link: its secret must not land in Prefect's state store.
    """
    s = services()
    outcome = ingest(intake_request(s, Path(input_path), procedure, applicant_id, user), s)
    return outcome.receipt.model_dump(mode="json") | {"already_done": outcome.already_done}
