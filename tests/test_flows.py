"""With a Prefect API configured, the desk still runs in one process and the run is recorded there."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from support.cli import SAMPLE, Hoso
from support.servers import PrefectServer


def _flow_runs(api_url: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def test_ingest_is_recorded_as_a_flow_run_when_an_api_is_configured(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    scan = shutil.copy(SAMPLE, tmp_path / "scan.pdf")  # its path tells this run from others on the server
    hoso = Hoso(tmp_path / "var", {
        "PREFECT_API_URL": prefect_server.api_url, "PREFECT_HOME": str(tmp_path / "prefect-client"),
    })
    proc = hoso("ingest", str(scan), "--procedure", "business_household_registration", "--json")
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert receipt["status"] == "accepted"
    runs = [r for r in _flow_runs(prefect_server.api_url) if r["parameters"].get("input_path") == str(scan)]
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(completed) == 1, runs
    assert completed[0]["parameters"]["procedure"] == "business_household_registration"
