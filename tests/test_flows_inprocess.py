"""The flows' bodies in this process, without a Prefect server: the fast lane's cover of flows/.

tests/test_flows.py runs the same flows as Prefect runs against a real server (slow).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import SAMPLE, SCRIPTED_ENGINE

import flows  # noqa: F401  (quiet Prefect defaults before Prefect is imported)
from flows import serve
from flows.archive import reprocess_dossier
from flows.clerk import issue_result_flow
from flows.desk import ingest_flow
from flows.runtime import services as flow_services
from flows.runtime import use_services
from pipeline.core.errors import ExitCode
from pipeline.core.settings import Settings
from pipeline.usecases.archive import discover_batch
from pipeline.usecases.services import Services

PROCEDURE = "business_household_registration"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """What the flows of this process use: scripted OCR, one page at a time, no national database."""
    opened = Services(Settings(data_dir=tmp_path / "var", natdb="off", ocr_jobs=1, ocr_engine=SCRIPTED_ENGINE))
    use_services(opened)
    try:
        yield opened
    finally:
        use_services(None)
        opened.close()


def test_the_desk_and_clerk_flows_receive_then_return_a_dossier(services: Services) -> None:
    assert flow_services() is services
    receipt = ingest_flow.fn(str(SAMPLE), PROCEDURE)
    code = receipt["dossier_code"]
    assert receipt["status"] == "accepted" and receipt["already_done"] is False
    assert "lookup_url" not in receipt  # the lookup secret never reaches Prefect's state store
    again = ingest_flow.fn(str(SAMPLE), PROCEDURE)
    assert again["already_done"] is True and again["dossier_code"] == code

    key = issue_result_flow.fn(code)
    assert key.startswith(f"dossiers/{code}/") and services.store.exists(key)
    assert services.registry.get(code).state == "returned"


def test_a_reprocess_task_records_each_entry_as_a_batch_item(services: Services, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "ARC-0001.pdf")
    (folder / "ARC-0002.pdf").write_bytes(b"")
    results = {item.name: reprocess_dossier.fn(item, "batch-1") for item in discover_batch(folder, PROCEDURE)}

    assert {name: r.outcome for name, r in results.items()} == {"ARC-0001.pdf": "processed", "ARC-0002.pdf": "failed"}
    assert (results["ARC-0002.pdf"].reason or "").startswith("input_empty")
    recorded = services.registry.batch_items("batch-1")
    assert [(r.input_name, r.outcome, r.dossier_code) for r in recorded] == [
        (name, r.outcome, r.dossier_code) for name, r in results.items()
    ]


def test_the_worker_stops_before_serving_when_production_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = Services(Settings(mode="production", data_dir=tmp_path / "var"))
    use_services(refused)
    try:
        assert serve.main() == ExitCode.configuration
    finally:
        use_services(None)
    err = capsys.readouterr().err
    assert err.startswith("hoso worker: lỗi [configuration]:") and err.count("\n") == 1
    assert not {"store", "registry", "keys"} & set(vars(refused))  # refused before any was opened
