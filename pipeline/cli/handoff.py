"""The desk command's hand-off to a running ``hoso serve`` (``hoso ingest --server URL`` or ``HOSO_SERVER_URL``).

The command checks the input as the desk chain would before reading it (exit 3, 18, 19, 8), uploads it with
its file names to ``POST /api/desk/intake`` under the desk user's API token, and waits for the receipt: the
service runs the chain on its warm OCR workers, classifier and signer. A refusal comes back as the use
case's error and leaves with its exit code; a service that is down or answers nonsense is exit 22 — there
is no silent fallback to running the chain here.

Only the standard library and ``pipeline.core`` are imported: a hand-off's start-up counts in the desk's
wall time (the settings model alone takes ~0.9 s to import), so this module reads its three variables itself.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.core.errors import ConfigurationError, ExitCode, Forbidden, HosoError, ServiceUnavailable
from pipeline.core.inputs import Input, identify_input

#: Variables of the hand-off (also in the README's configuration table).
SERVER_URL_ENV, TOKEN_ENV, TOKEN_FILE_ENV, TIMEOUT_ENV = (
    "HOSO_SERVER_URL",
    "HOSO_API_TOKEN",
    "HOSO_API_TOKEN_FILE",
    "HOSO_SERVER_TIMEOUT",
)
#: How long the command waits for the receipt by default: the intake queues behind others at the service.
DEFAULT_TIMEOUT_S = 1800.0
CHUNK = 1 << 20
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since this module was imported)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot, in ticks
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


@dataclass(frozen=True)
class Server:
    url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_S


def server_from(option: str | None) -> Server | None:
    """The service to hand the desk's work to: ``--server`` or HOSO_SERVER_URL; None to run it here.

    Its API token: HOSO_API_TOKEN_FILE (wins) or HOSO_API_TOKEN. Plain ``http://`` only to this machine:
    the token and the citizen's scan must not cross a network in clear.
    """
    url = (option or os.environ.get(SERVER_URL_ENV, "")).strip().rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ConfigurationError(
            f"the service URL must be http(s)://HOST[:PORT], not {url!r}",
            "Địa chỉ máy chủ tiếp nhận không hợp lệ (http(s)://máy:cổng).",
        )
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ConfigurationError(
            f"{url}: plain http only to this machine; use https", "Kết nối tới máy chủ tiếp nhận khác phải dùng https."
        )
    token_file = os.environ.get(TOKEN_FILE_ENV, "").strip()
    try:
        token = Path(token_file).read_text().strip() if token_file else os.environ.get(TOKEN_ENV, "").strip()
    except OSError as err:
        raise ConfigurationError(
            f"cannot read {TOKEN_FILE_ENV} {token_file}: {err.strerror}", "Không đọc được tệp mã truy cập (API token)."
        ) from err
    if not token:
        raise ConfigurationError(
            f"handing off to {url} needs the desk user's API token: {TOKEN_FILE_ENV} or "
            f"{TOKEN_ENV} (hoso users token USER --scope desk)",
            "Thiếu mã truy cập (API token) của cán bộ tiếp nhận.",
        )
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    except ValueError:
        raise ConfigurationError(
            f"{TIMEOUT_ENV} must be a number of seconds", "Cấu hình thời gian chờ máy chủ không hợp lệ."
        ) from None
    return Server(url, token, timeout)


@dataclass
class HandedOff:
    """What the service gave back: the receipt (JSON, as the contract has it) and how to get the files."""

    receipt: dict[str, Any]
    lookup_url: str | None
    already_done: bool
    digitised_url: str
    citizen_form: str | None
    citizen_form_url: str | None
    request_s: float  # upload, the service's work, the answer
    labels: dict[str, str] | None = None  # the receipt's document types → the catalog's labels (the service's)
    timezone: str | None = None  # the agency's, the service's setting


def _multipart(source: Input, fields: dict[str, str], boundary: str) -> tuple[list[bytes | Path], int]:
    """The body's pieces (bytes, or a file streamed as it is sent) and its length."""
    pieces: list[bytes | Path] = []
    for name, value in fields.items():
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{value}\r\n".encode()
        )
    for n, f in enumerate(source.files, start=1):  # names travel in the "input" field, in UTF-8 JSON
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="page"; filename="{n:05d}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        pieces.append(f.path)
        pieces.append(b"\r\n")
    pieces.append(f"--{boundary}--\r\n".encode())
    size = sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in pieces)
    return pieces, size


def _stream(pieces: list[bytes | Path]) -> Iterator[bytes]:
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
            continue
        with piece.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk


