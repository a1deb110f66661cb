"""The Prefect flows against a Prefect server: the desk run recorded there, the clerk flow, the worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.cli import SAMPLE, Hoso
from support.servers import PrefectServer

pytestmark = pytest.mark.slow  # a Prefect server; tests/test_flows_inprocess.py runs the flows' bodies fast


def _api(api_url: str, path: str) -> list[dict]:
    """What a Prefect server's ``POST <path>`` (a ``/…/filter`` query) answers with no filter."""
    request = urllib.request.Request(
        f"{api_url}{path}", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def received_via_flow(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Hoso, Path, subprocess.CompletedProcess[str]]:
    """``hoso ingest`` with a Prefect API configured (the desk then runs as the hoso-ingest flow)."""
    base = tmp_path_factory.mktemp("flows")
    scan = shutil.copy(SAMPLE, base / "scan.pdf")  # its path tells this run from others on the server
    hoso = Hoso(base / "var", {
        "PREFECT_API_URL": prefect_server.api_url, "PREFECT_HOME": str(base / "prefect-client"),
    })
    return hoso, scan, hoso("ingest", str(scan), "--procedure", "business_household_registration", "--json")


def test_ingest_is_recorded_as_a_flow_run_when_an_api_is_configured(
    prefect_server: PrefectServer, received_via_flow: tuple[Hoso, Path, subprocess.CompletedProcess[str]]
) -> None:
    _, scan, proc = received_via_flow
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert receipt["status"] == "accepted"
    runs = _api(prefect_server.api_url, "/flow_runs/filter")
    runs = [r for r in runs if r["parameters"].get("input_path") == str(scan)]
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(completed) == 1, runs
    assert completed[0]["parameters"]["procedure"] == "business_household_registration"


def test_the_clerk_flow_issues_the_result_of_a_received_dossier(
    prefect_server: PrefectServer, received_via_flow: tuple[Hoso, Path, subprocess.CompletedProcess[str]]
) -> None:
    hoso, _, proc = received_via_flow
    code = json.loads(proc.stdout)["dossier_code"]
    script = (
        "import sys, flows\n"
        "from flows.clerk import issue_result_flow\n"
        "from flows.runtime import quick_flow_settings\n"
        "with quick_flow_settings():\n"
        "    print(issue_result_flow(sys.argv[1]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, code], env=hoso.env, capture_output=True, text=True,
                          timeout=300, cwd=hoso.data_dir.parent)
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip().splitlines()[-1]
    assert key in hoso.stored_keys() and key.startswith(f"dossiers/{code}/")
    assert hoso.registry.get(code).state == "returned"
    runs = _api(prefect_server.api_url, "/flow_runs/filter")
    assert any(r["parameters"].get("dossier_code") == code and r["state_type"] == "COMPLETED" for r in runs)


def test_the_worker_serves_the_desk_clerk_and_archive_flows(prefect_server: PrefectServer, tmp_path: Path) -> None:
    api = prefect_server.api_url
    env = Hoso(tmp_path / "var", {"PREFECT_API_URL": api}).env
    worker = subprocess.Popen([sys.executable, "-m", "flows.serve"], env=env, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wanted = {("hoso-ingest", "desk"), ("hoso-issue-result", "clerk"), ("hoso-reprocess", "archive")}
    try:
        deadline = time.monotonic() + 120
        served: set[tuple[str, str]] = set()
        while time.monotonic() < deadline and worker.poll() is None and not wanted <= served:
            flows = {f["id"]: f["name"] for f in _api(api, "/flows/filter")}
            served = {(flows.get(d["flow_id"], ""), d["name"]) for d in _api(api, "/deployments/filter")}
            time.sleep(1)
        assert wanted <= served, worker.stderr.read().decode()[-2000:] if worker.poll() is not None else served
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def test_a_worker_takes_its_ocr_slot_again_for_its_next_dossiers_and_gives_it_back(
    prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dossiers one after another in a worker ask the server for a slot once per SLOT_KEEP_TURNS of them (each ask
    and release costs a busy worker ~30 ms a dossier); a slot not taken again is released after SLOT_KEEP_S,
    and at once at the end of the worker's run."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.archive as archive

    name = f"hoso-ocr-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(archive, "OCR_LIMIT", name)
    slots = archive._OcrSlots()
    asked: list[int] = []
    ask = slots._ask

    def counted(client: object) -> object:
        asked.append(1)
        return ask(client)

    monkeypatch.setattr(slots, "_ask", counted)

    def active(client: object) -> int:
        return client.read_global_concurrency_limit_by_name(name).active_slots  # type: ignore[attr-defined, no-any-return]

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))
        for _ in range(2 * archive.SLOT_KEEP_TURNS):
            with slots.slot():
                assert active(client) == 1
        assert len(asked) == 2
        assert slots.flush() and active(client) == 0
        with slots.slot():
            pass
        assert active(client) == 1  # kept for the next dossier ...
        time.sleep(archive.SLOT_KEEP_S + 1.0)
        assert active(client) == 0  # ... which did not come


def test_ocr_slots_are_held_one_at_a_time_and_all_given_back(
    prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three workers' dossiers contend for a global OCR limit of one slot: never two inside at once, every
    dossier gets its turn, and no slot stays taken afterwards. Without the limit, OCR is not capped."""
    import contextvars
    import threading
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.archive as archive

    name = f"hoso-ocr-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(archive, "OCR_LIMIT", name)
    inside: list[int] = []
    most, turns = [0], [0]
    lock = threading.Lock()

    errors: list[BaseException] = []

    def dossiers() -> None:
        try:
            for _ in range(4):
                with archive._ocr_slot():
                    with lock:
                        inside.append(1)
                        most[0], turns[0] = max(most[0], len(inside)), turns[0] + 1
                    time.sleep(0.05)
                    with lock:
                        inside.pop()
        except BaseException as err:
            errors.append(err)

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with archive._ocr_slot():  # no such limit yet: not capped
            pass
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            # each thread in a copy of this context: Prefect's temporary settings live in a context variable
            workers = [threading.Thread(target=contextvars.copy_context().run, args=(dossiers,)) for _ in range(3)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(120)
            assert archive._ocr_slots.flush()  # slots are given back by a thread of their own
            left = client.read_global_concurrency_limit_by_name(name)
    assert not errors, errors
    assert (most[0], turns[0]) == (1, 12)
    assert left.active_slots == 0
