"""A watched inbox for scanner stations: each dossier dropped into a folder is received once, then shelved.

Layout of the inbox ``DIR`` (one filesystem: every move is an atomic ``rename``)::

    DIR/<name>            a dossier: a PDF/image file or a folder of page images, as the station drops it
    DIR/<name>.done       optional marker: the dossier is complete (its first line may name the procedure)
    DIR/manifest.csv      optional ``file,procedure`` lines (as ``hoso reprocess``)
    DIR/processing/<id>/  a claim: the dossier being received, its lock and what is known of its outcome
    DIR/done/<name>       received dossiers, each with its receipt ``<name>.json``
    DIR/failed/<name>     refused ones, each with ``<name>.reason.txt`` (Vietnamese and English)

A dossier is taken once complete: its marker is newer than all its files, or nothing of it (size, mtime,
ctime of the file or of every file in the folder) changed for ``settle`` seconds. Taking it is a claim:
a fresh folder holding an ``flock``-ed lock file is published under ``processing/`` and the dossier is
renamed into it — of two watchers only one rename succeeds. The lock dies with its process, so a claim
whose lock can be taken belongs to a watcher that is gone: the next pass resumes it. Receiving is the
desk's ``ingest``, idempotent by the input's SHA-256, so a claim resumed after a kill at any point ends
with the dossier recorded once and shelved once. Shelving reserves ``<target>.json`` /
``<target>.reason.txt`` with ``O_EXCL`` (a taken name gets ``~2``, ``~3``…), notes the target in the
claim, then renames the dossier there without replacing anything.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipeline.core.errors import (
    ConfigurationError,
    HosoError,
    InputCorrupt,
    InputMissing,
    InputUnsupported,
    StorageFailed,
)
from pipeline.core.faults import checkpoint
from pipeline.core.inputs import (
    MAX_FOLDER_ENTRIES,
    MAX_NAME_BYTES,
    display_name,
    identify_input,
    name_problem,
    open_regular,
)
from pipeline.core.retry import RetryPolicy, is_transient
from pipeline.usecases.archive import MANIFEST, Retries, _read_manifest
from pipeline.usecases.desk import IntakeRequest
from pipeline.usecases.services import Services

log = logging.getLogger(__name__)

PROCESSING, DONE, FAILED = "processing", "done", "failed"
MARKER = ".done"
RECEIPT, REASON = ".json", ".reason.txt"
LOCK, CLAIM, OUTCOME, CITIZEN = ".lock", ".claim.json", ".outcome.json", ".citizen.pdf"
MAX_MARKER_BYTES = 4096
DRAFT_GRACE_S = 60.0
# Passes that try a dossier whose failure is not its own (storage or database down, another desk holds it),
# each after the desk's own retries (HOSO_RETRY_*) ran out.
MAX_PASSES = 5

Outcome = Literal["processed", "already_done", "failed"]


@dataclass(frozen=True)
class WatchOptions:
    procedure: str | None = None  # the station's default, when neither the marker nor manifest.csv names one
    settle: float = 5.0
    poll: float = 2.0
    actor: str = "watch"


@dataclass(frozen=True)
class WatchItem:
    """One dossier shelved: where it went and why."""

    name: str  # as shown (display_name)
    outcome: Outcome
    shelved: Path
    dossier_code: str | None = None
    status: str | None = None
    reason: str | None = None  # "<cause>: <English>"
    reason_vi: str | None = None
    seconds: float = 0.0


@dataclass
class WatchSummary:
    items: list[WatchItem] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # entries left in the inbox or in processing/, with why

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if i.outcome == "failed")


# --- the inbox ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbox:
    root: Path

    @classmethod
    def open(cls, root: Path) -> Inbox:
        """The inbox at ``root`` with its three folders (made when missing); ConfigurationError when
        ``root`` is not a folder or one of them is not a plain folder on the same filesystem."""
        try:
            top = os.lstat(root)
        except OSError as exc:
            raise InputMissing(f"inbox not found: {root}", f"Không tìm thấy thư mục nhận hồ sơ: {root}") from exc
        if not stat.S_ISDIR(top.st_mode):
            raise ConfigurationError(f"inbox {root} is not a folder", f"'{root}' không phải là thư mục.")
        for sub in (PROCESSING, DONE, FAILED):
            path = root / sub
            with suppress(FileExistsError):
                path.mkdir(mode=0o750)
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_dev != top.st_dev:
                raise ConfigurationError(
                    f"{path} must be a plain folder on the inbox's filesystem (not a link, file or mount)",
                    f"'{path}' phải là thư mục thường trên cùng ổ đĩa với thư mục nhận hồ sơ.",
                )
        return cls(root)

    @property
    def processing(self) -> Path:
        return self.root / PROCESSING

    def shelf(self, outcome: Outcome) -> Path:
        return self.root / (FAILED if outcome == "failed" else DONE)


# --- completeness ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """What one look at an entry saw, without opening anything: enough to tell whether it changed."""

    parts: tuple[tuple[str, int, int, int], ...]
    newest_ns: int  # the newest ctime (set by the kernel on every write, unlike mtime)


def look(path: Path) -> Look:
    """lstat of ``path`` and, for a folder, of its entries (never followed, never read)."""
    st = os.lstat(path)
    parts = [("", st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
    newest = st.st_ctime_ns
    if stat.S_ISDIR(st.st_mode):
        with suppress(OSError), os.scandir(path) as entries:  # unreadable: the desk says why, once taken
            for n, entry in enumerate(entries):
                if n > MAX_FOLDER_ENTRIES:  # refused as too large once taken; no need to list it all
                    break
                s = entry.stat(follow_symlinks=False)
                parts.append((entry.name, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
                newest = max(newest, s.st_ctime_ns)
    return Look(tuple(sorted(parts)), newest)


def _marker(inbox: Inbox, name: str) -> os.stat_result | None:
    with suppress(OSError):
        return os.lstat(inbox.root / (name + MARKER))
    return None


def _marker_procedure(path: Path) -> str | None:
    """The marker's first non-empty line (a procedure key or national code), if it is a small plain file."""
    try:
        with open_regular(path) as fh:
            text = fh.read(MAX_MARKER_BYTES).decode("utf-8-sig", errors="replace")
    except (HosoError, OSError):
        return None
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:200] or None


