"""With a Prefect API configured, the desk still runs in one process and the run is recorded there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import PrefectServer, start_prefect_server

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipeline" / "data" / "sample_dossier.pdf"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        server.stop()


def _flow_runs(api_url: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def test_ingest_is_recorded_as_a_flow_run_when_an_api_is_configured(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_"))} | {
        "HOSO_DATA_DIR": str(tmp_path / "var"),
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(SAMPLE), "--procedure",
         "business_household_registration", "--json"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert receipt["status"] == "accepted"
    runs = _flow_runs(prefect_server.api_url)
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(completed) == 1, runs
    assert completed[0]["parameters"]["procedure"] == "business_household_registration"
