"""Records that last: attempts that own what they write, locks once recorded, and the sweeper.

Writing a record takes three steps, and a crash between any two is repaired later:

1. :class:`AttemptWriter` enters each key in the registry's ledger (``pending``) before writing it, and
   writes it as a new version carrying the attempt's id — never destroying another attempt's bytes.
   A failure undoes exactly these versions (:meth:`AttemptWriter.rollback`), unless the registry
   already counts them as recorded.
2. One registry transaction records the artifacts (``final`` in the ledger, by version).
3. :func:`lock_recorded` puts every recorded, not yet locked version under the retention of its record
   class (``HOSO_RETENTION``). Only after step 2: an unrecorded attempt can still be rolled back.

:func:`sweep` resolves what crashed attempts left: a stale intake reservation (its lease expired or its
process gone) loses its objects and is discarded, other attempts' pending versions are removed, and
recorded versions missing their lock get it — each step in the audit log.

For the clerk (or any use case that records objects against an existing dossier)::

    writer = AttemptWriter.open(store, registry, "result", dossier_code=code, actor=user, lease_for=...)
    try:
        info = writer.put_bytes(keys.result_key(code), pdf, "application/pdf", {"verification-code": vc})
        registry.transition(code, ..., artifacts=[(keys.RESULT, info)])   # the ledger marks it final
    except BaseException:
        writer.rollback()
        raise
    writer.committed(retention)                                           # ends the attempt, locks
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.core.errors import HosoError, IntegrityError, StorageFailed
from pipeline.core.settings import RetentionRule
from storage import keys as object_keys
from storage.objects import Lock, ObjectInfo, ObjectLocked, ObjectStore, sha256_bytes
from storage.registry import ArtifactRecord, AttemptRecord, Registry, StoredVersionRecord, utcnow

log = logging.getLogger(__name__)

Retention = Mapping[Any, RetentionRule | None]  # record class -> rule (Settings.retention)


# --- who holds a lease --------------------------------------------------------------------------


def read_recorded(store: ObjectStore, artifact: ArtifactRecord) -> bytes:
    """The bytes of a recorded artifact: the version the registry recorded (never whatever was written to
    its key since), checked against the SHA-256 it recorded."""
    data = store.get_bytes(artifact.object_key, artifact.version_id)
    if sha256_bytes(data) != artifact.sha256:
        raise IntegrityError(f"{artifact.object_key} differs from the SHA-256 the registry recorded")
    return data


def new_attempt_id() -> str:
    """A fresh attempt id: time-ordered, unique."""
    return f"{time.time_ns():x}-{secrets.token_hex(6)}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@lru_cache(maxsize=1)
def _machine() -> str:
    """This kernel's boot and PID namespace: two processes with equal values can see each other's PIDs."""
    boot = _read("/proc/sys/kernel/random/boot_id") or "noboot"
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = "0"
    return f"{boot}/{pidns}"


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (tells a reused PID apart), None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def holder_id() -> str:
    """Who holds a lease: ``host/pid@boot/pidns/start`` — enough to tell later whether this process still runs."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}@{_machine()}/{_start_time(pid) or '?'}"


def holder_alive(holder: str) -> bool | None:
    """Whether the process named by :func:`holder_id` still runs: None when it ran elsewhere (ask the clock)."""
    try:
        _, rest = holder.split("/", 1)
        pid_s, where = rest.split("@", 1)
        boot, pidns, start = where.split("/")
        pid = int(pid_s)
    except ValueError:
        return None
    if f"{boot}/{pidns}" != _machine():
        return None
    now = _start_time(pid)
    if now is None:
        return False
    return start in ("?", now)


#: Attempts of this process whose rollback could not reach the registry (a database outage). Their leases
#: still look live — this process runs — so a retry of the same work would wait for itself until they expire.
_unreleased: set[str] = set()


def release_unfinished(registry: Registry) -> int:
    """End the leases of this process's attempts whose rollback could not reach the registry, so that a retry
    (or the sweeper) takes their work over at once; returns how many. Those still unreachable stay listed."""
    released = 0
    for attempt in sorted(_unreleased):
        try:
            registry.expire_attempt(attempt, "ended by its own process: its rollback could not reach the registry")
        except HosoError as err:
            log.warning("attempt %s still cannot be released: %s", attempt, err)
            break
        _unreleased.discard(attempt)
        released += 1
    return released