def _candidates(inbox: Inbox) -> list[str]:
    """The inbox's entries that may be dossiers, in name order."""
    names = []
    with os.scandir(inbox.root) as entries:
        for e in entries:
            n = e.name
            if n.startswith(".") or n in (PROCESSING, DONE, FAILED, MANIFEST) or n.endswith(MARKER):
                continue
            names.append(n)
    return sorted(names)


# --- claims ---------------------------------------------------------------------------------------------


@dataclass
class Claim:
    """A dossier taken by this process: its folder under ``processing/`` and the lock held on it."""

    folder: Path
    lock_fd: int
    info: dict[str, Any]

    @property
    def entry(self) -> Path | None:
        """The dossier inside the claim (its only name not starting with a dot), or None once shelved."""
        with os.scandir(self.folder) as entries:
            names = [e.name for e in entries if not e.name.startswith(".")]
        return self.folder / names[0] if names else None

    def outcome(self) -> dict[str, Any] | None:
        with suppress(FileNotFoundError):
            return dict(json.loads((self.folder / OUTCOME).read_text(encoding="utf-8")))
        return None

    def note(self, filename: str, data: dict[str, Any]) -> None:
        # ASCII JSON: a name whose bytes are not UTF-8 comes back from json.loads as it was.
        _write_atomic(self.folder / filename, json.dumps(data).encode())

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def finish(self) -> None:
        """Remove the claim (the dossier has left it); its lock file goes last, then the folder."""
        for n in (CITIZEN, OUTCOME, CLAIM, LOCK):
            with suppress(FileNotFoundError):
                (self.folder / n).unlink()
        with suppress(OSError):
            self.folder.rmdir()
        self.release()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (created if missing), or None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The claim may have been finished (and its lock file removed) between open and flock.
        if os.fstat(fd).st_ino != os.lstat(path).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return fd


