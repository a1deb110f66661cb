"""``hoso fsck``: does what the registry says agree with what is stored, byte for byte and signature by signature?

Checked, in order:

1. Unfinished work: ``receiving`` reservations and attempts whose lease ran out (or whose process is
   gone), and ended attempts that left unrecorded versions behind.
2. Every artifact of every dossier: its version is in the store, its SHA-256 and size are the
   registry's (and the bytes read back match), it is the current version of its key, the ledger has it,
   and a signed one (digitised copy, e-result, forms; not the evidence a later record carries forward:
   versions a refresh kept, the approver-signed copy under the seal) verifies.
3. Every recorded version in the ledger is still stored and locked as its record class says.
4. Every version stored under ``dossiers/`` is recorded, or the pending write of a live attempt;
   anything else is an orphan.
5. The local store, the SQLite registry, logs and keys are readable by their owner alone.

``repair`` resolves what can be resolved without ever destroying a recorded version: it sweeps stale
reservations and attempts (storage/records.py), locks what should be locked, names the version of
artifacts recorded before versions existed, removes delete markers and unrecorded, unlocked versions
(only once they are older than :data:`ORPHAN_GRACE`, or their attempt has ended), and tightens file
modes. A missing object, a wrong SHA-256 or a failing signature is reported, never "repaired".
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pipeline.core.errors import HosoError, IntegrityError
from pipeline.core.models import DossierState
from pipeline.usecases.services import Services
from signing.verify import verify_pdf
from storage import keys
from storage.objects import LocalObjectStore, ObjectInfo, ObjectLocked, ObjectStore, ObjectVersion, sha256_bytes
from storage.records import Retention, holder_alive, lock_for, lock_recorded, sweep
from storage.registry import ArtifactRecord, AttemptRecord, DossierRecord, Registry, StoredVersionRecord, utcnow

log = logging.getLogger(__name__)

#: An unrecorded version without a known, ended attempt is left alone this long (a writer may still record it).
ORPHAN_GRACE = timedelta(hours=1)
SIGNED_CLASSES = frozenset({"digitised", "result", "form"})
#: Artifacts kept as evidence whose signatures live on in a later record (not verified on their own).
EVIDENCE = ("history:", "result_approved")

FindingKind = Literal[
    "stale_reservation",
    "abandoned_attempt",
    "missing_object",
    "sha256_mismatch",
    "signature_invalid",
    "not_current",
    "version_unknown",
    "unrecorded_version",
    "missing_lock",
    "orphan_object",
    "insecure_mode",
]


class Finding(BaseModel):
    """One inconsistency: what, where, and whether ``--repair`` resolved it."""

    kind: FindingKind
    detail: str
    dossier_code: str | None = None
    key: str | None = None
    version_id: str | None = None
    repairable: bool = False
    repaired: bool = False


class FsckReport(BaseModel):
    ok: bool = Field(description="True when no inconsistency remains (after repair, if asked)")
    repair: bool
    checked: dict[str, int]
    findings: list[Finding]
    notes: list[str] = Field(default_factory=list)

    @property
    def remaining(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]


class _Check:
    def __init__(self, services: Services, *, repair: bool, signatures: bool, now: datetime) -> None:
        self.services = services
        self.store: ObjectStore = services.store
        self.registry: Registry = services.registry
        self.retention: Retention = services.settings.retention
        self.repair = repair
        self.signatures = signatures
        self.now = now
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.checked: dict[str, int] = defaultdict(int)

    def add(self, kind: FindingKind, detail: str, **where: str | None) -> Finding:
        finding = Finding(kind=kind, detail=detail, **where)  # type: ignore[arg-type]
        self.findings.append(finding)
        return finding

    def fixed(self, finding: Finding) -> None:
        finding.repaired = True

    # 1. unfinished work

    def unfinished(self) -> list[Finding]:
        found = []
        lease = timedelta(seconds=self.services.settings.lease_seconds)
        attempts = {a.id: a for a in self.registry.list_attempts(unfinished=True)}
        for record in self.registry.list_dossiers(state=DossierState.receiving):
            held = attempts.get(record.lease_attempt or "") or (
                self.registry.get_attempt(record.lease_attempt) if record.lease_attempt else None
            )
            if _live(held, self.now) or (held is None and record.created_at > self.now - lease):
                continue
            why = "no lease" if held is None else f"lease of attempt {held.id} ({held.holder}) is not live"
            found.append(Finding(kind="stale_reservation", detail=f"reservation still receiving: {why}",
                                 dossier_code=record.code, repairable=True))
        for attempt in attempts.values():
            pending = self.registry.ledger(attempt=attempt.id, statuses=["pending"])
            if attempt.state == "open" and not _live(attempt, self.now):
                found.append(Finding(kind="abandoned_attempt", repairable=True, dossier_code=attempt.dossier_code,
                                     detail=f"{attempt.purpose} attempt {attempt.id} open past its lease"))
            elif attempt.state != "open" and pending:
                found.append(Finding(kind="abandoned_attempt", repairable=True, dossier_code=attempt.dossier_code,
                                     detail=f"{attempt.state} {attempt.purpose} attempt {attempt.id} left "
                                            f"{len(pending)} unrecorded write(s)"))
        return found

    def sweep_unfinished(self) -> None:
        before = self.unfinished()
        self.findings += before
        if not (self.repair and before):
            return
        report = sweep(self.store, self.registry, self.retention, actor="fsck",
                       lease_for=timedelta(seconds=self.services.settings.lease_seconds))
        self.notes += [f"sweep: {e}" for e in report.errors]
        after = {(f.kind, f.dossier_code, f.detail) for f in self.unfinished()}
        for finding in before:
            if (finding.kind, finding.dossier_code, finding.detail) not in after:
                self.fixed(finding)

    # 2. artifacts

    def artifacts(self) -> None:
        final = self._final_ledger()
        for record in self.registry.list_dossiers():
            if record.state == DossierState.receiving:
                continue
            self.checked["dossiers"] += 1
            for art in record.artifacts.values():
                self.checked["artifacts"] += 1
                self._artifact(record, art, final)

    def _final_ledger(self) -> dict[tuple[str, str | None], StoredVersionRecord]:
        return {(e.key, e.version_id): e for e in self.registry.ledger(statuses=["final"])}

    def _artifact(
        self, record: DossierRecord, art: ArtifactRecord, final: dict[tuple[str, str | None], StoredVersionRecord]
    ) -> None:
        where = {"dossier_code": record.code, "key": art.object_key, "version_id": art.version_id}
        info = self.store.stat(art.object_key, art.version_id)
        if info is None:
            self.add("missing_object", f"artifact {art.name!r}: the recorded version is not in the store", **where)
            return
        version = art.version_id
        if version is None and info.version_id is not None:
            finding = self.add("version_unknown", f"artifact {art.name!r} was recorded before versions; the "
                               f"current version is {info.version_id}", **where)
            if info.sha256 == art.sha256:
                finding.repairable = True
                if self.repair:
                    self.registry.adopt_version(record.code, art.name, version_id=info.version_id)
                    self.fixed(finding)
                    version = info.version_id
        if (art.object_key, art.version_id) not in final and (art.object_key, version) not in final:
            finding = self.add("unrecorded_version", f"artifact {art.name!r} is not in the ledger", **where)
            finding.repairable = True
            if self.repair:
                self.registry.record_final(record.code, [(art.name, info.model_copy(update={"version_id": version}))])
                self.fixed(finding)
        if info.sha256 != art.sha256 or info.size != art.size:
            self.add("sha256_mismatch", f"artifact {art.name!r}: the store records SHA-256 {info.sha256} and "
                     f"{info.size} bytes, the registry {art.sha256} and {art.size} bytes", **where)
            return
        self._is_current(record.code, art, version)
        try:
            data = self.store.get_bytes(art.object_key, version)
        except IntegrityError as err:
            self.add("sha256_mismatch", f"artifact {art.name!r}: {err}", **where)
            return
        self.checked["bytes_read"] += len(data)
        if sha256_bytes(data) != art.sha256:
            self.add("sha256_mismatch", f"artifact {art.name!r} reads back with another SHA-256", **where)
            return
        # An earlier version kept by a signature refresh, and the approver-signed copy the seal was added to,
        # are evidence, not records that must verify on their own today: the renewed (sealed) file carries
        # their signatures forward, and only it is kept valid (hoso signing refresh).
        signed = keys.record_class(art.object_key) in SIGNED_CLASSES and not art.name.startswith(EVIDENCE)
        if self.signatures and signed and data.startswith(b"%PDF"):
            self._signature(art, data, where)

    def _is_current(self, code: str, art: ArtifactRecord, version: str | None) -> None:
        if version is None or not self.store.keeps_versions:
            return
        newer: list[ObjectVersion] = []
        for v in self.store.versions(art.object_key):
            if v.key != art.object_key:
                continue
            if v.version_id == version:
                break
            newer.append(v)
        if not newer:
            return
        finding = self.add("not_current", f"artifact {art.name!r}: {len(newer)} newer version(s) or delete "
                           "marker(s) hide the recorded one", dossier_code=code, key=art.object_key,
                           version_id=version)
        final = {(e.key, e.version_id) for e in self.registry.ledger(dossier_code=code, statuses=["final"])}
        attempts = {a.id: a for a in self.registry.list_attempts(states=["open"])}
        finding.repairable = all(
            (v.key, v.version_id) not in final and self._abandoned(v, attempts) for v in newer
        )
        removable = newer
        if self.repair and finding.repairable:
            try:
                for v in removable:
                    self.store.delete_version(v.key, v.version_id)
                self.fixed(finding)
            except (ObjectLocked, HosoError) as err:
                finding.detail += f" (repair failed: {err})"

    def _abandoned(self, version: ObjectVersion, open_attempts: dict[str, AttemptRecord]) -> bool:
        """Whether an unrecorded version may go: a delete marker, or not locked and no writer may still record
        it (its attempt is not live, or it has none and is older than :data:`ORPHAN_GRACE`)."""
        if version.is_delete_marker:
            return True
        info = self.store.stat(version.key, version.version_id)
        if info is None:
            return True
        if info.lock is not None and info.lock.active(self.now):
            return False
        if info.attempt is not None:
            return not _live(open_attempts.get(info.attempt), self.now)
        return version.last_modified is not None and version.last_modified < self.now - ORPHAN_GRACE

    def _signature(self, art: ArtifactRecord, data: bytes, where: dict[str, str | None]) -> None:
        self.checked["signatures"] += 1
        profile = "auto" if art.name == keys.RESULT else "basic"
        try:
            report = verify_pdf(data, [c.dump() for c in self.services.trust_roots],
                                identities=self.services.signer_identities, profile=profile)  # type: ignore[arg-type]
        except Exception as err:  # whatever stops verification, the record does not verify
            self.add("signature_invalid", f"artifact {art.name!r} cannot be verified: {type(err).__name__}: {err}",
                     **where)
            return
        if not report.ok:
            self.add("signature_invalid", f"artifact {art.name!r}: {report.summary_en}", **where)

    # 3. the ledger's recorded versions: stored, locked

    def recorded_versions(self) -> None:
        if not self.store.can_lock:
            self.notes.append(f"{self.store.describe} cannot lock objects: retention is not enforced there")
        for entry in self.registry.ledger(statuses=["final"]):
            self.checked["recorded_versions"] += 1
            where = {"dossier_code": entry.dossier_code, "key": entry.key, "version_id": entry.version_id}
            info = self.store.stat(entry.key, entry.version_id)
            if info is None:
                if entry.artifact is None or not entry.artifact.startswith("history:"):
                    self.add("missing_object", "a recorded (earlier) version is not in the store", **where)
                continue
            rule = self.retention.get(entry.record_class or "")
            if rule is None or not self.store.can_lock:
                continue
            wanted = lock_for(rule, entry.created_at)
            # S3 keeps retain-until dates to the second
            if entry.retain_until is not None and info.lock is not None and info.lock.until + timedelta(
                seconds=1
            ) >= min(wanted.until, entry.retain_until):
                continue
            finding = self.add("missing_lock", f"recorded {entry.record_class} version is not locked "
                               f"({rule.mode} until {wanted.until:%Y-%m-%d})", **where)
            finding.repairable = True
            if self.repair:
                try:
                    effective = self.store.lock(entry.key, entry.version_id, wanted)
                    self.registry.ledger_locked(entry.id, mode=effective.mode, until=effective.until,
                                                version_id=info.version_id)
                    self.fixed(finding)
                except HosoError as err:
                    finding.detail += f" (repair failed: {err})"

    # 4. orphans in the store

    def orphans(self) -> None:
        ledger = self.registry.ledger()
        by_version = {(e.key, e.version_id): e for e in ledger if e.status != "removed"}
        by_key: dict[str, list[StoredVersionRecord]] = defaultdict(list)
        for e in ledger:
            if e.status == "final":
                by_key[e.key].append(e)
        attempts = {a.id: a for a in self.registry.list_attempts()}
        for version in self.store.versions(f"{keys.DOSSIERS}/"):
            self.checked["stored_versions"] += 1
            entry = by_version.get((version.key, version.version_id))
            if entry is not None and entry.status == "final":
                continue
            if version.version_id is None and any(e.version_id is None for e in by_key.get(version.key, [])):
                continue  # an unversioned store: the key's recorded object
            if entry is not None and _live(attempts.get(entry.attempt or ""), self.now):
                continue  # a live attempt's write in flight
            self._orphan(version, entry, attempts)

    def _orphan(
        self, version: ObjectVersion, entry: StoredVersionRecord | None, attempts: dict[str, AttemptRecord]
    ) -> None:
        code = version.key.split("/")[1] if version.key.count("/") >= 2 else None
        where = {"dossier_code": code, "key": version.key, "version_id": version.version_id}
        if version.is_delete_marker:
            finding = self.add("orphan_object", "a delete marker (hoso never deletes a record)", **where)
            finding.repairable = True
        else:
            info = self.store.stat(version.key, version.version_id)
            if info is None:
                return
            owner = attempts.get(info.attempt or "")
            if _live(owner, self.now):
                return
            locked = info.lock is not None and info.lock.active(self.now)
            old = version.last_modified is not None and version.last_modified < self.now - ORPHAN_GRACE
            ended = owner is not None and owner.state != "open"
            finding = self.add("orphan_object", _orphan_detail(info, owner, locked), **where)
            finding.repairable = not locked and (ended or old)
        if self.repair and finding.repairable:
            try:
                self.store.delete_version(version.key, version.version_id)
                if entry is not None:
                    self.registry.ledger_removed([entry.id])
                self.registry.audit("orphan_removed", actor="fsck", dossier_code=code,
                                    attempt=None if entry is None else entry.attempt, note=version.key)
                self.fixed(finding)
            except HosoError as err:
                finding.detail += f" (repair failed: {err})"

    # 5. file modes

    def modes(self) -> None:
        paths: list[Path] = []
        if isinstance(self.store, LocalObjectStore):
            paths.append(self.store.root)
        settings = self.services.settings
        url = settings.resolved_database_url
        if url.startswith("sqlite:///"):
            paths.append(Path(url.removeprefix("sqlite:///")))
        paths += [settings.data_dir / "logs", settings.resolved_pki_dir]
        for top in paths:
            for path in _walk(top):
                mode = stat.S_IMODE(path.lstat().st_mode)
                if not mode & 0o077:
                    continue
                wanted = 0o700 if path.is_dir() else 0o600
                finding = self.add("insecure_mode", f"{path} is mode {mode:o}, not {wanted:o}", key=str(path))
                finding.repairable = True
                if self.repair:
                    os.chmod(path, wanted)
                    self.fixed(finding)


def _orphan_detail(info: ObjectInfo, owner: AttemptRecord | None, locked: bool) -> str:
    by = "no attempt" if info.attempt is None else f"attempt {info.attempt}" + (
        f" ({owner.state})" if owner is not None else " (unknown)")
    return f"a version no record names ({by}{', locked' if locked else ''})"


def _live(attempt: AttemptRecord | None, now: datetime) -> bool:
    return (
        attempt is not None and attempt.state == "open" and attempt.expires_at > now
        and holder_alive(attempt.holder) is not False
    )


def _walk(top: Path) -> Iterator[Path]:
    if not top.exists() or top.is_symlink():
        return
    yield top
    if top.is_dir():
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    yield path


def fsck(services: Services, *, repair: bool = False, signatures: bool = True,
         now: datetime | None = None) -> FsckReport:
    """Check (and with ``repair``, resolve what is safely resolvable); see the module doc."""
    check = _Check(services, repair=repair, signatures=signatures, now=now or utcnow())
    check.sweep_unfinished()
    check.artifacts()
    check.recorded_versions()
    check.orphans()
    check.modes()
    if repair:  # versions recorded before they were locked (e.g. adopted above) get their lock now
        lock_recorded(check.store, check.registry, check.retention)
    return FsckReport(
        ok=not any(not f.repaired for f in check.findings),
        repair=repair,
        checked=dict(check.checked),
        findings=check.findings,
        notes=check.notes,
    )
