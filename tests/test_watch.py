"""The watched inbox (``hoso watch``): taken once complete, received once, shelved once, whatever stops it.

Fast tests call the use case in this process with the scripted OCR engine (one Services for the module);
the slow ones run real ``hoso watch`` processes, kill them with SIGKILL and restart them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest
from support.cli import SAMPLE, SCRIPTED_ENGINE, Hoso

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
            (image,) = page.get_images().values()
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
    with (root / "huge.pdf").open("wb") as fh:  # sparse: 5 GiB that take no room, refused before reading
        fh.truncate(5 << 30)
    dossier(root / "noproc.pdf", "once-noproc")  # no marker, no manifest line, no --procedure
    (root / "done").mkdir()
    (root / "done" / "a.pdf").write_bytes(b"an earlier a.pdf, kept")  # a name already on the shelf

    summary = watcher(root, services, settle=0).run(once=True)

    assert shelf(root) == {
        "done": ["a.pdf", "a~2.pdf", "a~2.pdf.json", "a~2.pdf.mau-01-1-cong-dan.pdf"],
        "failed": sorted(
            f"{n}{s}"
            for n in ("bad_u001bname.pdf", "huge.pdf", "link.pdf", "noproc.pdf", "notes.txt", "pipe.pdf")
            for s in ("", ".reason.txt")
        ),
        "processing": [],
    }
    assert (root / "done" / "a.pdf").read_bytes() == b"an earlier a.pdf, kept"
    receipt = json.loads((root / "done" / "a~2.pdf.json").read_text(encoding="utf-8"))
    assert receipt["procedure"] == PROCEDURE and receipt["status"] == "accepted"
    assert (
        services.registry.get(receipt["dossier_code"]).input_sha256
        == hashlib.sha256((root / "done" / "a~2.pdf").read_bytes()).hexdigest()
    )
    assert sorted(os.listdir(root)) == ["done", "failed", "processing"]  # the marker went with its dossier
    assert (root / "failed" / "link.pdf").is_symlink()
    reasons = {
        n: (root / "failed" / f"{n}.reason.txt").read_text(encoding="utf-8")
        for n in ("bad_u001bname.pdf", "huge.pdf", "link.pdf", "noproc.pdf", "notes.txt", "pipe.pdf")
    }
    assert "input_bad_name" in reasons["bad_u001bname.pdf"] and "Tên tệp" in reasons["bad_u001bname.pdf"]
    assert "symbolic link" in reasons["link.pdf"] and "không phải là tệp thông thường" in reasons["link.pdf"]
    assert "FIFO" in reasons["pipe.pdf"]
    assert "input_too_large" in reasons["huge.pdf"] and (root / "failed" / "huge.pdf").stat().st_size == 5 << 30
    assert "no_procedure" in reasons["noproc.pdf"] and "Chưa rõ thủ tục" in reasons["noproc.pdf"]
    assert "input_unsupported" in reasons["notes.txt"]
    assert "processing/" not in reasons["notes.txt"]
    outcomes = {i.name: i.outcome for i in summary.items}
    assert outcomes.pop("a.pdf") == "processed" and set(outcomes.values()) == {"failed"}
    assert (root / "done" / "a~2.pdf").read_bytes() == marked_bytes


def test_a_dossier_written_slowly_is_taken_only_once_nothing_of_it_changed_for_settle_seconds(
    tmp_path: Path, services: Services
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    w = watcher(root, services, settle=0.4, procedure=PROCEDURE)
    scan = root / "scan.bin"
    pages = root / "pages"
    pages.mkdir()
    scan.write_bytes(b"part one ")
    (pages / "p1.bin").write_bytes(b"page one")
    time.sleep(0.5)
    assert w.pass_once().items == []  # quiet for long enough, but first seen now: no earlier look to compare
    with scan.open("ab") as fh:
        fh.write(b"part two")
    (pages / "p2.bin").write_bytes(b"page two")
    assert w.pass_once().items == [] and w.pass_once().items == []  # changed, then not quiet for 0.4 s yet
    assert shelf(root)["failed"] == [] and scan.exists()
    time.sleep(0.5)
    taken = w.pass_once()
    assert sorted(i.name for i in taken.items) == ["pages", "scan.bin"]  # (neither is a scan: both refused)
    assert (root / "failed" / "scan.bin").read_bytes() == b"part one part two"
    assert sorted(os.listdir(root / "failed" / "pages")) == ["p1.bin", "p2.bin"]


def test_a_marker_takes_a_dossier_at_once_unless_it_is_older_than_the_dossier(
    tmp_path: Path, services: Services
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    (root / ("late.bin" + MARKER)).write_text("")  # left from an earlier drop of that name
    time.sleep(0.02)
    (root / "late.bin").write_bytes(b"written after its marker")
    (root / "marked.bin").write_bytes(b"complete")
    (root / ("marked.bin" + MARKER)).write_text("")
    w = watcher(root, services, settle=60, procedure=PROCEDURE)
    assert [i.name for i in w.pass_once().items] == ["marked.bin"]
    assert (root / "late.bin").exists() and not (root / ("marked.bin" + MARKER)).exists()
    (root / ("late.bin" + MARKER)).touch()  # the station marks it again, now that it is complete
    assert [i.name for i in w.pass_once().items] == ["late.bin"]


def test_two_watchers_on_one_inbox_take_each_dossier_once(tmp_path: Path, services: Services) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    names = [f"n{i:02d}.bin" for i in range(12)]
    for n in names:
        (root / n).write_bytes(n.encode())
    watchers = [watcher(root, services, settle=0, procedure=PROCEDURE) for _ in range(2)]
    taken: list[list[str]] = [[], []]

    def run(k: int) -> None:
        taken[k] = [i.name for i in watchers[k].run(once=True).items]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken[0] + taken[1]) == names  # each once, by one of them
    assert shelf(root)["failed"] == sorted(names + [n + ".reason.txt" for n in names])


def test_a_claim_held_by_a_live_watcher_is_left_alone(tmp_path: Path, services: Services) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "held.bin").write_bytes(b"x")
    inbox = Inbox.open(root)
    held = claim(inbox, "held.bin", {"name": "held.bin", "procedure": PROCEDURE})
    assert held is not None and claim(inbox, "held.bin", {}) is None  # already taken
    assert list(abandoned(inbox)) == []  # its lock is held
    assert watcher(root, services, settle=0).run(once=True).items == []
    assert shelf(root)["processing"] == [held.folder.name] and (held.folder / "held.bin").exists()
    held.release()  # as if its watcher died
    (item,) = watcher(root, services, settle=0).run(once=True).items
    assert item.name == "held.bin" and item.outcome == "failed" and shelf(root)["processing"] == []


class Crash(Exception):
    """Stands for SIGKILL at a checkpoint of the watcher (the lock files are closed as death would)."""


def _die_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    import pipeline.usecases.watch as watch_module

    def checkpoint(stage: str, detail: str | None = None) -> None:
        if f"{stage}:{detail}" == point:
            raise Crash(point)

    monkeypatch.setattr(watch_module, "checkpoint", checkpoint)


def _close_locks(root: Path) -> None:
    for fd in os.listdir("/proc/self/fd"):
        with_target = os.path.realpath(f"/proc/self/fd/{fd}")
        if with_target.startswith(str(root)) and with_target.endswith("/.lock"):
            os.close(int(fd))


@pytest.mark.parametrize(
    "point",
    [
        "watch:claimed",
        pytest.param("watch:recorded", marks=pytest.mark.slow),
        "watch:before_move",
        pytest.param("watch:moved", marks=pytest.mark.slow),
    ],
)
def test_a_watcher_killed_at_any_point_is_resumed_by_the_next_and_the_dossier_ends_on_a_shelf_once(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    data = dossier(root / "scan.pdf", f"crash-{point}").read_bytes()
    _die_at(monkeypatch, point)
    with pytest.raises(Crash):
        watcher(root, services, settle=0, procedure=PROCEDURE).run(once=True)
    _close_locks(root)
    monkeypatch.undo()
    summary = watcher(root, services, settle=0, procedure=PROCEDURE).run(once=True)
    found = shelf(root)
    assert found["processing"] == [] and found["failed"] == []
    assert found["done"] == ["scan.pdf", "scan.pdf.json", "scan.pdf.mau-01-1-cong-dan.pdf"]
    assert (root / "done" / "scan.pdf").read_bytes() == data
    receipt = json.loads((root / "done" / "scan.pdf.json").read_text(encoding="utf-8"))
    assert count_by_sha(services, data) == 1 and services.registry.get(receipt["dossier_code"])
    assert len(summary.items) == 1  # reported by the watcher that shelved it (the killed one never did)


@pytest.mark.slow  # the fast lane keeps two resumed claims above; this one is the SIGKILL tests' case too
def test_a_watcher_killed_after_the_desk_recorded_the_dossier_shelves_it_as_already_received(
    tmp_path: Path, services: Services
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    data = dossier(root / "scan.pdf", "killed-after-desk").read_bytes()
    inbox = Inbox.open(root)
    held = claim(inbox, "scan.pdf", {"name": "scan.pdf", "procedure": PROCEDURE})
    assert held is not None
    first = ingest(IntakeRequest(held.folder / "scan.pdf", PROCEDURE), services)  # then the watcher died
    held.release()
    (item,) = watcher(root, services, settle=0).run(once=True).items
    assert item.outcome == "already_done" and item.dossier_code == first.receipt.dossier_code
    assert count_by_sha(services, data) == 1
    assert shelf(root)["done"] == ["scan.pdf", "scan.pdf.json"]


# --- real ``hoso watch`` processes ------------------------------------------------------------------------


def _wait_for(what: str, check: object, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _in_ocr(root: Path) -> bool:
    """A claim holds its dossier and has no outcome yet: the desk is at work on it."""
    processing = root / "processing"
    for claim_dir in processing.iterdir() if processing.exists() else []:
        names = os.listdir(claim_dir) if claim_dir.is_dir() else []
        if any(not n.startswith(".") for n in names) and ".outcome.json" not in names:
            return True
    return False


def _assert_each_once(hoso: Hoso, root: Path, inputs: dict[str, bytes]) -> None:
    found = shelf(root)
    assert found["processing"] == [] and found["failed"] == [], found
    dossiers_shelved = [n for n in found["done"] if not n.endswith((".json", "-cong-dan.pdf"))]
    assert dossiers_shelved == sorted(inputs)  # none twice (no "~2")
    assert sorted(n for n in found["done"] if n.endswith(".json")) == sorted(f"{n}.json" for n in inputs)
    registry = hoso.registry
    try:
        dossiers = registry.list_dossiers()
    finally:
        registry.close()
    shas = sorted(d.input_sha256 for d in dossiers)
    assert shas == sorted(hashlib.sha256(b).hexdigest() for b in inputs.values())  # each recorded once
    for name, data in inputs.items():
        assert (root / "done" / name).read_bytes() == data
        receipt = json.loads((root / "done" / f"{name}.json").read_text(encoding="utf-8"))
        assert receipt["dossier_code"] in {d.code for d in dossiers}


@pytest.mark.slow
def test_a_watcher_killed_mid_dossier_and_restarted_receives_every_dossier_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    inputs = {f"scan-{k}.pdf": dossier(root / f"scan-{k}.pdf", f"sigkill-{k}").read_bytes() for k in range(3)}
    hoso = Hoso(tmp_path / "var", {"HOSO_TEST_OCR_DELAY": "0.5"})
    args = ("watch", str(root), "--procedure", PROCEDURE, "--settle", "0", "--poll", "0.2")
    first = hoso.popen(*args)
    try:
        _wait_for("the first dossier in OCR", lambda: _in_ocr(root))
        time.sleep(1.0)
        os.killpg(first.pid, signal.SIGKILL)  # a power cut: the watcher and its workers
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert any((root / "processing").iterdir())  # it died holding a claim
    hoso.env.pop("HOSO_TEST_OCR_DELAY")
    second = hoso.popen(*args)
    try:
        _wait_for(
            "every dossier shelved",
            lambda: (
                len(list((root / "done").glob("*.json"))) == len(inputs) and not any((root / "processing").iterdir())
            ),
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0  # a clean stop
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    _assert_each_once(hoso, root, inputs)
    fsck = hoso("fsck", "--no-signatures")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr  # nothing half-written left in the store


@pytest.mark.slow
@pytest.mark.parametrize("point", ["record:after_objects", "watch:recorded", "watch:before_move"])
def test_hoso_watch_once_killed_at_a_checkpoint_then_run_again_shelves_once(tmp_path: Path, point: str) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    inputs = {"a.pdf": dossier(root / "a.pdf", f"{point}-a").read_bytes()}
    hoso = Hoso(tmp_path / "var", {"HOSO_TEST_DIE_AT": point})
    killed = hoso("watch", str(root), "--once", "--settle", "0", "--procedure", PROCEDURE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    hoso.env.pop("HOSO_TEST_DIE_AT")
    again = hoso("watch", str(root), "--once", "--settle", "0", "--procedure", PROCEDURE)
    assert again.returncode == 0, again.stderr
    assert "a.pdf" in again.stdout and "đã tiếp nhận" in again.stdout
    assert "watch a.pdf: " in again.stderr  # the English log line
    _assert_each_once(hoso, root, inputs)


@pytest.mark.slow
def test_files_written_slowly_are_not_taken_before_they_are_complete(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    hoso = Hoso(tmp_path / "var")
    watcher_process = hoso.popen("watch", str(root), "--procedure", PROCEDURE, "--settle", "2.5", "--poll", "0.2")
    try:
        _wait_for("the watcher to open its inbox", lambda: (root / "processing").is_dir())
        time.sleep(1.0)  # and to look at it at least once
        data = SAMPLE.read_bytes() + b"\n% slow\n"
        step = len(data) // 5 + 1
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        page_files = sorted(page_folder(tmp_path / "staging", "slow").iterdir())
        (root / "pages").mkdir()
        with (root / "scan.pdf").open("wb") as fh:
            for k in range(max(len(pieces), len(page_files))):
                if k < len(pieces):
                    fh.write(pieces[k])
                    fh.flush()
                if k < len(page_files):
                    (root / "pages" / page_files[k].name).write_bytes(page_files[k].read_bytes())
                time.sleep(0.5)  # each written to 0.5 s ago, less than --settle: neither may be taken
                if k < len(pieces):
                    assert (root / "scan.pdf").exists(), f"scan.pdf taken after piece {k + 1} of {len(pieces)}"
                if k < len(page_files):
                    assert (root / "pages").exists(), f"pages/ taken after page {k + 1} of {len(page_files)}"
        _wait_for("both shelved", lambda: {"scan.pdf.json", "pages.json"} <= set(os.listdir(root / "done")))
        os.kill(watcher_process.pid, signal.SIGINT)
        assert watcher_process.wait(60) == 0
    finally:
        if watcher_process.poll() is None:
            os.killpg(watcher_process.pid, signal.SIGKILL)
    assert (root / "done" / "scan.pdf").read_bytes() == data
    assert sorted(os.listdir(root / "done" / "pages")) == [f.name for f in page_files]
    receipt = json.loads((root / "done" / "pages.json").read_text(encoding="utf-8"))
    assert len(receipt["pages"]) == len(page_files)


def test_shelving_never_replaces_what_is_there(tmp_path: Path) -> None:
    from pipeline.usecases.watch import _rename_noreplace

    for kind in ("file", "folder"):
        src, dst = tmp_path / f"{kind}-src", tmp_path / f"{kind}-dst"
        if kind == "file":
            src.write_bytes(b"new")
            dst.write_bytes(b"old")
        else:
            src.mkdir()
            dst.mkdir()  # an empty folder: a plain rename would replace it
        with pytest.raises(FileExistsError):
            _rename_noreplace(src, dst)
        assert src.exists() and dst.exists()
        assert kind == "folder" or dst.read_bytes() == b"old"
    _rename_noreplace(tmp_path / "file-src", tmp_path / "free")
    assert (tmp_path / "free").read_bytes() == b"new" and not (tmp_path / "file-src").exists()


@pytest.mark.slow
def test_two_watcher_processes_on_one_inbox_receive_each_dossier_once(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    hoso = Hoso(tmp_path / "var", {"HOSO_TEST_OCR_DELAY": "0.2"})
    args = ("watch", str(root), "--procedure", PROCEDURE, "--settle", "0.5", "--poll", "0.1")
    watchers = [hoso.popen(*args), hoso.popen(*args)]
    try:
        _wait_for("both watchers up", lambda: (root / "processing").is_dir())
        time.sleep(3)  # the second may still be starting; it joins when it can
        inputs = {f"d{k}.pdf": dossier(root / f"d{k}.pdf", f"pair-{k}").read_bytes() for k in range(4)}
        _wait_for("every dossier shelved", lambda: len(list((root / "done").glob("*.json"))) == len(inputs))
        for w in watchers:
            w.send_signal(signal.SIGTERM)
        assert [w.wait(60) for w in watchers] == [0, 0]
    finally:
        for w in watchers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    _assert_each_once(hoso, root, inputs)


@pytest.mark.slow
def test_sigterm_stops_the_watcher_after_the_current_dossier(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    for k in range(2):
        dossier(root / f"t{k}.pdf", f"term-{k}")
    hoso = Hoso(tmp_path / "var", {"HOSO_TEST_OCR_DELAY": "0.5"})
    process = hoso.popen("watch", str(root), "--procedure", PROCEDURE, "--settle", "0", "--poll", "0.2")
    try:
        _wait_for("the first dossier in OCR", lambda: _in_ocr(root))
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    found = shelf(root)
    assert found["processing"] == [] and found["failed"] == []
    assert [n for n in found["done"] if n.endswith(".json")] == ["t0.pdf.json"]  # finished, not abandoned
    assert (root / "t1.pdf").exists()  # not started


def test_a_transient_failure_leaves_the_dossier_claimed_for_a_later_pass_then_gives_up(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.usecases.watch as watch_module
    from pipeline.core.errors import StorageFailed

    def storage_down(self: object, request: object, services: object) -> None:
        raise StorageFailed("S3 unreachable", transient=True)

    monkeypatch.setattr(watch_module.Retries, "ingest", storage_down)
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "scan.pdf").write_bytes(b"%PDF-1.7\n")
    w = watcher(root, services, settle=0, procedure=PROCEDURE)
    for n in range(1, watch_module.MAX_PASSES):
        summary = w.run(once=True)
        assert summary.items == [] and "scan.pdf" in summary.left
        (claim_dir,) = (root / "processing").iterdir()
        info = json.loads((claim_dir / ".claim.json").read_text())
        assert info["passes"] == n and info["retry_at"] > time.time() and "S3 unreachable" in info["last_error"]
        assert w.run(once=True).items == []  # not before its time
        info["retry_at"] = 0  # its time has come
        (claim_dir / ".claim.json").write_text(json.dumps(info))
    (item,) = w.run(once=True).items
    assert item.outcome == "failed" and "storage_failed" in (item.reason or "")
    assert f"in {watch_module.MAX_PASSES} passes" in (item.reason or "") and shelf(root)["processing"] == []