def claim(inbox: Inbox, name: str, info: dict[str, Any]) -> Claim | None:
    """Take ``name`` out of the inbox into a new claim; None when another watcher took it first."""
    token = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
    draft = inbox.processing / f".draft-{token}"
    draft.mkdir(mode=0o750)
    fd = _try_lock(draft / LOCK)
    if fd is None:  # the draft was removed meanwhile (only when this process stalled for a minute)
        raise OSError(errno.EAGAIN, "the claim's draft went away", str(draft))
    info = info | {"pid": os.getpid(), "host": os.uname().nodename, "claimed_at": datetime.now(UTC).isoformat()}
    (draft / CLAIM).write_text(json.dumps(info), encoding="ascii")
    folder = inbox.processing / token
    os.rename(draft, folder)  # published only with its lock held: nobody can take it for abandoned
    taken = Claim(folder, fd, info)
    try:
        os.rename(inbox.root / name, folder / name)
    except FileNotFoundError:
        taken.finish()  # another watcher was first
        return None
    except OSError:
        taken.finish()
        raise
    checkpoint("watch", "claimed")
    marker_ctime = info.get("marker_ctime_ns")
    if marker_ctime is not None:
        _drop_marker(inbox, name, marker_ctime)
    return taken


def _drop_marker(inbox: Inbox, name: str, ctime_ns: int) -> None:
    """Remove the marker that announced this dossier (not a newer one for a new dossier of that name)."""
    st = _marker(inbox, name)
    if st is not None and st.st_ctime_ns == ctime_ns:
        with suppress(OSError):
            (inbox.root / (name + MARKER)).unlink()


def _age(path: Path) -> float:
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def abandoned(inbox: Inbox) -> Iterator[Claim]:
    """Claims whose watcher is gone (their lock can be taken), now held by this process; drafts of claims
    never published are removed."""
    with os.scandir(inbox.processing) as entries:
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    for n in names:
        folder = inbox.processing / n
        if n.startswith(".draft-") and _age(folder) < DRAFT_GRACE_S:
            continue  # its watcher may not have locked it yet
        fd = _try_lock(folder / LOCK)
        if fd is None:
            continue
        if n.startswith(".draft-"):
            Claim(folder, fd, {}).finish()  # a draft holds nothing of the inbox
            continue
        try:
            info = json.loads((folder / CLAIM).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        yield Claim(folder, fd, info)


# --- shelving -------------------------------------------------------------------------------------------


def _fit(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """A name that can be shown and stored: odd characters as ``_uNNNN``, at most ``limit`` UTF-8 bytes."""
    if name_problem(name) is not None:
        name = display_name(name, 10_000).replace("\\", "_").strip() or "_"
    while len(name.encode("utf-8")) > limit:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:-1]}.{ext}" if dot and stem and len(ext) <= 8 else name[:-1]
    return name


def _suffixed(name: str, n: int, is_folder: bool) -> str:
    if n == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    if is_folder or not dot or not stem or len(ext) > 8:
        return f"{name}~{n}"
    return f"{stem}~{n}.{ext}"


