"""Warm flow-run processes (flows/warm.py): a flow run forked from the worker's server runs with its own
environment, working folder and streams, ends with its client, hears the client's signals, and starts cold when
no server answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the server imports Prefect and hoso's flows (~3 s)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    path = str(tmp_path_factory.mktemp("warm") / "engine.sock")
    proc = subprocess.Popen([sys.executable, "-m", "flows.warm", "--serve", path], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    yield proc, path
    proc.kill()
    proc.wait()


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API address that takes connections and never answers: a run started on it waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    listener.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HOSO_"))}
    return env | {"PYTHONPATH": str(ROOT), "PREFECT_API_REQUEST_TIMEOUT": "60"} | extra


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _wait_for(test: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if test():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _start(path: str, api: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = _env(HOSO_WARM_ENGINE=path, PREFECT_API_URL=api, PREFECT__FLOW_RUN_ID="0" * 8 + "-0000-4000-8000-" + "0" * 12)
    return subprocess.Popen([sys.executable, "-m", "flows.warm"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _started(
    server: tuple[subprocess.Popen[bytes], str], api: str, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A client started on the server, and its run (the server's one child)."""
    proc, path = server
    client = _start(path, api, tmp_path)
    assert _wait_for(lambda: _children(proc.pid))
    (child,) = _children(proc.pid)
    return client, child


def test_a_run_is_forked_from_the_server_with_the_clients_environment_folder_and_streams(
    server: tuple[subprocess.Popen[bytes], str], silent_api: str, tmp_path: Path
) -> None:
    proc, path = server
    client = _start(path, silent_api, tmp_path)
    try:
        assert _wait_for(lambda: _children(proc.pid))
        (child,) = _children(proc.pid)
        # (the child takes the client's folder just after the fork: wait for it, not for a moment)
        assert _wait_for(lambda: Path(f"/proc/{child}/cwd").resolve() == tmp_path.resolve())
        assert os.readlink(f"/proc/{child}/fd/2") == os.readlink(f"/proc/{client.pid}/fd/2")  # the client's stderr
        assert b"flows.warm" in Path(f"/proc/{client.pid}/cmdline").read_bytes()  # the client waits, not exec'd
        # The client's environment took (/proc shows a forked child's environment at the server's start, so it
        # is read from what the run does): Prefect re-read its settings and waits on the silent API, not on an
        # ephemeral server
        assert _wait_for(lambda: any(
            f":{silent_api.split(':')[2].split('/')[0]}" in line
            for line in subprocess.run(["ss", "-tnp"], capture_output=True, text=True).stdout.splitlines()
            if f"pid={child}," in line
        ))
    finally:
        client.kill()
        client.wait()


def test_a_run_ends_with_its_client(
    server: tuple[subprocess.Popen[bytes], str], silent_api: str, tmp_path: Path
) -> None:
    """The worker killed (its flow-run process with it): the forked run does not live on."""
    client, child = _started(server, silent_api, tmp_path)
    client.kill()
    client.wait()
    assert _wait_for(lambda: _gone(child), 10)


def test_a_signal_to_the_client_reaches_the_run_and_the_client_exits_as_it_did(
    server: tuple[subprocess.Popen[bytes], str], silent_api: str, tmp_path: Path
) -> None:
    client, child = _started(server, silent_api, tmp_path)
    time.sleep(1.0)  # the engine's signal handlers in place (else SIGTERM's default ends it: also a pass)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=60) != 0
    assert _wait_for(lambda: _gone(child), 10)


def test_without_a_server_the_run_starts_cold_and_ends_the_same(tmp_path: Path) -> None:
    """No server (or a dead one): the client becomes `python -m prefect.engine`; a bad flow run id ends both the
    same way."""
    env = _env(PREFECT__FLOW_RUN_ID="not-a-run")
    cold = subprocess.run([sys.executable, "-m", "prefect.engine"], cwd=tmp_path, env=env, capture_output=True)
    for where in ("", str(tmp_path / "no-such.sock")):
        run = subprocess.run([sys.executable, "-m", "flows.warm"], cwd=tmp_path, env=env | {"HOSO_WARM_ENGINE": where},
                             capture_output=True)
        assert run.returncode == cold.returncode == 1
        assert b"Invalid flow run id" in run.stderr and b"Invalid flow run id" in cold.stderr


def test_a_bad_run_through_the_server_ends_as_a_cold_one_would(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    _proc, path = server
    env = _env(PREFECT__FLOW_RUN_ID="not-a-run", HOSO_WARM_ENGINE=path)
    run = subprocess.run([sys.executable, "-m", "flows.warm"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert run.returncode == 1 and b"Invalid flow run id" in run.stderr
    assert b"RuntimeWarning" not in run.stderr
