"""The clerk's job as a Prefect flow."""

from __future__ import annotations

from prefect import flow

from flows.runtime import services
from pipeline.usecases.clerk import issue_result


@flow(name="hoso-issue-result", validate_parameters=False)
def issue_result_flow(dossier_code: str) -> str:
    """Issue the signed and sealed e-result; returns its object key."""
    return issue_result(dossier_code, services()).object_key