_libc: Any = None


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError rather than replacing anything at ``dst``."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # else: the filesystem cannot; check, then rename
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def _reserve(shelf: Path, base: str, beside: str, is_folder: bool) -> str:
    """A free target name on the shelf, owned by creating its beside file exclusively."""
    for n in range(1, 100_000):
        target = _suffixed(base, n, is_folder)
        try:
            os.close(os.open(shelf / (target + beside), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640))
        except FileExistsError:
            continue
        if not os.path.lexists(shelf / target):
            return target
        (shelf / (target + beside)).unlink()
    raise StorageFailed(f"no free name for {base} in {shelf}", "Không đặt được tên để lưu hồ sơ.")


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (or ``~2``… when another file has that name), never replacing a file."""
    for n in range(1, 1000):
        target = path.with_name(_suffixed(path.name, n, False))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileExistsError:
            with suppress(OSError):
                if target.read_bytes() == data:  # written by the run this one resumes
                    return target
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return target
    raise StorageFailed(f"no free name for {path}", "Không đặt được tên tệp.")


def _beside_bytes(outcome: dict[str, Any]) -> bytes:
    if outcome["outcome"] != "failed":
        return json.dumps(outcome["receipt"], ensure_ascii=False, indent=2).encode()
    return (
        f"Hồ sơ: {outcome['name']}\n"
        f"Lý do: {outcome['reason_vi']}\n"
        f"Reason: {outcome['reason']}\n"
        f"Lúc / at: {outcome['at']}\n"
    ).encode()


def shelve(inbox: Inbox, taken: Claim, outcome: dict[str, Any]) -> Path:
    """Move the claimed dossier to done/ or failed/ with its receipt or reason beside it; end the claim."""
    shelf = inbox.shelf(outcome["outcome"])
    beside = REASON if outcome["outcome"] == "failed" else RECEIPT
    entry = taken.entry
    target = outcome.get("target")
    if entry is not None and (target is None or os.path.lexists(shelf / target)):
        is_folder = stat.S_ISDIR(os.lstat(entry).st_mode)
        target = _reserve(shelf, _fit(entry.name, MAX_NAME_BYTES), beside, is_folder)
        outcome = outcome | {"target": target}
        taken.note(OUTCOME, outcome)
    if target is not None:
        fd = os.open(shelf / (target + beside), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_beside_bytes(outcome))
            fh.flush()
            os.fsync(fh.fileno())
        citizen = taken.folder / CITIZEN
        if citizen.exists() and outcome.get("citizen_copy"):
            _write_new(shelf / f"{target}.{outcome['citizen_copy']}", citizen.read_bytes())
        checkpoint("watch", "before_move")
        if entry is not None:
            _rename_noreplace(entry, shelf / target)
        checkpoint("watch", "moved")
    taken.finish()
    return shelf / (target or "")


# --- receiving ------------------------------------------------------------------------------------------


def _manifest(inbox: Inbox) -> dict[str, str]:
    """``manifest.csv`` as {file: procedure}; empty (and logged) when missing or unreadable."""
    try:
        return _read_manifest(inbox.root / MANIFEST)
    except (HosoError, OSError) as err:
        log.warning("%s unreadable: %s", MANIFEST, err)
        return {}


def _procedure(
    manifest: dict[str, str], name: str, marker: str | None, options: WatchOptions
) -> tuple[str | None, str]:
    """The dossier's procedure and where it came from: its marker, else manifest.csv, else ``--procedure``."""
    if marker:
        return marker, "marker"
    listed = manifest.get(name)
    if listed:
        return listed, MANIFEST
    return options.procedure, "--procedure"


def _failure(name: str, cause: str, english: str, vietnamese: str) -> dict[str, Any]:
    return {
        "outcome": "failed",
        "name": name,
        "reason": f"{cause}: {english}",
        "reason_vi": vietnamese,
        "at": datetime.now(UTC).isoformat(),
    }


def _refusal(entry: Path) -> HosoError | None:
    """Why the desk would refuse ``entry`` before reading it (as ``hoso reprocess`` finds out), or None."""
    try:
        source = identify_input(entry)
    except HosoError as err:
        return err
    if not source.is_folder and source.files[0].size and source.files[0].format is None:
        return InputUnsupported(f"{entry.name}: not a PDF, PNG, JPEG or TIFF file")
    return None


def _after(passes: int, err: BaseException) -> str:
    return f" (in {passes} passes of the watcher)" if passes > 1 and is_transient(err) else ""


