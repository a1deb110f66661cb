"""The flows' bodies in this process, without a Prefect server: the fast lane's cover of flows/.

tests/test_flows.py runs the same flows as Prefect runs against a real server (slow).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.states import State
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


def test_a_reprocess_task_records_each_claimed_input_once(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task body of a worker: each claimed input through the desk, its outcome finished in the batch
    queue once — a failed input as a Failed state with its reason (Prefect's run logger and the global OCR
    limit, which need a Prefect API, are replaced here)."""
    import contextlib
    import logging
    from datetime import timedelta

    import flows.archive as archive_flow
    from storage.batches import BatchQueue

    monkeypatch.setattr(archive_flow, "get_run_logger", lambda: logging.getLogger("test.reprocess"))
    monkeypatch.setattr(archive_flow, "_ocr_slot", contextlib.nullcontext)
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "ARC-0001.pdf")
    (folder / "ARC-0002.pdf").write_bytes(b"")
    source = archive_flow.BatchSource(str(folder), PROCEDURE, batch_id="batch-1")
    queue = BatchQueue(services.registry)
    assert queue.enqueue("batch-1", ["ARC-0001.pdf", "ARC-0002.pdf"]) == 2
    results = {}
    while (name := queue.claim("batch-1", "w1", timedelta(minutes=5))) is not None:
        results[name] = reprocess_dossier.fn(name, "batch-1", source, "w1")

    processed = results["ARC-0001.pdf"]
    assert not isinstance(processed, State) and processed.outcome == "processed"
    failed = results["ARC-0002.pdf"]
    assert isinstance(failed, State) and failed.is_failed() and "input_empty" in (failed.message or "")
    recorded = {r.input_name: (r.outcome, r.dossier_code) for r in services.registry.batch_items("batch-1")}
    assert recorded == {"ARC-0001.pdf": ("processed", processed.dossier_code), "ARC-0002.pdf": ("failed", None)}
    assert queue.progress("batch-1").finished


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


def test_a_pool_or_ocr_limit_made_meanwhile_by_another_process_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker and the batch starting together both find the pool (and the OCR limit) absent; the one whose
    create comes second gets 409 from the server and must carry on with what the other made."""
    import prefect.client.orchestration as orchestration
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from flows import archive as archive_flow

    made: list[str] = []

    class RacingClient:
        def __enter__(self) -> RacingClient:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read_work_pool(self, name: str) -> None:
            raise ObjectNotFound(None)  # type: ignore[arg-type]

        def create_work_pool(self, pool: object) -> None:
            raise ObjectAlreadyExists(None)  # type: ignore[arg-type]

        def create_flow_from_name(self, name: str) -> str:
            return "flow-id"

        def create_deployment(self, **kwargs: object) -> None:
            made.append(str(kwargs["name"]))

        def read_global_concurrency_limit_by_name(self, name: str) -> object:
            if not made or made[-1] != "limit-read-once":
                made.append("limit-read-once")
                raise ObjectNotFound(None)  # type: ignore[arg-type]
            return type("Limit", (), {"limit": 2})()

        def create_global_concurrency_limit(self, limit: object) -> None:
            raise ObjectAlreadyExists(None)  # type: ignore[arg-type]

    monkeypatch.setattr(orchestration, "get_client", lambda sync_client=True: RacingClient())
    assert archive_flow.ensure_worker_deployment("hoso") == "hoso-archive-worker/archive-worker-hoso"
    archive_flow._ensure_ocr_limit(2, update=False)
    assert made == ["archive-worker-hoso", "limit-read-once"]
