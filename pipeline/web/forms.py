"""Request bodies without extra dependencies: a size-capped read, url-encoded and multipart form data.

The multipart parser is the standard library's e-mail parser over the capped body, which is enough for
one-stop uploads (a scan, a PDF to verify) of tens of megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import HTTP
from urllib.parse import parse_qsl

from fastapi import Request

from pipeline.core.errors import ExitCode, HosoError, InputEmpty, InvalidRequest


class BodyTooLarge(HosoError):
    """An upload over the configured size."""

    exit_code = ExitCode.input_too_large
    default_vi = "Tệp tải lên quá lớn."


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass
class FormData:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[Upload]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return self.fields.get(name, [])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (BodyTooLarge) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> BodyTooLarge:
    mb = limit / 1_000_000
    return BodyTooLarge(f"request body over {limit} bytes", f"Tệp tải lên vượt quá giới hạn {mb:g} MB.")


async def read_form(request: Request, limit: int) -> FormData:
    """The form of a POST: ``application/x-www-form-urlencoded`` or ``multipart/form-data``."""
    ctype = request.headers.get("content-type", "")
    body = await read_body(request, limit)
    form = FormData()
    if ctype.startswith("application/x-www-form-urlencoded"):
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            form.fields.setdefault(name, []).append(value)
        return form
    if not ctype.startswith("multipart/form-data"):
        raise InvalidRequest(f"unsupported form content type {ctype!r}", "Biểu mẫu gửi lên không đúng định dạng.")
    message = message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode("latin-1") + body, policy=HTTP)
    if not message.is_multipart():
        raise InvalidRequest("malformed multipart body", "Biểu mẫu gửi lên không đúng định dạng.")
    for part in message.iter_parts():
        _add_part(form, part)
    return form


def _add_part(form: FormData, part: Message) -> None:
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        return
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    filename = part.get_param("filename", header="content-disposition")
    if isinstance(filename, str):
        if filename or data:  # a file input left empty sends a part with no name and no bytes
            upload = Upload(filename, part.get_content_type(), data)
            form.files.setdefault(name, []).append(upload)
        return
    charset = part.get_content_charset() or "utf-8"
    form.fields.setdefault(name, []).append(data.decode(charset, "replace"))


def single_upload(form: FormData, name: str) -> Upload:
    """The one non-empty file uploaded as ``name``; InputEmpty otherwise."""
    files = [f for f in form.files.get(name, []) if f.data]
    if not files:
        raise InputEmpty("no file uploaded", "Chưa chọn tệp, hoặc tệp rỗng.")
    return files[0]