def receive(taken: Claim, services: Services, options: WatchOptions) -> dict[str, Any] | None:
    """Run the desk on the claimed dossier; its outcome (noted in the claim), or None to try again later."""
    entry = taken.entry
    shown = display_name(entry.name if entry else str(taken.info.get("name", "?")))
    procedure = taken.info.get("procedure")
    if entry is None:
        return None
    if not procedure:
        refused = _refusal(entry)  # a refused input says so first: its name or kind matters more
        if refused is not None:
            english = str(refused).replace(display_name(str(taken.folder), 240) + "/", "")
            return _failure(shown, refused.reason, english, refused.message_vi)
        return _failure(
            shown,
            "no_procedure",
            "no procedure: no marker line, no manifest.csv line, no --procedure",
            "Chưa rõ thủ tục hành chính của hồ sơ (ghi mã thủ tục vào tệp .done, manifest.csv "
            "hoặc chạy với --procedure).",
        )
    citizen = taken.folder / CITIZEN
    retries, started_at = Retries(RetryPolicy.from_settings(services.settings)), datetime.now(UTC)
    try:
        result = retries.ingest(IntakeRequest(entry, procedure, actor=options.actor), services)
    except ConfigurationError:
        raise  # the watcher's fault, not the dossier's: stop, leave the claim to resume
    except Exception as err:
        cause = err.reason if isinstance(err, HosoError) else "internal"
        english = str(err).replace(display_name(str(taken.folder), 240) + "/", "")  # the inbox's name says more
        if not isinstance(err, HosoError):
            log.exception("%s failed unexpectedly", shown)  # a bug must not stop the watcher
            english = display_name(f"{type(err).__name__}: {err}", 2000)
        vietnamese = (
            err.message_vi if isinstance(err, HosoError) else "Lỗi hệ thống không mong đợi khi tiếp nhận hồ sơ."
        )
        passes = int(taken.info.get("passes", 0)) + 1
        if not is_transient(err) or passes >= MAX_PASSES:
            return _failure(shown, cause, retries.explain(english, err) + _after(passes, err), vietnamese)
        taken.info |= {
            "passes": passes,
            "retry_at": time.time() + min(600.0, 30.0 * 2 ** (passes - 1)),
            "last_error": f"{cause}: {english}",
        }
        taken.note(CLAIM, taken.info)
        log.warning("%s: %s: %s; trying again in a later pass (%d of %d)", shown, cause, english, passes, MAX_PASSES)
        return None
    receipt = result.receipt
    done_before = result.already_done and not retries.recorded_here(services, receipt.dossier_code, started_at)
    copy_name = None
    if result.form is not None and result.form.citizen_pdf is not None:
        # The lookup secret exists only now: keep the citizen's copy with the claim before anything else.
        _write_atomic(citizen, result.form.citizen_pdf)
        copy_name = f"mau-{result.form.artifact.removeprefix('form-')}-cong-dan.pdf"
    return {
        "outcome": "already_done" if done_before else "processed",
        "name": shown,
        "dossier_code": receipt.dossier_code,
        "status": receipt.status,
        "receipt": receipt.model_dump(mode="json"),
        "citizen_copy": copy_name,
        "at": datetime.now(UTC).isoformat(),
    }


def settle_claim(inbox: Inbox, taken: Claim, services: Services, options: WatchOptions) -> WatchItem | None:
    """Bring one claim to its shelf (resuming where a killed watcher stopped); None when it must wait."""
    start = time.perf_counter()
    retry_at = float(taken.info.get("retry_at", 0))
    if retry_at > time.time():
        taken.release()
        return None
    if "marker_ctime_ns" in taken.info and taken.info.get("name"):
        _drop_marker(inbox, taken.info["name"], taken.info["marker_ctime_ns"])
    outcome = taken.outcome()
    if outcome is None:
        if taken.entry is None:  # killed before the dossier moved in: it is still in the inbox
            taken.finish()
            return None
        try:
            outcome = receive(taken, services, options)
        except BaseException:
            taken.release()
            raise
        if outcome is None:
            taken.release()
            return None
        taken.note(OUTCOME, outcome)
        checkpoint("watch", "recorded")
    shelved = shelve(inbox, taken, outcome)
    reason = outcome.get("reason")
    return WatchItem(
        outcome["name"],
        outcome["outcome"],
        shelved,
        outcome.get("dossier_code"),
        outcome.get("status"),
        reason,
        outcome.get("reason_vi"),
        time.perf_counter() - start,
    )


# --- the watcher ----------------------------------------------------------------------------------------