class _Remote:
    def __init__(self, server: Server) -> None:
        self.server = server
        parts = urlsplit(server.url)
        conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.conn = conn_type(parts.netloc, timeout=server.timeout)

    def request(
        self, method: str, path: str, body: Iterator[bytes] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, bytes]:
        all_headers = {"Authorization": f"Bearer {self.server.token}", "Accept": "application/json"} | (headers or {})
        try:
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        except TimeoutError as err:
            raise ServiceUnavailable(
                f"{self.server.url} gave no answer within {self.server.timeout:g} s (the intake may still finish "
                "there: the same command again gives its receipt)",
                "Máy chủ tiếp nhận không trả lời kịp; chạy lại đúng lệnh này để nhận giấy tiếp nhận.",
            ) from err
        except (OSError, http.client.HTTPException) as err:
            raise ServiceUnavailable(f"cannot reach the hoso service at {self.server.url}: {err}") from err

    def json(
        self, method: str, path: str, body: Iterator[bytes] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        status, ctype, data = self.request(method, path, body, headers)
        if status == 200 and ctype.startswith("application/json"):
            return dict(json.loads(data))
        raise _refusal(self.server, status, ctype, data)

    def pdf(self, path: str) -> bytes:
        status, ctype, data = self.request("GET", path)
        if status == 200 and ctype.startswith("application/pdf"):
            return data
        raise _refusal(self.server, status, ctype, data)

    def close(self) -> None:
        self.conn.close()


def _refusal(server: Server, status: int, ctype: str, data: bytes) -> HosoError:
    """The service's answer as the error the desk chain would have raised here (same exit code)."""
    body: dict[str, Any] = {}
    if ctype.startswith("application/json"):
        try:
            body = dict(json.loads(data))
        except (ValueError, TypeError):
            body = {}
    english = str(body.get("message_en") or f"HTTP {status}")
    if status == 401:
        return Forbidden(
            f"{server.url} refused the API token: {english}",
            "Máy chủ tiếp nhận từ chối mã truy cập (API token) — sai, hết hạn hoặc đã thu hồi.",
        )
    reason = body.get("error")
    if isinstance(reason, str) and reason in ExitCode.__members__ and reason not in ("ok", "failed"):
        err = HosoError(f"{english} (at {server.url})", str(body.get("message_vi") or "") or None)
        err.exit_code = ExitCode[reason]
        return err
    return ServiceUnavailable(
        f"{server.url} answered HTTP {status} ({ctype or 'no content type'}): "
        f"{data[:200].decode('utf-8', 'replace')!r} — is it a hoso service with desk hand-off?"
    )


def _labels(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value


def hand_off(server: Server, input_path: Path, procedure: str, applicant_id: str | None) -> tuple[HandedOff, _Remote]:
    """Upload the input and wait for its receipt; the returned connection fetches the files, then closes."""
    source = identify_input(input_path)  # refusals before reading, as the desk chain here would make them
    described = {"folder": source.name if source.is_folder else "", "files": [f.name for f in source.files]}
    boundary = f"hoso-{secrets.token_hex(12)}"
    fields = {"procedure": procedure, "input": json.dumps(described, ensure_ascii=False)}
    if applicant_id:
        fields["applicant_id"] = applicant_id
    pieces, size = _multipart(source, fields, boundary)
    remote = _Remote(server)
    start = time.perf_counter()
    try:
        answer = remote.json(
            "POST",
            "/api/desk/intake",
            _stream(pieces),
            {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)},
        )
        job = answer["job"]
        handed = HandedOff(
            receipt=dict(job["receipt"]),
            lookup_url=job.get("lookup_url"),
            already_done=bool(job["already_done"]),
            digitised_url=str(answer["digitised_url"]),
            citizen_form=answer.get("citizen_form"),
            citizen_form_url=answer.get("citizen_form_url"),
            request_s=time.perf_counter() - start,
            labels=_labels(answer.get("document_labels")),
            timezone=answer.get("timezone") if isinstance(answer.get("timezone"), str) else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        remote.close()
        raise ServiceUnavailable(f"{server.url} answered without a receipt: {type(err).__name__}: {err}") from err
    except BaseException:
        remote.close()
        raise
    return handed, remote


def ingest_remote(server: Server, input_path: Path, procedure: str, applicant_id: str | None, out: Path | None,
                  as_json: bool) -> None:
    """``hoso ingest`` at a running ``hoso serve``: the receipt, the ``--out`` files and the printout as the
    chain run here would give them (:func:`pipeline.cli.delivery.deliver`); a HosoError as the chain's."""
    from pipeline.cli.delivery import deliver

    startup = process_age()
    start = time.perf_counter()
    handed, remote = hand_off(server, input_path, procedure, applicant_id)
    try:
        files: dict[str, bytes] = {}
        if out is not None:
            files["digitised"] = remote.pdf(handed.digitised_url)
            if handed.citizen_form and handed.citizen_form_url:
                files[handed.citizen_form] = remote.pdf(handed.citizen_form_url)
    finally:
        remote.close()
    deliver(handed.receipt, handed.lookup_url, handed.already_done, files, input_path, out, as_json,
            startup=startup, call_s=handed.request_s, around="transfer", after=start + handed.request_s,
            labels=handed.labels, tz=handed.timezone)