# --- writing as an attempt ----------------------------------------------------------------------


@dataclass
class AttemptWriter:
    """Writes one attempt's objects; each is in the ledger before it is written, and can be undone exactly.

    ``lease_for``: the lease is renewed as writing goes on (when a third of it has passed), and a
    writer whose attempt was taken over stops at its next write (InProgressElsewhere).
    """

    store: ObjectStore
    registry: Registry
    attempt: AttemptRecord
    lease_for: timedelta = timedelta(minutes=2)
    written: list[ObjectInfo] = field(default_factory=list)
    _intended: set[str] = field(default_factory=set)
    _renewed: float = field(default_factory=time.monotonic)

    @classmethod
    def open(
        cls,
        store: ObjectStore,
        registry: Registry,
        purpose: str,
        *,
        actor: str,
        dossier_code: str | None = None,
        lease_for: timedelta = timedelta(minutes=2),
    ) -> AttemptWriter:
        """Start an attempt (not an intake: those come from :meth:`Registry.claim_intake`)."""
        record = registry.open_attempt(
            purpose, attempt=new_attempt_id(), holder=holder_id(), actor=actor, lease_for=lease_for,
            dossier_code=dossier_code,
        )
        return cls(store, registry, record, lease_for)

    @property
    def id(self) -> str:
        return self.attempt.id

    def intend(self, items: Iterable[tuple[str, str | None]]) -> None:
        """Enter keys (with their artifact names) in the ledger before writing them, in one transaction."""
        todo = [(key, name) for key, name in items if key not in self._intended]
        if todo:
            self.registry.intend(self.id, todo, dossier_code=self.attempt.dossier_code)
            self._intended.update(key for key, _ in todo)
            self._renewed = time.monotonic()

    def _before_write(self, key: str, artifact: str | None) -> None:
        if key not in self._intended:
            self.intend([(key, artifact)])
        elif time.monotonic() - self._renewed > self.lease_for.total_seconds() / 3:
            self.registry.renew_attempt(self.id, self.lease_for)
            self._renewed = time.monotonic()

    def put_bytes(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None,
        *, artifact: str | None = None,
    ) -> ObjectInfo:
        self._before_write(key, artifact)
        info = self.store.put_bytes(key, data, content_type, metadata, attempt=self.id)
        self.written.append(info)
        return info

    def put_file(
        self, key: str, path: Path, content_type: str, metadata: dict[str, str] | None = None,
        *, artifact: str | None = None,
    ) -> ObjectInfo:
        self._before_write(key, artifact)
        info = self.store.put_file(key, path, content_type, metadata, attempt=self.id)
        self.written.append(info)
        return info

    def rollback(self, *, discard: str | None = None, reason: str = "failed") -> bool:
        """Remove exactly the versions this attempt wrote and end it; True if all are gone.

        Versions the registry counts as recorded (a commit whose answer was lost) are kept; if the
        registry cannot be asked, nothing is removed. ``discard``: the reservation to delete once
        everything is gone. When something stays, the attempt's lease ends now so that the next run
        or the sweeper takes over at once.
        """
        try:
            recorded = {(e.key, e.version_id) for e in self.registry.ledger(attempt=self.id, statuses=["final"])}
        except HosoError as err:
            log.warning("rollback of attempt %s: registry unreachable (%s); left for the sweeper", self.id, err)
            _unreleased.add(self.id)
            return False
        removed, kept = [], []
        for info in reversed(self.written):
            if (info.key, info.version_id) in recorded:
                continue
            try:
                remove_own_version(self.store, info, self.id)
                removed.append(info.key)
            except Exception as err:  # the original error matters more; the sweeper finishes this
                log.warning("rollback of attempt %s: could not remove %s: %s", self.id, info.key, err)
                kept.append(info.key)
        try:
            pending = self.registry.ledger(attempt=self.id, statuses=["pending"])
            self.registry.ledger_removed(e.id for e in pending if e.key not in kept)
            if kept:
                note = f"{reason}; {len(kept)} object(s) left for the sweeper"
                self.registry.expire_attempt(self.id, note)
                self.registry.audit("attempt_failed", actor=self.attempt.actor, dossier_code=self.attempt.dossier_code,
                                    attempt=self.id, note=note)
            elif discard is not None:
                self.registry.discard(discard, attempt=self.id, actor=self.attempt.actor, note=reason)
            else:
                self.registry.end_attempt(self.id, "rolled_back", note=reason)
        except HosoError as err:
            log.warning("rollback of attempt %s: %s", self.id, err)
            _unreleased.add(self.id)
            return False
        return not kept

    def committed(self, retention: Retention | None = None) -> list[StoredVersionRecord]:
        """After the registry recorded this attempt's objects: end it and lock what it recorded."""
        self.registry.end_attempt(self.id, "committed")
        if retention is None:
            return []
        return lock_recorded(self.store, self.registry, retention, dossier_code=self.attempt.dossier_code)