@dataclass
class Watcher:
    """Passes over one inbox: resume abandoned claims, then take each complete dossier, one at a time."""

    inbox: Inbox
    services: Services
    options: WatchOptions = field(default_factory=WatchOptions)
    on_item: Callable[[WatchItem], None] = lambda item: None
    stop: threading.Event = field(default_factory=threading.Event)
    _seen: dict[str, Look] = field(default_factory=dict)
    _left: dict[str, str] = field(default_factory=dict)

    def pass_once(self, *, single_look: bool = False) -> WatchSummary:
        """One pass. ``single_look``: a dossier counts as complete when its newest change is ``settle``
        seconds old (no earlier look to compare with, as for ``--once``)."""
        summary = WatchSummary()
        for taken in abandoned(self.inbox):
            if self.stop.is_set():
                taken.release()
                continue
            self._settle(taken, display_name(str(taken.info.get("name") or taken.folder.name)), summary)
        seen: dict[str, Look] = {}
        manifest: dict[str, str] | None = None  # read once a pass, when a dossier needs it
        for name in _candidates(self.inbox):
            if self.stop.is_set():
                break
            shown = display_name(name)
            try:
                now_look = look(self.inbox.root / name)
            except OSError:
                continue  # gone meanwhile
            seen[name] = now_look
            marker = _marker(self.inbox, name)
            marked = marker is not None and marker.st_ctime_ns >= now_look.newest_ns
            quiet = time.time_ns() - now_look.newest_ns >= self.options.settle * 1e9
            steady = single_look or self._seen.get(name) == now_look
            if not (marked or (quiet and steady)):
                summary.left[shown] = "not complete yet"
                continue
            marker_line = _marker_procedure(self.inbox.root / (name + MARKER)) if marked else None
            if manifest is None and not marker_line:
                manifest = _manifest(self.inbox)
            procedure, source = _procedure(manifest or {}, name, marker_line, self.options)
            info: dict[str, Any] = {"name": name, "procedure": procedure, "procedure_from": source}
            if marked and marker is not None:
                info["marker_ctime_ns"] = marker.st_ctime_ns
            try:
                fresh = claim(self.inbox, name, info)
            except OSError as exc:  # cannot be moved (permissions, a mount point): leave it, say why once
                why = f"cannot be taken: {exc.strerror or exc}"
                if self._left.get(name) != why:
                    log.warning("%s left in the inbox: %s", shown, why)
                    self._left[name] = why
                summary.left[shown] = why
                continue
            if fresh is None:
                continue
            seen.pop(name, None)
            self._settle(fresh, shown, summary)
        self._seen = seen
        self._left = {n: why for n, why in self._left.items() if n in seen or (self.inbox.processing / n).exists()}
        return summary

    def _settle(self, taken: Claim, shown: str, summary: WatchSummary) -> None:
        """Bring a claim to its shelf; a failure that is not the dossier's leaves the claim for a later pass."""
        try:
            item = settle_claim(self.inbox, taken, self.services, self.options)
        except ConfigurationError:
            raise
        except (OSError, HosoError) as err:  # a full disk, the shelf unwritable: try again next pass
            taken.release()
            why = f"{type(err).__name__}: {err}"
            if self._left.get(taken.folder.name) != why:
                log.warning("%s stays in %s: %s", shown, taken.folder, why)
                self._left[taken.folder.name] = why
            summary.left[shown] = why
            return
        if item is not None:
            self._report(item, summary)
        elif taken.folder.exists():
            summary.left[shown] = str(taken.info.get("last_error", "waiting"))

    def _report(self, item: WatchItem, summary: WatchSummary) -> None:
        what = item.dossier_code or item.reason
        log.info("watch %s: %s %s (%.1f s) -> %s", item.name, item.outcome, what, item.seconds, item.shelved)
        summary.items.append(item)
        self.on_item(item)

    def run(self, *, once: bool = False) -> WatchSummary:
        """Pass after pass every ``poll`` seconds until ``stop`` is set (after the current dossier);
        ``once``: one pass over what is complete now."""
        total = WatchSummary()
        while True:
            summary = self.pass_once(single_look=once)
            total.items += summary.items
            total.left = summary.left
            if once or self.stop.wait(self.options.poll):
                return total


def watch(
    folder: Path,
    services: Services,
    options: WatchOptions | None = None,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    on_item: Callable[[WatchItem], None] | None = None,
) -> WatchSummary:
    """Watch ``folder`` as a scanner stations' inbox (see the module docstring)."""
    if not folder.is_dir():
        raise InputMissing(f"not a folder: {folder}", f"Không tìm thấy thư mục: {folder}")
    inbox = Inbox.open(folder)
    watcher = Watcher(
        inbox, services, options or WatchOptions(), on_item or (lambda item: None), stop or threading.Event()
    )
    try:
        return watcher.run(once=once)
    except OSError as exc:  # the inbox itself went away or became unreadable
        raise InputCorrupt(f"inbox {folder}: {exc}", f"Không đọc được thư mục nhận hồ sơ {folder}.") from exc
