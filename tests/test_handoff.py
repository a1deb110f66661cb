"""The desk command handing its work to a running ``hoso serve`` (``hoso ingest --server``): the same receipt
contract, files and exit codes as the chain run in the command; true timings; refusals, a wrong token and a
service that is down are clear errors with stable exit codes, never a silent fallback.

The service runs in this process (uvicorn in a thread) with the scripted OCR engine, so these stay fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pytest
import uvicorn
from support.cli import SAMPLE, SCRIPTED_ENGINE, Hoso
from support.servers import free_ports

from pipeline.cli.entry import HandOffArgs, hand_off_args
from pipeline.cli.handoff import Server, hand_off, server_from
from pipeline.core.errors import ExitCode, HosoError
from pipeline.core.inputs import identify_input
from pipeline.core.models import Role
from pipeline.core.settings import Settings
from pipeline.usecases.services import Services
from pipeline.web.app import create_app
from storage.identity import Identity

PROCEDURE = "business_household_registration"
#: The receipt's keys that the contract promises (README, "The receipt JSON").
CONTRACT = {"dossier_code", "procedure", "status", "received_at", "due_at", "pages", "documents", "missing",
            "unexpected", "artifacts", "timings", "already_done", "lookup_url"}


@dataclass
class Service:
    url: str
    token: str
    data_dir: Path
    services: Services


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("handoff") / "var"
    (port,) = free_ports(1, with_grpc=False)
    url = f"http://127.0.0.1:{port}"
    services = Services(Settings(data_dir=data, public_url=url, level_digitised="B-B", level_result="B-B",
                                 ocr_engine=SCRIPTED_ENGINE, ocr_jobs=1))
    ident = Identity(services.registry)
    ident.add_user("lan", "Nguyễn Thị Lan", [Role.desk], "mat-khau-du-dai-1")
    ident.add_user("minh", "Trần Văn Minh", [Role.specialist], "mat-khau-du-dai-1")
    token, _ = ident.issue_token("lan", Role.desk)
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.02)
    yield Service(url, token, data, services)
    server.should_exit = True
    thread.join(timeout=15)


def desk_command(service: Service, tmp_path: Path, **env: str) -> Hoso:
    """The ``hoso`` command of a desk PC: its own (empty) data folder, the service's URL and the token."""
    token_file = tmp_path / "token"
    token_file.write_text(service.token + "\n")
    token_file.chmod(0o600)
    return Hoso(tmp_path / "desk-var", {"HOSO_SERVER_URL": service.url, "HOSO_API_TOKEN_FILE": str(token_file)} | env)


def test_the_desk_command_gets_the_same_receipt_files_and_true_timings(service: Service, tmp_path: Path) -> None:
    hoso = desk_command(service, tmp_path)
    run = hoso("ingest", str(SAMPLE), "--procedure", PROCEDURE, "--json", "--out", str(tmp_path / "d"))
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert set(printed) >= CONTRACT and printed["status"] == "accepted" and printed["already_done"] is False
    code = printed["dossier_code"]
    assert printed["lookup_url"].startswith(f"{service.url}/tra-cuu/{code}?s=")
    # recorded by the service under the desk user of the token, with the input's own name and identity
    record = service.services.registry.get(code)
    assert record.input_sha256 == identify_input(SAMPLE).sha256 == printed["input_sha256"]
    assert printed["artifacts"]["input"] == f"dossiers/{code}/input/{SAMPLE.name}"
    assert next(e for e in record.events if e.action == "intake_forms").actor == "lan"
    # the files the command writes: the certified copy as stored, the receipt alone, the citizen's form
    out = tmp_path / "d"
    stored = service.services.store.get_bytes(record.artifacts["digitised"].object_key)
    assert (out / "sample_dossier.pdf").read_bytes() == stored
    written = json.loads((out / "sample_dossier.json").read_text())
    assert written == {k: v for k, v in printed.items() if k not in ("already_done", "lookup_url")}
    citizen = (out / "sample_dossier-mau-01-1-cong-dan.pdf").read_bytes()
    assert citizen.startswith(b"%PDF") and citizen != stored
    assert not (tmp_path / "desk-var" / "registry.db").exists()  # nothing ran on the desk PC but the upload
    # the timings: every stage, from this process's start to the receipt, adding up to the wall time
    t = printed["timings"]
    assert {"startup", "transfer", "queued", "prepare", "ocr", "understand", "sign", "record", "forms",
            "output"} <= set(t)
    stages = sum(v for k, v in t.items() if k != "wall")
    assert abs(stages - t["wall"]) < 0.05 + 0.01 * len(t), t
    assert t["wall"] >= t["ocr"] + t["sign"] + t["record"] and t["startup"] > 0  # tens of ms (pipeline/cli/entry.py)
    # the same scan again: the receipt of the dossier already received, timed as this run
    again = json.loads(hoso("ingest", str(SAMPLE), "--procedure", PROCEDURE, "--json").stdout)
    assert again["dossier_code"] == code and again["already_done"] is True and again["lookup_url"] is None
    assert "ocr" not in again["timings"] and again["timings"]["wall"] < t["wall"] + 5