def remove_own_version(store: ObjectStore, info: ObjectInfo, attempt: str) -> None:
    """Destroy the version ``info`` names if ``attempt`` wrote it (on an unversioned store: if the current
    object is still that attempt's bytes)."""
    if info.version_id is not None:
        store.delete_version(info.key, info.version_id)
        return
    current = store.stat(info.key)
    if current is not None and current.attempt == attempt and current.sha256 == info.sha256:
        store.delete_version(info.key, None)


def remove_attempt_objects(store: ObjectStore, key: str, attempt: str) -> int:
    """Destroy every unlocked version of ``key`` that ``attempt`` wrote; returns how many."""
    count = 0
    for version in [v for v in store.versions(key) if v.key == key and not v.is_delete_marker]:
        info = store.stat(key, version.version_id)
        if info is None or info.attempt != attempt:
            continue
        try:
            store.delete_version(key, version.version_id)
            count += 1
        except ObjectLocked:
            log.warning("version %s of %s by attempt %s is locked; kept", version.version_id, key, attempt)
    return count


# --- locks --------------------------------------------------------------------------------------


def lock_for(rule: RetentionRule, start: datetime) -> Lock:
    return Lock(mode=rule.mode, until=rule.until(start))


def lock_recorded(
    store: ObjectStore, registry: Registry, retention: Retention, *, dossier_code: str | None = None,
    now: datetime | None = None,
) -> list[StoredVersionRecord]:
    """Lock every recorded version (of one dossier, or all) that its record class retains and is not locked yet.

    Retention runs from when the version was recorded. A store that cannot lock does nothing here (fsck
    says so). Failures are logged and left for the next run, the sweeper or fsck.
    """
    if not store.can_lock:
        return []
    done = []
    for entry in registry.ledger(dossier_code=dossier_code, statuses=["final"], unlocked=True):
        rule = retention.get(entry.record_class or "")
        if rule is None:
            continue
        try:
            effective = store.lock(entry.key, entry.version_id, lock_for(rule, entry.created_at))
            version = entry.version_id
            if version is None:
                info = store.stat(entry.key)
                version = info.version_id if info is not None else None
            registry.ledger_locked(entry.id, mode=effective.mode, until=effective.until, version_id=version)
            done.append(entry)
        except (StorageFailed, ValueError) as err:
            log.warning("could not lock %s version %s: %s", entry.key, entry.version_id, err)
    return done


# --- the sweeper --------------------------------------------------------------------------------


class SweepItem(dict[str, Any]):
    """One thing the sweeper did (JSON-ready): ``action``, ``dossier_code``, ``attempt``, ``detail``."""


@dataclass
class SweepReport:
    items: list[SweepItem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, action: str, detail: str, *, dossier_code: str | None = None, attempt: str | None = None) -> None:
        self.items.append(SweepItem(action=action, dossier_code=dossier_code, attempt=attempt, detail=detail))


