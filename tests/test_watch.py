"""The watched inbox (``hoso watch``): taken once complete, received once, shelved once, whatever stops it.

Fast tests call the use case in this process with the scripted OCR engine (one Services for the module);
the slow ones run real ``hoso watch`` processes, kill them with SIGKILL and restart them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest

from pipeline.core.settings import Settings
from pipeline.usecases.desk import IntakeRequest, ingest
from pipeline.usecases.services import Services
from pipeline.usecases.watch import (
    MARKER,
    Inbox,
    Watcher,
    WatchOptions,
    abandoned,
    claim,
)
from support.cli import SAMPLE, SCRIPTED_ENGINE, Hoso

PROCEDURE = "business_household_registration"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("watch-var")
    services = Services(Settings(data_dir=data, ocr_engine=SCRIPTED_ENGINE, ocr_jobs=1))
    try:
        yield services
    finally:
        services.close()


def dossier(path: Path, tag: str) -> Path:
    """The sample dossier with a trailing comment: the same pages, another input (another SHA-256)."""
    path.write_bytes(SAMPLE.read_bytes() + f"\n% {tag}\n".encode())
    return path


def page_folder(folder: Path, tag: str) -> Path:
    """The sample's pages as a folder of JPEG files (their names make it another input per tag)."""
    folder.mkdir()
    with pikepdf.open(SAMPLE) as pdf:
        for i, page in enumerate(pdf.pages, 1):
            (image,) = page.images.values()
            (folder / f"{tag}-page-{i:02d}.jpg").write_bytes(image.read_raw_bytes())
    return folder


def shelf(root: Path) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(root / sub)) for sub in ("done", "failed", "processing")}


def watcher(root: Path, services: Services, **options: float | str | None) -> Watcher:
    return Watcher(Inbox.open(root), services, WatchOptions(**options))  # type: ignore[arg-type]


def count_by_sha(services: Services, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    return sum(1 for d in services.registry.list_dossiers() if d.input_sha256 == sha)


def test_once_takes_what_is_complete_and_shelves_each_beside_its_receipt_or_reason(
    tmp_path: Path, services: Services
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    marked_bytes = dossier(root / "a.pdf", "once-a").read_bytes()
    (root / ("a.pdf" + MARKER)).write_text(f"{PROCEDURE}\n", encoding="utf-8")  # the marker names the procedure
    (root / "notes.txt").write_text("not a scan")
    (root / "link.pdf").symlink_to(SAMPLE)  # never followed
    os.mkfifo(root / "pipe.pdf")  # never opened: reading it would hang
    dossier(root / "bad\x1bname.pdf", "once-bad")
    dossier(root / "noproc.pdf", "once-noproc")  # no marker, no manifest line, no --procedure
    (root / "done").mkdir()
    (root / "done" / "a.pdf").write_bytes(b"an earlier a.pdf, kept")  # a name already on the shelf

    summary = watcher(root, services, settle=0).run(once=True)

    assert shelf(root) == {
        "done": ["a.pdf", "a~2.pdf", "a~2.pdf.json", "a~2.pdf.mau-01-1-cong-dan.pdf"],
        "failed": sorted(f"{n}{s}" for n in ("bad_u001bname.pdf", "link.pdf", "noproc.pdf", "notes.txt",
                                             "pipe.pdf") for s in ("", ".reason.txt")),
        "processing": [],
    }
    assert (root / "done" / "a.pdf").read_bytes() == b"an earlier a.pdf, kept"
    receipt = json.loads((root / "done" / "a~2.pdf.json").read_text(encoding="utf-8"))
    assert receipt["procedure"] == PROCEDURE and receipt["status"] == "accepted"
    assert services.registry.get(receipt["dossier_code"]).input_sha256 == hashlib.sha256(
        (root / "done" / "a~2.pdf").read_bytes()).hexdigest()
    assert sorted(os.listdir(root)) == ["done", "failed", "processing"]  # the marker went with its dossier
    assert (root / "failed" / "link.pdf").is_symlink()
    reasons = {n: (root / "failed" / f"{n}.reason.txt").read_text(encoding="utf-8") for n in
               ("bad_u001bname.pdf", "link.pdf", "noproc.pdf", "notes.txt", "pipe.pdf")}
    assert "input_bad_name" in reasons["bad_u001bname.pdf"] and "Tên tệp" in reasons["bad_u001bname.pdf"]
    assert "symbolic link" in reasons["link.pdf"] and "không phải là tệp thông thường" in reasons["link.pdf"]
    assert "FIFO" in reasons["pipe.pdf"]
    assert "no_procedure" in reasons["noproc.pdf"] and "Chưa rõ thủ tục" in reasons["noproc.pdf"]
    assert "input_unsupported" in reasons["notes.txt"]
    assert "processing/" not in reasons["notes.txt"]
    outcomes = {i.name: i.outcome for i in summary.items}
    assert outcomes.pop("a.pdf") == "processed" and set(outcomes.values()) == {"failed"}
    assert (root / "done" / "a~2.pdf").read_bytes() == marked_bytes