#: What a desk hand-off must not load: its start-up is part of the desk's wait (pipeline/cli/entry.py).
HEAVY = {"typer", "click", "rich", "pydantic", "pydantic_settings", "sqlalchemy", "yaml", "cv2", "numpy", "pyhanko",
         "reportlab", "fastapi", "prefect"}


def imported(stderr: str) -> set[str]:
    """The top-level packages a ``python -X importtime`` run imported."""
    names = (line.rpartition("|")[2].strip() for line in stderr.splitlines() if line.startswith("import time:"))
    return {name.split(".")[0] for name in names}


def test_the_hand_off_loads_neither_typer_nor_the_chain(service: Service, tmp_path: Path) -> None:
    hoso = desk_command(service, tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.cli", "ingest", str(SAMPLE),
                               "-p", PROCEDURE, *args], env=hoso.env, capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    lean = run("--json", "--out", str(tmp_path / "d"))
    assert lean.returncode == 0, lean.stderr[-2000:]
    assert json.loads(lean.stdout)["dossier_code"] and (tmp_path / "d" / "sample_dossier.json").is_file()
    assert "pipeline" in imported(lean.stderr) and not imported(lean.stderr) & HEAVY
    # the printout for a person: Rich, with the labels and the time zone the service sent with the receipt
    shown = run()
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "GIẤY TIẾP NHẬN HỒ SƠ" in shown.stdout and "Căn cước" in shown.stdout and "đã được tiếp nhận" in shown.stdout
    assert not imported(shown.stderr) & (HEAVY - {"rich"})
    # what the reader does not take goes to the Typer command, with its message (and its imports)
    typer = run("--server", service.url, "--user", "lan")
    assert typer.returncode == ExitCode.usage and "--server takes neither --prefect nor --user" in typer.stderr
    assert {"typer", "click"} <= imported(typer.stderr)


@pytest.mark.parametrize(("argv", "expected"), [
    (["ingest", "a.pdf", "-p", "x", "--server", "http://h"], HandOffArgs(Path("a.pdf"), "x", server="http://h")),
    (["-v", "ingest", "--server=http://h", "-px", "--json", "--out", "d", "--applicant-id", "0", "--", "-a.pdf"],
     HandOffArgs(Path("-a.pdf"), "x", "0", Path("d"), True, "http://h", verbose=True)),
    (["ingest", "a.pdf", "--procedure", "x", "--procedure", "y"], HandOffArgs(Path("a.pdf"), "y")),  # env: server
    (["ingest", "a.pdf", "-p", "x", "--help"], None),
    (["ingest", "a.pdf", "-p", "x", "--direct"], None),
    (["ingest", "a.pdf", "-p", "x", "--json=1"], None),
    (["ingest", "a.pdf", "b.pdf", "-p", "x"], None),
    (["ingest", "a.pdf"], None),
    (["ingest", "a.pdf", "-p"], None),
    (["status", "a.pdf", "-p", "x"], None),
    (["--help"], None),
])
def test_only_a_well_formed_hand_off_skips_typer(argv: list[str], expected: HandOffArgs | None) -> None:
    assert hand_off_args(argv, {"HOSO_SERVER_URL": "http://h"}) == expected
    if expected is not None and expected.server is None:  # the chain runs here: the Typer command
        assert hand_off_args(argv, {}) is None


def _server(service: Service, token: str | None = None) -> Server:
    return Server(service.url, token or service.token, timeout=60)