def sweep(
    store: ObjectStore,
    registry: Registry,
    retention: Retention,
    *,
    actor: str = "sweeper",
    lease_for: timedelta = timedelta(minutes=2),
    now: datetime | None = None,
) -> SweepReport:
    """Resolve what crashed or failed attempts left behind (see the module doc); every step is audited."""
    report = SweepReport()
    now = now or utcnow()

    # 1. Intake reservations nobody holds any more: their objects go, then the reservation.
    for code in sorted(_receiving(registry)):
        _sweep_reservation(store, registry, code, actor, lease_for, report)

    # 2. Attempts whose lease ran out (fenced first: swept, so nothing they wrote can be recorded any
    #    more), and ended ones, with versions still pending: remove those versions.
    for attempt in registry.list_attempts(unfinished=True):
        if attempt.state == "open":
            if not registry.end_if_stale(attempt.id, actor=actor, holder_alive=holder_alive):
                continue
            report.add("attempt_swept", f"{attempt.purpose} attempt by {attempt.holder}",
                       dossier_code=attempt.dossier_code, attempt=attempt.id)
        pending = registry.ledger(attempt=attempt.id, statuses=["pending"])
        removed_ids = []
        for entry in pending:
            try:
                n = remove_attempt_objects(store, entry.key, attempt.id)
                removed_ids.append(entry.id)
                if n:
                    report.add("object_removed", f"{entry.key}: {n} version(s) of attempt {attempt.id}",
                               dossier_code=entry.dossier_code, attempt=attempt.id)
                    registry.audit("object_removed", actor=actor, dossier_code=entry.dossier_code,
                                   attempt=attempt.id, note=f"{entry.key}: {n} unrecorded version(s)")
            except (StorageFailed, ValueError) as err:
                report.errors.append(f"{entry.key} (attempt {attempt.id}): {err}")
        registry.ledger_removed(removed_ids)

    # 3. Recorded versions still without their lock (a crash between recording and locking).
    for entry in lock_recorded(store, registry, retention):
        report.add("locked", f"{entry.key} ({entry.record_class})", dossier_code=entry.dossier_code)
        registry.audit("version_locked", actor=actor, dossier_code=entry.dossier_code, note=entry.key)
    return report


def _receiving(registry: Registry) -> set[str]:
    from pipeline.core.models import DossierState

    return {d.code for d in registry.list_dossiers(state=DossierState.receiving)}


def _sweep_reservation(
    store: ObjectStore, registry: Registry, code: str, actor: str, lease_for: timedelta, report: SweepReport
) -> None:
    mine = registry.take_over(
        code, attempt=new_attempt_id(), holder=holder_id(), actor=actor, lease_for=lease_for,
        holder_alive=holder_alive,
    )
    if mine is None:
        return  # live, past intake, or gone
    try:
        removed = clear_reservation_objects(store, registry, code, keep_attempt=mine.id)
        registry.discard(code, attempt=mine.id, actor=actor,
                         note=f"stale reservation swept; {removed} unrecorded object version(s) removed")
        report.add("reservation_discarded", f"{removed} object version(s) removed", dossier_code=code,
                   attempt=mine.id)
    except (StorageFailed, ValueError) as err:
        registry.expire_attempt(mine.id, f"sweep failed: {err}")
        report.errors.append(f"reservation {code}: {err}")


def clear_reservation_objects(store: ObjectStore, registry: Registry, code: str, *, keep_attempt: str) -> int:
    """Remove every unlocked version under a ``receiving`` dossier's prefix not written by ``keep_attempt``.

    Nothing under a reservation is recorded yet, so these are earlier attempts' leftovers (and delete
    markers). Their ledger entries become ``removed``. Returns how many versions went.
    """
    removed = 0
    for version in list(store.versions(object_keys.dossier_prefix(code))):
        if not version.is_delete_marker:
            info = store.stat(version.key, version.version_id)
            if info is None or info.attempt == keep_attempt or (info.lock is not None and info.lock.active()):
                continue
        with contextlib.suppress(ObjectLocked):
            store.delete_version(version.key, version.version_id)
            removed += 1
    stale = [e.id for e in registry.ledger(dossier_code=code, statuses=["pending"]) if e.attempt != keep_attempt]
    registry.ledger_removed(stale)
    return removed
