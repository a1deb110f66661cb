"""What ``hoso ingest`` does with a receipt, wherever the chain ran: the ``--out`` files, true timings, the printout.

Only the standard library at import: the hand-off path (``pipeline/cli/entry.py``) reaches here without Typer,
pydantic or the settings; the console view (Rich) is imported only to print a receipt for a person (without
``--json``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def internal_error_line(err: BaseException, log_path: Path | str) -> str:
    """The one stderr line of a bug: Vietnamese for the clerk, then the English for the log, and where it is."""
    return (
        f"hoso: lỗi [internal]: Lỗi hệ thống không mong đợi; đã ghi nhật ký tại {log_path} — "
        f"internal error {type(err).__name__}: {err}"
    )


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def citizen_copy_name(stem: str, artifact: str) -> str:
    """``form-01-1`` → ``<stem>-mau-01-1-cong-dan.pdf``: the citizen's copy, with its lookup secret."""
    return f"{stem}-mau-{artifact.removeprefix('form-')}-cong-dan.pdf"


def deliver(receipt: dict[str, Any], lookup_url: str | None, already_done: bool, files: dict[str, bytes],
            input_path: Path, out: Path | None, as_json: bool, *, startup: float, call_s: float, around: str,
            after: float, labels: Mapping[str, str] | None = None, tz: str | None = None) -> None:
    """Write the files, make the timings true, print the receipt.

    ``labels`` (document type → the catalog's label) and ``tz`` (the agency's time zone) are what the printout
    for a person needs: the caller's, or else this process's catalog and settings.

    ``timings``: the intake's own stages, ``startup`` (this process, before the intake), ``around`` (what
    the call to the intake took beyond the intake's own wall time: the Prefect flow, or the upload and the
    wait at the service) and ``output``; ``wall`` is from this process's start to the printed receipt.
    """
    timings = receipt.setdefault("timings", {})
    inner = float(timings.pop("wall", 0.0))
    timings["startup"] = round(startup, 3)
    if call_s - inner > 0.0005:
        timings[around] = round(timings.get(around, 0.0) + call_s - inner, 3)
    stem = input_path.stem if input_path.is_file() else input_path.name
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / f"{stem}.pdf", files["digitised"])
        for artifact, pdf in files.items():
            if artifact != "digitised":
                write_bytes(out / citizen_copy_name(stem, artifact), pdf)
    timings["output"] = round(time.perf_counter() - after, 3)
    timings["wall"] = round(startup + (time.perf_counter() - (after - call_s)), 3)
    if out is not None:
        write_json(out / f"{stem}.json", receipt)
    if as_json:
        print(json.dumps(receipt | {"already_done": already_done, "lookup_url": lookup_url}, ensure_ascii=False,
                         indent=2))
        return
    if labels is None or tz is None:  # not given by the caller (a service before they came with the receipt)
        from pipeline.core.settings import get_settings
        from pipeline.domain.catalog import load_catalog

        catalog = load_catalog()
        labels = {doc["type"]: catalog.label(doc["type"]) for doc in receipt.get("documents") or []}
        tz = get_settings().timezone
    from pipeline.cli.console import print_receipt

    print_receipt(receipt, lookup_url, already_done, labels, tz)
