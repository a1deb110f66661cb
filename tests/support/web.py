"""A real ``hoso serve`` process on a free loopback port, for browser tests and load measurements."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.servers import free_ports

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WebServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_web(env: dict[str, str], folder: Path, *, timeout: float = 60.0) -> WebServer:
    """``python -m pipeline.cli serve`` with ``env`` (HOSO_* settings) added to this process's environment;
    HOSO_PUBLIC_URL is set to the server's own address. Waits for ``/healthz``."""
    (port,) = free_ports(1, with_grpc=False)
    url = f"http://127.0.0.1:{port}"
    log = folder / "serve.log"
    full = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "HOSO_PUBLIC_URL": url, **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env=full, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    server = WebServer(url, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hoso serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"hoso serve did not answer within {timeout} s: {log.read_text()[-2000:]}")