def test_a_folder_of_pages_keeps_its_names_and_identity(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "hồ sơ bà Lan"
    folder.mkdir()
    pdf = pdfium.PdfDocument(SAMPLE)
    for i in range(len(pdf)):
        pdf[i].render(scale=100 / 72).to_pil().convert("L").save(folder / f"trang {i + 1:02d}.png")
    pdf.close()
    handed, remote = hand_off(_server(service), folder, PROCEDURE, None)
    remote.close()
    receipt = handed.receipt
    assert receipt["input_sha256"] == identify_input(folder).sha256
    assert receipt["artifacts"]["input-0001"].endswith("/input/trang 01.png"), receipt["artifacts"]
    assert service.services.registry.get(receipt["dossier_code"]).input_name == folder.name


@pytest.mark.parametrize(("content", "exit_code"), [
    (b"", ExitCode.input_empty),
    (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", ExitCode.input_corrupt),
    (b"plain text, not a scan", ExitCode.input_unsupported),
])
def test_refused_input_leaves_with_the_exit_code_of_the_chain(service: Service, tmp_path: Path, content: bytes,
                                                              exit_code: ExitCode) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(content)
    with pytest.raises(HosoError) as caught:
        hand_off(_server(service), scan, PROCEDURE, None)
    assert caught.value.exit_code == exit_code and caught.value.message_vi


def test_refusals_before_reading_happen_at_the_desk(service: Service, tmp_path: Path) -> None:
    link = tmp_path / "scan.pdf"
    link.symlink_to(SAMPLE)
    (tmp_path / "bad\nname.pdf").write_bytes(SAMPLE.read_bytes())
    for path, code in ((tmp_path / "missing.pdf", ExitCode.input_missing), (link, ExitCode.input_not_regular),
                       (tmp_path / "bad\nname.pdf", ExitCode.input_bad_name)):
        with pytest.raises(HosoError) as caught:
            hand_off(Server("http://127.0.0.1:9", "x"), path, PROCEDURE, None)  # nothing listens: never asked
        assert caught.value.exit_code == code, path


def test_wrong_token_role_or_procedure(service: Service, tmp_path: Path) -> None:
    specialist, _ = Identity(service.services.registry).issue_token("minh", Role.specialist)
    cases = [(_server(service, "hoso_not-a-token"), PROCEDURE, ExitCode.forbidden),
             (_server(service, specialist), PROCEDURE, ExitCode.forbidden),
             (_server(service), "no_such_procedure", ExitCode.unknown_procedure)]
    for server, procedure, code in cases:
        with pytest.raises(HosoError) as caught:
            hand_off(server, SAMPLE, procedure, None)
        assert caught.value.exit_code == code, (procedure, caught.value)


def test_a_service_that_is_down_is_exit_22_without_fallback(tmp_path: Path) -> None:
    (port,) = free_ports(1, with_grpc=False)
    token = tmp_path / "token"
    token.write_text("hoso_x")
    hoso = Hoso(tmp_path / "var", {"HOSO_API_TOKEN_FILE": str(token)})
    run = hoso("ingest", str(SAMPLE), "--procedure", PROCEDURE, "--server", f"http://127.0.0.1:{port}")
    assert run.returncode == ExitCode.service_unavailable, run.stderr
    assert run.stderr.startswith("hoso: lỗi [service_unavailable]:") and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "var" / "registry.db").exists()  # it did not run the chain itself instead


@pytest.mark.parametrize(("url", "env"), [
    ("http://10.0.0.5:8000", {"HOSO_API_TOKEN": "hoso_x"}),  # the token and the scan in clear over a network
    ("ftp://127.0.0.1:8000", {"HOSO_API_TOKEN": "hoso_x"}),
    ("http://127.0.0.1:8000/api", {"HOSO_API_TOKEN": "hoso_x"}),
    ("http://127.0.0.1:8000", {}),  # no token
])
def test_hand_off_configuration_is_checked(url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOSO_SERVER_URL", "HOSO_API_TOKEN", "HOSO_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(HosoError) as caught:
        server_from(url)
    assert caught.value.exit_code == ExitCode.configuration


def test_no_server_means_the_chain_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSO_SERVER_URL", raising=False)
    assert server_from(None) is None
    monkeypatch.setenv("HOSO_SERVER_URL", "https://mot-cua.example.vn/")
    monkeypatch.setenv("HOSO_API_TOKEN", " hoso_abc \n")
    assert server_from(None) == Server("https://mot-cua.example.vn", "hoso_abc")
