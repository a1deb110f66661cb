"""The lifecycle through the ``hoso`` command: users, steps, work lists, and concurrent ``issue-result``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from support.lifecycle import dossier_in
from support.pdfs import flat_text

from pipeline.core.errors import ExitCode
from pipeline.core.models import DossierState, Role
from pipeline.core.settings import Settings
from pipeline.usecases.services import Services
from storage import keys
from storage.identity import DossierClaim
from storage.objects import sha256_bytes

S = DossierState
VN = ZoneInfo("Asia/Ho_Chi_Minh")
T0 = datetime(2025, 7, 1, 9, 0, tzinfo=VN)
ERROR_LINE = re.compile(r"^hoso: lỗi \[(\w+)\]: .+ — .+$")


class Hoso:
    """The real command in fresh processes, on one data folder and registry."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_API_URL"))}
        self.env |= {"HOSO_DATA_DIR": str(data_dir), "HOSO_DATABASE_URL": database_url}
        self.cwd = data_dir.parent

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=300, cwd=self.cwd)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=self.env, cwd=self.cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _setup(data: Path, database_url: str) -> Iterator[tuple[Hoso, Services]]:
    services = Services(Settings(data_dir=data, database_url=database_url))
    yield Hoso(data, database_url), services
    services.registry.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Hoso, Services]]:
    """On SQLite: these tests are about the command; the use-case tests run on both databases."""
    yield from _setup(tmp_path / "var", f"sqlite:///{tmp_path / 'var' / 'registry.db'}")


@pytest.fixture
def on_both(tmp_path: Path, registry_url: str) -> Iterator[tuple[Hoso, Services]]:
    yield from _setup(tmp_path / "var", registry_url)


def failed_with(proc: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    """The one error line of a command that failed with ``code``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    match = ERROR_LINE.match(line)
    assert match and match.group(1) == code.name, line
    return line


@pytest.mark.slow  # many `hoso` processes
def test_users_are_added_listed_and_given_tokens(setup: tuple[Hoso, Services]) -> None:
    hoso, services = setup
    added = hoso("users", "add", "lan", "--name", "Nguyễn Thị Lan", "--role", "desk", "--role", "clerk",
                 "--password-stdin", stdin="mat-khau-rat-dai\n")
    assert added.returncode == 0, added.stderr
    assert "Nguyễn Thị Lan" in added.stdout
    listed = json.loads(hoso("users", "list", "--json").stdout)
    assert [(u["username"], u["roles"], u["active"]) for u in listed] == [("lan", ["clerk", "desk"], True)]
    assert "password" not in json.dumps(listed)
    failed_with(hoso("users", "add", "lan", "--name", "X", "--role", "desk", "--password-stdin",
                     stdin="mat-khau-rat-dai\n"), ExitCode.invalid_state)
    failed_with(hoso("users", "add", "an", "--name", "X", "--role", "boss", "--password-stdin", stdin="x" * 12),
                ExitCode.usage)
    failed_with(hoso("users", "add", "an", "--name", "X", "--role", "desk", "--password-stdin", stdin="short\n"),
                ExitCode.usage)
    assert hoso("users", "passwd", "lan", "--password-stdin", stdin="mat-khau-moi-dai\n").returncode == 0
    from pipeline.usecases.lifecycle import login

    assert login(services, "lan", "mat-khau-moi-dai").roles == {Role.desk, Role.clerk}
    issued = hoso("users", "token", "lan", "--scope", "clerk", "--label", "máy quét", "--days", "30")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("hoso_") and "\n" not in token and "chỉ hiện một lần" in issued.stderr
    from pipeline.usecases.lifecycle import actor_for_token

    assert actor_for_token(services, token).roles == {Role.clerk}
    failed_with(hoso("users", "token", "lan", "--scope", "approver"), ExitCode.forbidden)
    assert hoso("users", "disable", "lan").returncode == 0
    failed_with(hoso("step", "forward", dossier_in(services, S.received, T0), "--user", "lan"), ExitCode.forbidden)
    assert hoso("users", "enable", "lan").returncode == 0
    assert hoso("users", "token", "lan", "--scope", "clerk", "--revoke", "1").returncode == 0
    from pipeline.core.errors import Forbidden

    with pytest.raises(Forbidden):
        actor_for_token(services, token)


@pytest.mark.slow  # many `hoso` processes
def test_steps_by_named_users_and_their_refusals(setup: tuple[Hoso, Services], tmp_path: Path) -> None:
    hoso, services = setup
    for name, role in (("lan", "desk"), ("minh", "specialist")):
        assert hoso("users", "add", name, "--name", name.title(), "--role", role, "--password-stdin",
                    stdin="mat-khau-rat-dai\n").returncode == 0
    code = dossier_in(services, S.received, T0)
    moved = hoso("step", "forward", code, "--user", "lan")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines()[0] == (
        f"Đã thực hiện bước \"Chuyển xử lý\" trên hồ sơ {code}: Đã tiếp nhận → Đang thẩm định")
    line = failed_with(hoso("step", "appraise", code, "--user", "lan", "--note", "ok"), ExitCode.forbidden)
    assert "Chuyên viên thẩm định" in line and "needs one of: specialist" in line
    failed_with(hoso("step", "forward", code, "--user", "lan"), ExitCode.invalid_state)
    failed_with(hoso("step", "appraise", code, "--user", "minh"), ExitCode.usage)  # an appraisal needs words
    failed_with(hoso("step", "sing", code, "--user", "minh"), ExitCode.usage)
    failed_with(hoso("step", "receive", code, "--user", "lan"), ExitCode.usage)  # the desk chain's own step
    failed_with(hoso("step", "appraise", code, "--user", "nobody", "--note", "ok"), ExitCode.forbidden)
    failed_with(hoso("step", "appraise", "000.00.00.H00-250701-9999", "--user", "minh", "--note", "ok"),
                ExitCode.dossier_not_found)
    out = tmp_path / "out"
    asked = hoso("step", "request-supplement", code, "--user", "minh", "--note", "Bản sao CCCD mờ",
                 "--missing", "cccd", "--out", str(out), "--json")
    assert asked.returncode == 0, asked.stderr
    done = json.loads(asked.stdout)
    assert (done["action"], done["role"], done["from_state"], done["state"]) == (
        "request_supplement", "specialist", "appraisal", "needs_supplement")
    (form,) = done["forms"]
    assert form["artifact"] == "form-02-1" and "?s=" in form["lookup_url"]
    (written,) = done["written"]
    assert "Bản sao CCCD mờ" in flat_text(Path(written).read_bytes())
    status = json.loads(hoso("status", code, "--json").stdout)
    assert [(e["action"], e["actor"], e["role"]) for e in status["events"]][-2:] == [
        ("forward", "lan", "desk"), ("request_supplement", "minh", "specialist")]
    failed_with(hoso("step", "return", code, "--user", "lan", "--channel", "post"), ExitCode.usage)  # no tracking


@pytest.mark.slow  # many `hoso` processes
def test_work_lists_on_the_command_line(setup: tuple[Hoso, Services]) -> None:
    hoso, services = setup
    now = datetime.now(VN)
    overdue = dossier_in(services, S.appraisal, now - timedelta(days=30))
    fresh = dossier_in(services, S.appraisal, now)
    listed = hoso("worklist", "--role", "specialist", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["code"] for i in json.loads(listed.stdout)] == [overdue, fresh]
    late = json.loads(hoso("worklist", "--overdue", "--json").stdout)
    assert [(i["code"], i["overdue"]) for i in late] == [(overdue, True)]
    table = hoso("worklist", "--overdue")
    assert table.returncode == 0 and overdue in table.stdout and "Hồ sơ quá hạn: 1" in table.stdout
    failed_with(hoso("worklist"), ExitCode.usage)
    failed_with(hoso("worklist", "--role", "boss"), ExitCode.usage)


@pytest.mark.slow  # four `hoso` processes at once
def test_four_concurrent_issue_results_end_with_one_result(on_both: tuple[Hoso, Services]) -> None:
    """Four processes issue the result of one dossier at once: one does, three are told it is in progress
    or done; the registry and the store agree on the one result (SHA-256, verification code)."""
    hoso, services = on_both
    code = dossier_in(services, S.received, T0)
    procs = []
    for _ in range(4):  # a little apart, so that later ones find the first one at different steps
        procs.append(hoso.popen("issue-result", code))
        time.sleep(0.4)
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    assert [r[0] for r in losers] == [ExitCode.invalid_state] * 3, results
    for _, _, err in losers:
        assert "đang được xử lý" in err or "đã được trả kết quả" in err, err
    record = services.registry.get(code)
    assert record.state == S.returned
    steps = [e.action for e in record.events if e.actor == "batch:issue-result"]
    assert steps == ["forward", "appraise", "approve", "seal", "return"]  # each step once
    result = record.artifacts[keys.RESULT]
    stored = [i.key for i in services.store.list(keys.dossier_prefix(code)) if i.key.endswith("result.pdf")]
    assert stored == [result.object_key]
    pdf = services.store.get_bytes(result.object_key)
    assert sha256_bytes(pdf) == result.sha256
    verification = next(e.detail["result"]["verification_code"] for e in record.events if e.action == "seal")
    assert services.store.stat(result.object_key).metadata["verification-code"] == verification  # type: ignore[union-attr]
    assert f"Mã tra cứu: {verification}" in flat_text(pdf)
    assert verification in winners[0][1]
    with services.registry.transaction() as session:
        assert session.query(DossierClaim).count() == 0
    assert record.artifacts[keys.RESULT_APPROVED].sha256 == sha256_bytes(
        services.store.get_bytes(keys.approved_result_key(code)))


@pytest.mark.slow  # a `hoso` run
def test_a_named_desk_user_is_checked_before_any_work(setup: tuple[Hoso, Services]) -> None:
    hoso, _ = setup
    sample = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_dossier.pdf"
    failed_with(hoso("ingest", str(sample), "--procedure", "business_household_registration", "--user", "nobody"),
                ExitCode.forbidden)
