"""The dossier registry: codes, states, documents, artifacts and the audit trail (SQLAlchemy 2).

SQLite by default, PostgreSQL for shared deployments. Every public method is one transaction. The
schema is versioned by Alembic migrations (:mod:`storage.schema`); an empty database is brought to the
newest revision when it is opened.

Work that writes objects runs as an *attempt* (table ``attempts``): who runs it (``holder``: host and
process), until when its lease holds, and how it ended. An intake reservation (a ``receiving`` dossier)
is held by one attempt at a time (``dossiers.lease_attempt``): a live lease held by another process
means "in progress elsewhere", an expired one (or one whose process is gone) may be taken over. Every
object version an attempt writes is entered in the ledger (``object_versions``) before it is written
(``pending``), becomes ``final`` in the transaction that records it, and carries its lock once it is
locked — so a crash at any point leaves enough to sweep or repair (storage/records.py). The audit log
(``audit_log``) keeps what happened to reservations that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python
from sqlalchemy import event, exc
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload
from sqlalchemy.pool import StaticPool

from pipeline.core.errors import (
    ConfigurationError,
    DossierCodeTaken,
    DossierNotFound,
    InProgressElsewhere,
    InvalidState,
    StorageFailed,
)
from pipeline.core.models import DocumentInfo, DossierState, Role
from storage import keys as object_keys

if TYPE_CHECKING:
    from pipeline.core.settings import Settings
    from storage.objects import ObjectInfo

BatchOutcome = Literal["processed", "already_done", "failed"]
AttemptState = Literal["open", "committed", "rolled_back", "superseded", "swept"]
VersionStatus = Literal["pending", "final", "removed"]
ClaimStatus = Literal["new", "resumed", "busy", "done"]
#: Answers whether a lease holder's process still runs: True, False, or None when it cannot tell.
HolderAlive = Callable[[str], bool | None]

#: Transitions allowed when ``transition`` is called without ``allowed_from``. The lifecycle's steps
#: (pipeline/data/lifecycle.yaml) always pass ``allowed_from``.
DEFAULT_TRANSITIONS: dict[DossierState, frozenset[DossierState]] = {
    DossierState.receiving: frozenset(
        {DossierState.received, DossierState.needs_supplement, DossierState.rejected}
    ),
    DossierState.received: frozenset({DossierState.returned}),
    DossierState.needs_supplement: frozenset({DossierState.received, DossierState.rejected}),
    DossierState.rejected: frozenset(),
    DossierState.returned: frozenset(),
}
INTAKE_STATES = frozenset({DossierState.received, DossierState.needs_supplement, DossierState.rejected})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite stores naive UTC, which is re-tagged on read."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- ORM ----------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Dossier(Base):
    __tablename__ = "dossiers"
    __table_args__ = (
        sa.UniqueConstraint("input_sha256", "procedure", name="uq_dossiers_input"),
        sa.Index("ix_dossiers_state", "state"),
        sa.Index("ix_dossiers_received_at", "received_at"),
        sa.Index("ix_dossiers_legacy_code", "legacy_code", unique=True),
        sa.Index("ix_dossiers_handover_batch", "handover_batch"),
    )

    code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    procedure: Mapped[str] = mapped_column(sa.String(128))
    procedure_code: Mapped[str | None] = mapped_column(sa.String(64))
    agency_code: Mapped[str] = mapped_column(sa.String(40))
    input_sha256: Mapped[str] = mapped_column(sa.String(64))
    input_name: Mapped[str] = mapped_column(sa.String(512))
    applicant_id: Mapped[str | None] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(32))
    intake_status: Mapped[str | None] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    receipt_json: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_attempt: Mapped[str | None] = mapped_column(sa.String(40))  # the attempt holding a reservation
    # A legacy dossier handed over (pipeline/domain/handover.py): its original code (= ``code``), the old
    # unit it came from (``agency_code`` is the new unit's) and the archive batch that handed it over.
    legacy_code: Mapped[str | None] = mapped_column(sa.String(64))
    handed_over_from: Mapped[str | None] = mapped_column(sa.String(40))
    handover_batch: Mapped[str | None] = mapped_column(sa.String(64))

    documents: Mapped[list[Document]] = relationship(
        back_populates="dossier", cascade="all, delete-orphan", order_by="Document.position"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="dossier", cascade="all, delete-orphan", order_by="Artifact.name"
    )
    events: Mapped[list[Event]] = relationship(
        back_populates="dossier", cascade="all, delete-orphan", order_by="Event.id"
    )


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dossier_code: Mapped[str] = mapped_column(sa.ForeignKey("dossiers.code", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    doc_type: Mapped[str] = mapped_column(sa.String(128))
    pages: Mapped[list[int]] = mapped_column(sa.JSON)
    confidence: Mapped[float]
    fields: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    field_confidence: Mapped[dict[str, float]] = mapped_column(sa.JSON, default=dict)

    dossier: Mapped[Dossier] = relationship(back_populates="documents")


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("dossier_code", "name", name="uq_artifacts_name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dossier_code: Mapped[str] = mapped_column(sa.ForeignKey("dossiers.code", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    object_key: Mapped[str] = mapped_column(sa.String(1024))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    content_type: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version_id: Mapped[str | None] = mapped_column(sa.String(255))  # None: the store keeps no versions

    dossier: Mapped[Dossier] = relationship(back_populates="artifacts")


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dossier_code: Mapped[str] = mapped_column(sa.ForeignKey("dossiers.code", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(128))
    from_state: Mapped[str | None] = mapped_column(sa.String(32))
    to_state: Mapped[str] = mapped_column(sa.String(32))
    action: Mapped[str] = mapped_column(sa.String(64))
    note: Mapped[str | None] = mapped_column(sa.Text)
    role: Mapped[str | None] = mapped_column(sa.String(32))  # the role the actor acted in (lifecycle steps)
    detail: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)  # what the step recorded (forms, payment…)

    dossier: Mapped[Dossier] = relationship(back_populates="events")


class BatchItem(Base):
    __tablename__ = "batch_items"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    input_name: Mapped[str] = mapped_column(sa.String(512))
    input_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    dossier_code: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Attempt(Base):
    """One run of work that writes objects (an intake, a result, a signature refresh, a sweep)."""

    __tablename__ = "attempts"
    __table_args__ = (sa.Index("ix_attempts_state", "state"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    purpose: Mapped[str] = mapped_column(sa.String(32))
    dossier_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)  # no FK: outlives a discard
    holder: Mapped[str] = mapped_column(sa.String(255))  # storage.records.holder_id()
    actor: Mapped[str] = mapped_column(sa.String(128))
    state: Mapped[str] = mapped_column(sa.String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(sa.Text)


class StoredVersion(Base):
    """The ledger: one object version hoso wrote (or means to write), and what became of it."""

    __tablename__ = "object_versions"
    __table_args__ = (sa.Index("ix_object_versions_status", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(sa.String(1024))
    version_id: Mapped[str | None] = mapped_column(sa.String(255))
    attempt: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    dossier_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    artifact: Mapped[str | None] = mapped_column(sa.String(128))
    record_class: Mapped[str | None] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    lock_mode: Mapped[str | None] = mapped_column(sa.String(16))
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """What happened to reservations, attempts and stored objects, kept after the dossier row is gone."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[str] = mapped_column(sa.String(64))
    dossier_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    attempt: Mapped[str | None] = mapped_column(sa.String(40))
    note: Mapped[str | None] = mapped_column(sa.Text)


class HandoverRecordRow(Base):
    """The signed hand-over record (biên bản bàn giao) of one archive batch: where it is and what it counts."""

    __tablename__ = "handover_records"

    batch_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    object_key: Mapped[str] = mapped_column(sa.String(1024))
    version_id: Mapped[str | None] = mapped_column(sa.String(255))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    rows: Mapped[int]
    handed_over: Mapped[int]
    already_done: Mapped[int]
    failed: Mapped[int]
    summary: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    actor: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CodeSequence(Base):
    __tablename__ = "code_sequences"

    agency_code: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    day: Mapped[str] = mapped_column(sa.String(6), primary_key=True)  # YYMMDD
    last: Mapped[int]


# The national databases' embedded stand-in (pipeline.national.db.RegistryNationalDb) lives in the same
# database and schema: its tables are created with the registry's.


class NatdbCitizen(Base):
    """A person in the population DB."""

    __tablename__ = "natdb_citizens"

    id_number: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    full_name: Mapped[str] = mapped_column(sa.String(256))
    date_of_birth: Mapped[str] = mapped_column(sa.String(10))  # dd/mm/yyyy
    gender: Mapped[str] = mapped_column(sa.String(8))


class NatdbCitizenDocument(Base):
    """A signed digitised document in a citizen's electronic data store."""

    __tablename__ = "natdb_citizen_documents"
    __table_args__ = (sa.UniqueConstraint("id_number", "doc_type", "dossier_code", name="uq_natdb_document"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    id_number: Mapped[str] = mapped_column(sa.String(12), index=True)
    doc_type: Mapped[str] = mapped_column(sa.String(128))
    object_key: Mapped[str] = mapped_column(sa.String(1024))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    dossier_code: Mapped[str] = mapped_column(sa.String(64))
    pages: Mapped[list[int]] = mapped_column(sa.JSON)
    fields: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- records returned to callers ----------------------------------------------------------------


class _FromRow(BaseModel):
    """Read from an ORM row's attributes: ``Record.model_validate(row)``."""

    model_config = ConfigDict(from_attributes=True)


class DocumentRecord(_FromRow):
    position: int
    doc_type: str
    pages: list[int]
    confidence: float
    fields: dict[str, str] = Field(default_factory=dict)
    field_confidence: dict[str, float] = Field(default_factory=dict)

    def to_info(self) -> DocumentInfo:
        return DocumentInfo(
            type=self.doc_type,
            pages=self.pages,
            confidence=self.confidence,
            fields=self.fields,
            field_confidence=self.field_confidence,
        )


class ArtifactRecord(_FromRow):
    name: str
    object_key: str
    sha256: str
    size: int
    content_type: str
    created_at: datetime
    version_id: str | None = None


class AttemptRecord(_FromRow):
    id: str
    purpose: str
    dossier_code: str | None
    holder: str
    actor: str
    state: AttemptState
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    note: str | None = None


class StoredVersionRecord(_FromRow):
    id: int
    key: str
    version_id: str | None
    attempt: str | None
    dossier_code: str | None
    artifact: str | None
    record_class: str | None
    status: VersionStatus
    sha256: str | None
    size: int | None
    lock_mode: str | None
    retain_until: datetime | None
    created_at: datetime
    updated_at: datetime


class AuditRecord(_FromRow):
    at: datetime
    actor: str
    action: str
    dossier_code: str | None
    attempt: str | None
    note: str | None


class EventRecord(_FromRow):
    at: datetime
    actor: str
    from_state: DossierState | None
    to_state: DossierState
    action: str
    note: str | None = None
    role: Role | None = None
    detail: dict[str, Any] | None = None


class BatchItemRecord(_FromRow):
    batch_id: str
    input_name: str
    input_sha256: str | None
    outcome: BatchOutcome
    dossier_code: str | None
    reason: str | None
    at: datetime


class HandoverRecordInfo(_FromRow):
    batch_id: str
    object_key: str
    version_id: str | None
    sha256: str
    size: int
    rows: int
    handed_over: int
    already_done: int
    failed: int
    summary: dict[str, Any]
    actor: str
    created_at: datetime


class DossierRecord(_FromRow):
    code: str
    procedure: str
    procedure_code: str | None
    agency_code: str
    input_sha256: str
    input_name: str
    applicant_id: str | None
    state: DossierState
    intake_status: str | None
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    returned_at: datetime | None
    receipt_json: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    lease_attempt: str | None = None
    legacy_code: str | None = None
    handed_over_from: str | None = None
    handover_batch: str | None = None
    documents: list[DocumentRecord] = Field(default_factory=list)
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    events: list[EventRecord] = Field(default_factory=list)

    @field_validator("artifacts", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        """The row's list of artifacts, keyed by name."""
        return value if isinstance(value, dict) else {a.name: a for a in value}


@dataclass(frozen=True)
class LegacyIntake:
    """What the registry keeps of a legacy dossier handed over: its own code, the old unit, the batch."""

    code: str
    from_agency: str
    batch_id: str


@dataclass(frozen=True)
class IntakeClaim:
    """What :meth:`Registry.claim_intake` found: a reservation this attempt now holds (``new``, ``resumed``
    from an earlier attempt, which is ``previous``), one a live attempt holds (``busy``, ``previous`` is
    that attempt), or a dossier already received (``done``)."""

    status: ClaimStatus
    record: DossierRecord
    attempt: AttemptRecord | None = None
    previous: AttemptRecord | None = None


def _artifact_rows(artifacts: Iterable[tuple[str, ObjectInfo]], at: datetime) -> dict[str, Artifact]:
    """One row per artifact name (the last one given wins)."""
    rows: dict[str, Artifact] = {}
    for name, info in artifacts:
        rows[name] = Artifact(
            name=name,
            object_key=info.key,
            sha256=info.sha256,
            size=info.size,
            content_type=info.content_type,
            created_at=at,
            version_id=info.version_id,
        )
    return rows


def _record_versions(
    session: Session, code: str | None, artifacts: Iterable[tuple[str, ObjectInfo]], at: datetime
) -> None:
    """Enter the recorded versions in the ledger as ``final``: the writer's pending entry, or a new one.

    A version whose attempt was swept, superseded or rolled back cannot be recorded: its bytes may be
    gone (InProgressElsewhere).
    """
    for name, info in artifacts:
        row = None
        if info.attempt:
            owner = session.scalars(
                sa.select(Attempt).where(Attempt.id == info.attempt).with_for_update()
            ).one_or_none()
            if owner is not None and owner.state not in ("open", "committed"):
                raise InProgressElsewhere(
                    f"{info.key} was written by attempt {info.attempt}, which is {owner.state}: not recorded",
                    "Phiên xử lý này đã bị tiến trình khác tiếp quản; kết quả của nó không được ghi nhận.",
                )
            row = session.scalars(
                sa.select(StoredVersion)
                .where(StoredVersion.attempt == info.attempt, StoredVersion.key == info.key,
                       StoredVersion.status == "pending")
                .order_by(StoredVersion.id.desc())
                .limit(1)
            ).one_or_none()
        if row is None:
            row = StoredVersion(key=info.key, attempt=info.attempt, created_at=at)
            session.add(row)
        row.version_id = info.version_id
        row.dossier_code = code
        row.artifact = name
        row.record_class = object_keys.record_class(info.key)
        row.status = "final"
        row.sha256 = info.sha256
        row.size = info.size
        row.updated_at = at


def _is_live(attempt: Attempt | None, now: datetime, alive: HolderAlive | None) -> bool:
    """True while ``attempt`` holds its lease: open, not expired, and its process not known to be gone."""
    if attempt is None or attempt.state != "open" or attempt.expires_at <= now:
        return False
    return alive is None or alive(attempt.holder) is not False


def _private_file(path: Path) -> None:
    """Make the SQLite file (and its folder) readable by this user alone; SQLite gives its journals the same mode."""
    from storage.objects import private_dirs

    private_dirs(path.parent)
    try:
        if path.exists():
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return
        # Never open (and close) an existing database file: closing any descriptor of it drops the POSIX
        # locks SQLite holds on it in this process.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass  # created meanwhile, or a bad path: SQLite reports what is wrong when it opens it


def _enable_wal(dbapi_conn: Any, patience: float = 30.0) -> None:
    """Put the SQLite database in WAL mode (a setting kept in the file), waiting out other connections.

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without its busy
    handler, when two connections switch a new file at the same moment (each holds the shared lock the
    other waits on): so the switch is retried here until ``patience`` runs out.
    """
    import sqlite3

    deadline, pause = time.monotonic() + patience, 0.005
    while True:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode")
            if str(cur.fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return  # "wal", or the mode SQLite keeps where WAL cannot work (as before: not an error)
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise
        finally:
            cur.close()
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


# --- the registry -------------------------------------------------------------------------------


class Registry:
    """Dossier registry on a SQLAlchemy URL.

    ``timezone`` decides the calendar day in dossier codes (default: ``received_at``'s own zone).
    ``upgrade`` says which databases are migrated when opened: ``empty`` ones only (the default: an
    existing database behind this code's schema is refused until ``hoso db upgrade``), ``always``
    (development), or ``never`` (``hoso db`` itself).
    """

    def __init__(
        self, url: str, *, timezone: str | None = None, upgrade: Literal["empty", "always", "never"] = "empty"
    ) -> None:
        self.url = url
        self._tz = ZoneInfo(timezone) if timezone else None
        try:
            parsed = make_url(url)
        except exc.ArgumentError as err:
            raise StorageFailed(f"invalid database URL {url!r}: {err}") from err
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self.engine = self._make_engine(parsed)
        if upgrade != "never":
            self._ensure_schema(parsed, upgrade)

    def _ensure_schema(self, url: sa.URL, upgrade: Literal["empty", "always"]) -> None:
        from storage import schema

        where = url.render_as_string(hide_password=True)
        try:
            state, revision = schema.state(self.engine)
            if state == "empty" or (upgrade == "always" and state in ("behind", "unversioned")):
                schema.upgrade(self.engine)
                return
        except exc.SQLAlchemyError as err:
            self.engine.dispose()
            raise StorageFailed(
                f"registry database {where} unavailable: {err}", "Không kết nối được cơ sở dữ liệu hồ sơ."
            ) from err
        if state in ("behind", "unversioned"):
            self.engine.dispose()
            raise ConfigurationError(
                f"registry database {where} is at schema revision {revision or 'none (before migrations)'}, "
                f"this hoso needs {schema.head()}: run `hoso db upgrade`",
                "Cơ sở dữ liệu hồ sơ cần được nâng cấp lược đồ (hoso db upgrade).",
            )
        if state == "ahead":
            self.engine.dispose()
            raise ConfigurationError(
                f"registry database {where} is at schema revision {revision}, newer than this hoso knows",
                "Cơ sở dữ liệu hồ sơ thuộc phiên bản phần mềm mới hơn; hãy cập nhật hoso.",
            )

    def schema_revision(self) -> str | None:
        """The database's schema revision (None: never migrated)."""
        from storage import schema

        return schema.current(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry at ``HOSO_DATABASE_URL`` (default: SQLite in the data folder).

        Development migrates an older database by itself; production only an empty one.
        """
        upgrade: Literal["empty", "always"] = "always" if settings.mode == "development" else "empty"
        return cls(settings.resolved_database_url, timezone=settings.timezone, upgrade=upgrade)

    def _make_engine(self, url: sa.URL) -> Engine:
        if not self._sqlite:
            return sa.create_engine(url, pool_pre_ping=True)
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory:
            _private_file(Path(database).expanduser())
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"check_same_thread": False, "timeout": 30},
            **({"poolclass": StaticPool} if in_memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so it can be BEGIN IMMEDIATE: writers then
            # queue on the busy timeout instead of failing on a read-to-write lock upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            if not in_memory:
                _enable_wal(dbapi_conn)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction; database failures become StorageFailed."""
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except exc.OperationalError as err:
            raise StorageFailed(
                f"registry database error: {err.orig or err}", "Không ghi được cơ sở dữ liệu hồ sơ."
            ) from err

    @staticmethod
    def _load(session: Session, code: str, *, lock: bool = False) -> Dossier:
        stmt = (
            sa.select(Dossier)
            .where(Dossier.code == code)
            .options(
                selectinload(Dossier.documents), selectinload(Dossier.artifacts), selectinload(Dossier.events)
            )
        )
        if lock:
            stmt = stmt.with_for_update(of=Dossier)
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise DossierNotFound(f"no dossier with code {code!r}")
        return row

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """One transaction (database failures become StorageFailed), for the engine modules that keep their
        own tables beside the registry's (storage/identity.py)."""
        return self._session()

    @contextlib.contextmanager
    def locked(self, code: str) -> Iterator[tuple[Session, Dossier]]:
        """:meth:`transaction` holding dossier ``code``'s row locked for update; DossierNotFound if missing."""
        with self._session() as session:
            yield session, self._load(session, code, lock=True)

    @staticmethod
    def _reload(session: Session, code: str) -> DossierRecord:
        session.flush()
        session.expire_all()
        return DossierRecord.model_validate(Registry._load(session, code))

    # -- queries

    def get(self, code: str) -> DossierRecord:
        """The dossier with its documents, artifacts and events; DossierNotFound if missing."""
        with self._session() as session:
            return DossierRecord.model_validate(self._load(session, code))

    def find_by_input(self, input_sha256: str, procedure: str) -> DossierRecord | None:
        """The dossier already made from this input for this procedure, if any."""
        with self._session() as session:
            code = session.scalar(
                sa.select(Dossier.code).where(
                    Dossier.input_sha256 == input_sha256, Dossier.procedure == procedure
                )
            )
            return None if code is None else DossierRecord.model_validate(self._load(session, code))

    def list_dossiers(
        self,
        *,
        state: DossierState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        states: Iterable[DossierState] | None = None,
        due_by: datetime | None = None,
    ) -> list[DossierRecord]:
        """Dossiers by ``received_at`` (``since`` inclusive, ``until`` exclusive), oldest first; ``state`` or
        any of ``states``; due (``due_at``) at or before ``due_by``."""
        stmt = sa.select(Dossier).options(
            selectinload(Dossier.documents), selectinload(Dossier.artifacts), selectinload(Dossier.events)
        )
        if state is not None:
            stmt = stmt.where(Dossier.state == DossierState(state).value)
        if states is not None:
            stmt = stmt.where(Dossier.state.in_([DossierState(s).value for s in states]))
        if due_by is not None:
            stmt = stmt.where(Dossier.due_at <= due_by)
        if since is not None:
            stmt = stmt.where(Dossier.received_at >= since)
        if until is not None:
            stmt = stmt.where(Dossier.received_at < until)
        stmt = stmt.order_by(Dossier.received_at, Dossier.code)
        with self._session() as session:
            return [DossierRecord.model_validate(row) for row in session.scalars(stmt)]

    def stale_reservations(self, older_than: timedelta) -> list[DossierRecord]:
        """Dossiers stuck in ``receiving`` whose reservation is older than ``older_than``."""
        cutoff = utcnow() - older_than
        stmt = (
            sa.select(Dossier)
            .where(Dossier.state == DossierState.receiving.value, Dossier.created_at < cutoff)
            .options(
                selectinload(Dossier.documents), selectinload(Dossier.artifacts), selectinload(Dossier.events)
            )
            .order_by(Dossier.created_at)
        )
        with self._session() as session:
            return [DossierRecord.model_validate(row) for row in session.scalars(stmt)]

    # -- codes

    def _code_day(self, received_at: datetime) -> str:
        if received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        local = received_at.astimezone(self._tz) if self._tz else received_at
        return local.strftime("%y%m%d")

    def _next_sequence(self, session: Session, agency_code: str, day: str) -> int:
        """Increment (agency, day) -> last atomically; the row stays locked until commit."""
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = session.get_bind().dialect.name
        insert: Any
        if dialect == "postgresql":
            insert = postgresql.insert
        elif dialect == "sqlite":
            insert = sqlite.insert
        else:  # generic fallback: row lock, then insert if absent
            row = session.scalars(
                sa.select(CodeSequence)
                .where(CodeSequence.agency_code == agency_code, CodeSequence.day == day)
                .with_for_update()
            ).one_or_none()
            if row is None:
                session.add(CodeSequence(agency_code=agency_code, day=day, last=1))
                return 1
            row.last += 1
            return row.last
        stmt = insert(CodeSequence).values(agency_code=agency_code, day=day, last=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[CodeSequence.agency_code, CodeSequence.day],
            set_={"last": CodeSequence.last + 1},
        ).returning(CodeSequence.last)
        return int(session.execute(stmt).scalar_one())

    # -- writes

    def reserve(
        self,
        *,
        input_sha256: str,
        input_name: str,
        procedure: str,
        procedure_code: str | None,
        agency_code: str,
        received_at: datetime,
        due_at: datetime,
        applicant_id: str | None,
        actor: str,
    ) -> DossierRecord:
        """Allocate a dossier code in state ``receiving``; an existing one for the same input is returned."""
        for _ in range(3):
            existing = self.find_by_input(input_sha256, procedure)
            if existing is not None:
                return existing
            try:
                with self._session() as session:
                    row = self._new_reservation(
                        session, input_sha256=input_sha256, input_name=input_name, procedure=procedure,
                        procedure_code=procedure_code, agency_code=agency_code, received_at=received_at,
                        due_at=due_at, applicant_id=applicant_id, actor=actor,
                    )
                    return self._reload(session, row.code)
            except exc.IntegrityError:
                # Another process reserved the same input between our lookup and insert
                # (the sequence increment rolled back with it): return theirs.
                continue
        raise StorageFailed(f"could not reserve a dossier code for input {input_sha256[:12]}… ({procedure})")

    def _new_reservation(
        self,
        session: Session,
        *,
        input_sha256: str,
        input_name: str,
        procedure: str,
        procedure_code: str | None,
        agency_code: str,
        received_at: datetime,
        due_at: datetime,
        applicant_id: str | None,
        actor: str,
        lease_attempt: str | None = None,
        legacy: LegacyIntake | None = None,
    ) -> Dossier:
        if legacy is not None:
            code = legacy.code
            if session.get(Dossier, code) is not None:
                raise DossierCodeTaken(
                    f"dossier code {code} is in the registry already, made from another input",
                    f"Mã hồ sơ {code} đã có trong hệ thống (một hồ sơ khác); hồ sơ này không được bàn giao lại.",
                )
        else:
            day = self._code_day(received_at)
            while True:  # a handed-over dossier may hold a code the sequence would give
                seq = self._next_sequence(session, agency_code, day)
                code = f"{agency_code}-{day}-{seq:04d}"
                if session.get(Dossier, code) is None:
                    break
        now = utcnow()
        row = Dossier(
            code=code,
            procedure=procedure,
            procedure_code=procedure_code,
            agency_code=agency_code,
            input_sha256=input_sha256,
            input_name=input_name,
            applicant_id=applicant_id,
            state=DossierState.receiving.value,
            intake_status=None,
            received_at=received_at,
            due_at=due_at,
            created_at=now,
            updated_at=now,
            lease_attempt=lease_attempt,
        )
        if legacy is not None:
            row.legacy_code, row.handed_over_from, row.handover_batch = code, legacy.from_agency, legacy.batch_id
        row.events.append(Event(at=now, actor=actor, from_state=None, to_state=row.state, action="reserve"))
        session.add(row)
        session.flush()  # a concurrent reservation of the same input fails here, inside the retry
        return row

    def claim_intake(
        self,
        *,
        input_sha256: str,
        input_name: str,
        procedure: str,
        procedure_code: str | None,
        agency_code: str,
        received_at: datetime,
        due_at: datetime,
        applicant_id: str | None,
        actor: str,
        attempt: str,
        holder: str,
        lease_for: timedelta,
        holder_alive: HolderAlive | None = None,
        legacy: LegacyIntake | None = None,
    ) -> IntakeClaim:
        """Reserve a dossier code for this input under a lease held by ``attempt``, in one transaction.

        A new input gets a new code (``new``) — a handed-over dossier (``legacy``) its own code, or
        DossierCodeTaken when another input's dossier holds that code. A reservation whose lease is free,
        expired or held by a process that is gone is taken over (``resumed``; the earlier attempt is
        ``superseded`` and named in the dossier's events and the audit log: its objects are the caller's to
        remove). A live lease of another attempt is left alone (``busy``); a dossier past intake is ``done``.
        """
        for _ in range(3):
            try:
                with self._session() as session:
                    now = utcnow()
                    row = session.scalars(
                        sa.select(Dossier)
                        .where(Dossier.input_sha256 == input_sha256, Dossier.procedure == procedure)
                        .with_for_update()
                    ).one_or_none()
                    if row is None:
                        row = self._new_reservation(
                            session, input_sha256=input_sha256, input_name=input_name, procedure=procedure,
                            procedure_code=procedure_code, agency_code=agency_code, received_at=received_at,
                            due_at=due_at, applicant_id=applicant_id, actor=actor, lease_attempt=attempt,
                            legacy=legacy,
                        )
                        mine = self._add_attempt(session, attempt, "intake", row.code, holder, actor, now + lease_for)
                        return IntakeClaim("new", self._reload(session, row.code), AttemptRecord.model_validate(mine))
                    if row.state != DossierState.receiving.value:
                        return IntakeClaim("done", self._reload(session, row.code))
                    held = session.get(Attempt, row.lease_attempt) if row.lease_attempt else None
                    if held is not None and held.id != attempt and _is_live(held, now, holder_alive):
                        return IntakeClaim(
                            "busy", self._reload(session, row.code), previous=AttemptRecord.model_validate(held)
                        )
                    previous = None
                    if held is not None and held.id != attempt:
                        why = "expired" if held.expires_at <= now else f"ended ({held.state})"
                        if held.state == "open" and held.expires_at > now:
                            why = "its process is gone"
                        previous = self._supersede(session, held, now, f"taken over by attempt {attempt}: {why}")
                        note = f"attempt {held.id} ({held.holder}) {why}; resumed by attempt {attempt}"
                    else:
                        note = f"reservation without a live lease; resumed by attempt {attempt}"
                    mine = session.get(Attempt, attempt) or self._add_attempt(
                        session, attempt, "intake", row.code, holder, actor, now + lease_for
                    )
                    mine.expires_at = now + lease_for
                    row.lease_attempt = attempt
                    row.updated_at = now
                    row.events.append(Event(at=now, actor=actor, from_state=row.state, to_state=row.state,
                                            action="intake_resumed", note=note))
                    session.add(AuditEntry(at=now, actor=actor, action="intake_resumed", dossier_code=row.code,
                                           attempt=attempt, note=note))
                    return IntakeClaim(
                        "resumed", self._reload(session, row.code), AttemptRecord.model_validate(mine), previous
                    )
            except exc.IntegrityError:
                continue  # another process reserved the same input meanwhile: look again
        raise StorageFailed(f"could not reserve a dossier code for input {input_sha256[:12]}… ({procedure})")

    def peek_intake(
        self, input_sha256: str, procedure: str, holder_alive: HolderAlive | None = None
    ) -> tuple[Literal["none", "busy", "stale", "done"], DossierRecord | None]:
        """Where intake of this input stands, without changing anything."""
        with self._session() as session:
            row = session.scalars(
                sa.select(Dossier).where(Dossier.input_sha256 == input_sha256, Dossier.procedure == procedure)
            ).one_or_none()
            if row is None:
                return "none", None
            record = DossierRecord.model_validate(self._load(session, row.code))
            if row.state != DossierState.receiving.value:
                return "done", record
            held = session.get(Attempt, row.lease_attempt) if row.lease_attempt else None
            return ("busy" if _is_live(held, utcnow(), holder_alive) else "stale"), record

    @staticmethod
    def _add_attempt(
        session: Session, attempt: str, purpose: str, code: str | None, holder: str, actor: str, expires: datetime
    ) -> Attempt:
        now = utcnow()
        row = Attempt(id=attempt, purpose=purpose, dossier_code=code, holder=holder, actor=actor, state="open",
                      started_at=now, expires_at=expires)
        session.add(row)
        return row

    @staticmethod
    def _supersede(session: Session, held: Attempt, now: datetime, note: str) -> AttemptRecord:
        if held.state == "open":
            held.state = "superseded"
            held.ended_at = now
            held.note = note
        return AttemptRecord.model_validate(held)

    def open_attempt(
        self, purpose: str, *, attempt: str, holder: str, actor: str, lease_for: timedelta,
        dossier_code: str | None = None,
    ) -> AttemptRecord:
        """Start an attempt that is not an intake (a result, a signature refresh, a sweep)."""
        with self._session() as session:
            row = self._add_attempt(session, attempt, purpose, dossier_code, holder, actor, utcnow() + lease_for)
            session.flush()
            return AttemptRecord.model_validate(row)

    def _held(self, session: Session, attempt: str) -> Attempt:
        """The attempt row, locked, if it still holds its work; InProgressElsewhere otherwise."""
        row = session.scalars(sa.select(Attempt).where(Attempt.id == attempt).with_for_update()).one_or_none()
        lost = row is None or row.state != "open"
        if row is not None and not lost and row.purpose == "intake" and row.dossier_code:
            lost = session.scalar(sa.select(Dossier.lease_attempt).where(Dossier.code == row.dossier_code)) != attempt
        if lost or row is None:
            raise InProgressElsewhere(
                f"attempt {attempt} no longer holds its work"
                + (f" ({row.state}: {row.note})" if row is not None and row.note else ""),
                "Phiên xử lý này đã bị tiến trình khác tiếp quản; kết quả của nó không được ghi nhận.",
            )
        return row

    def renew_attempt(self, attempt: str, lease_for: timedelta) -> AttemptRecord:
        """Extend an attempt's lease; InProgressElsewhere if it was taken over or ended meanwhile."""
        with self._session() as session:
            row = self._held(session, attempt)
            row.expires_at = utcnow() + lease_for
            return AttemptRecord.model_validate(row)

    def expire_attempt(self, attempt: str, note: str | None = None) -> None:
        """End an attempt's lease now (its work is left for the sweeper or the next run to take over)."""
        with self._session() as session:
            row = session.get(Attempt, attempt)
            if row is not None and row.state == "open":
                row.expires_at = utcnow()
                row.note = note or row.note

    def end_attempt(
        self, attempt: str, state: AttemptState, *, actor: str | None = None, note: str | None = None
    ) -> None:
        """Close an attempt (``committed``, ``rolled_back``, ``swept``); the audit log says so unless committed."""
        with self._session() as session:
            row = session.get(Attempt, attempt)
            if row is None:
                return
            now = utcnow()
            if row.state == "open":
                row.state = state
                row.ended_at = now
                row.note = note or row.note
            if state != "committed":
                session.add(AuditEntry(at=now, actor=actor or row.actor, action=f"attempt_{state}",
                                       dossier_code=row.dossier_code, attempt=attempt, note=note))

    def end_if_stale(self, attempt: str, *, actor: str, holder_alive: HolderAlive | None = None) -> bool:
        """Mark an open attempt ``swept`` if its lease is not live (checked under its row lock); True if so.

        After this its versions cannot be recorded any more, so the sweeper may remove them.
        """
        with self._session() as session:
            row = session.scalars(sa.select(Attempt).where(Attempt.id == attempt).with_for_update()).one_or_none()
            now = utcnow()
            if row is None or row.state != "open" or _is_live(row, now, holder_alive):
                return False
            row.state, row.ended_at = "swept", now
            row.note = "lease expired or its process is gone"
            session.add(AuditEntry(at=now, actor=actor, action="attempt_swept", dossier_code=row.dossier_code,
                                   attempt=attempt, note=f"{row.purpose} attempt by {row.holder}"))
            return True

    def get_attempt(self, attempt: str) -> AttemptRecord | None:
        with self._session() as session:
            row = session.get(Attempt, attempt)
            return None if row is None else AttemptRecord.model_validate(row)

    def list_attempts(
        self, *, states: Iterable[AttemptState] | None = None, unfinished: bool = False
    ) -> list[AttemptRecord]:
        """Attempts, oldest first: in ``states``, or (``unfinished``) open or with versions still pending."""
        stmt = sa.select(Attempt).order_by(Attempt.started_at)
        if states is not None:
            stmt = stmt.where(Attempt.state.in_(list(states)))
        if unfinished:
            pending = sa.select(StoredVersion.attempt).where(StoredVersion.status == "pending")
            stmt = stmt.where(sa.or_(Attempt.state == "open", Attempt.id.in_(pending)))
        with self._session() as session:
            return [AttemptRecord.model_validate(r) for r in session.scalars(stmt)]

    def take_over(
        self, code: str, *, attempt: str, holder: str, actor: str, lease_for: timedelta,
        holder_alive: HolderAlive | None = None,
    ) -> AttemptRecord | None:
        """Take a ``receiving`` reservation whose lease is not live (for the sweeper); None if it is live,
        gone or past intake."""
        with self._session() as session:
            row = session.scalars(sa.select(Dossier).where(Dossier.code == code).with_for_update()).one_or_none()
            if row is None or row.state != DossierState.receiving.value:
                return None
            now = utcnow()
            held = session.get(Attempt, row.lease_attempt) if row.lease_attempt else None
            if _is_live(held, now, holder_alive) or (held is None and row.created_at > now - lease_for):
                return None  # a reservation without a lease gets one lease's time to finish
            if held is not None:
                self._supersede(session, held, now, f"swept by attempt {attempt}")
            row.lease_attempt = attempt
            mine = self._add_attempt(session, attempt, "sweep", code, holder, actor, now + lease_for)
            session.flush()
            return AttemptRecord.model_validate(mine)

    # -- the ledger of stored versions

    def intend(self, attempt: str, items: Iterable[tuple[str, str | None]], *, dossier_code: str | None) -> None:
        """Enter the keys ``attempt`` is about to write (with their artifact names) as ``pending``.

        Refused (InProgressElsewhere) once the attempt no longer holds its work, so a superseded writer
        stops before it writes.
        """
        with self._session() as session:
            self._held(session, attempt)
            now = utcnow()
            for key, artifact in items:
                session.add(StoredVersion(
                    key=key, attempt=attempt, dossier_code=dossier_code, artifact=artifact,
                    record_class=object_keys.record_class(key), status="pending", created_at=now, updated_at=now,
                ))

    def ledger(
        self,
        *,
        dossier_code: str | None = None,
        attempt: str | None = None,
        statuses: Iterable[VersionStatus] | None = None,
        unlocked: bool = False,
    ) -> list[StoredVersionRecord]:
        """Ledger entries, oldest first, filtered by dossier, attempt, status, or not yet locked."""
        stmt = sa.select(StoredVersion).order_by(StoredVersion.id)
        if dossier_code is not None:
            stmt = stmt.where(StoredVersion.dossier_code == dossier_code)
        if attempt is not None:
            stmt = stmt.where(StoredVersion.attempt == attempt)
        if statuses is not None:
            stmt = stmt.where(StoredVersion.status.in_(list(statuses)))
        if unlocked:
            stmt = stmt.where(StoredVersion.retain_until.is_(None))
        with self._session() as session:
            return [StoredVersionRecord.model_validate(r) for r in session.scalars(stmt)]

    def ledger_removed(self, ids: Iterable[int]) -> None:
        """Mark ledger entries ``removed`` (their versions are gone from the store); final ones are never touched."""
        ids = list(ids)
        if not ids:
            return
        with self._session() as session:
            session.execute(
                sa.update(StoredVersion)
                .where(StoredVersion.id.in_(ids), StoredVersion.status != "final")
                .values(status="removed", updated_at=utcnow())
            )

    def ledger_locked(self, entry: int, *, mode: str, until: datetime, version_id: str | None = None) -> None:
        """Record that a ledger entry's version is locked (and, for an entry made before versions, which one)."""
        with self._session() as session:
            row = session.get(StoredVersion, entry)
            if row is None:
                return
            row.lock_mode, row.retain_until, row.updated_at = mode, until, utcnow()
            if version_id is not None and row.version_id is None:
                row.version_id = version_id

    def adopt_version(self, code: str, name: str, *, version_id: str) -> None:
        """Name the version an artifact recorded before versions is (fsck repair): artifact and ledger."""
        with self._session() as session:
            art = session.scalars(
                sa.select(Artifact).where(Artifact.dossier_code == code, Artifact.name == name)
            ).one_or_none()
            if art is None or art.version_id is not None:
                return
            art.version_id = version_id
            row = session.scalars(
                sa.select(StoredVersion).where(
                    StoredVersion.dossier_code == code, StoredVersion.key == art.object_key,
                    StoredVersion.status == "final", StoredVersion.version_id.is_(None),
                )
            ).first()
            if row is not None:
                row.version_id = version_id
                row.updated_at = utcnow()

    def record_final(self, code: str | None, infos: Iterable[tuple[str | None, ObjectInfo]]) -> None:
        """Enter versions as ``final`` in the ledger without naming them as artifacts (fsck adopting what the
        registry names but the ledger lacks)."""
        with self._session() as session:
            now = utcnow()
            for name, info in infos:
                session.add(StoredVersion(
                    key=info.key, version_id=info.version_id, attempt=info.attempt, dossier_code=code,
                    artifact=name, record_class=object_keys.record_class(info.key), status="final",
                    sha256=info.sha256, size=info.size, created_at=now, updated_at=now,
                ))

    # -- the audit log

    def audit(self, action: str, *, actor: str, dossier_code: str | None = None, attempt: str | None = None,
              note: str | None = None) -> None:
        """Append to the audit log."""
        with self._session() as session:
            session.add(AuditEntry(at=utcnow(), actor=actor, action=action, dossier_code=dossier_code,
                                   attempt=attempt, note=note))

    def audit_log(self, *, dossier_code: str | None = None) -> list[AuditRecord]:
        stmt = sa.select(AuditEntry).order_by(AuditEntry.id)
        if dossier_code is not None:
            stmt = stmt.where(AuditEntry.dossier_code == dossier_code)
        with self._session() as session:
            return [AuditRecord.model_validate(r) for r in session.scalars(stmt)]

    def finalize_intake(
        self,
        code: str,
        *,
        state: DossierState,
        intake_status: str,
        documents: list[DocumentInfo],
        artifacts: list[tuple[str, ObjectInfo]],
        receipt: dict[str, Any],
        actor: str,
        at: datetime | None = None,
        attempt: str | None = None,
        handover_note: str | None = None,
    ) -> DossierRecord:
        """Close intake in one transaction: documents, artifacts (final in the ledger), receipt, state, an event.

        With ``attempt``, only while that attempt holds the reservation (InProgressElsewhere otherwise);
        the lease ends with it. ``at`` (default: now) is when intake ended; given by imports and tests.
        A handed-over dossier (``handover_note``, its audit line) lands in the state it was handed over in
        (any but ``receiving``), with a ``handover`` event and a ``handed_over`` line in the audit log.
        """
        state = DossierState(state)
        if state not in INTAKE_STATES and (handover_note is None or state == DossierState.receiving):
            raise InvalidState(f"intake cannot end in state {state.value!r}")
        with self._session() as session:
            row = self._load(session, code, lock=True)
            if row.state != DossierState.receiving.value:
                raise InvalidState(
                    f"dossier {code} is {row.state!r}, not 'receiving'; intake already finalized"
                )
            if attempt is not None:
                mine = self._held(session, attempt)
                mine.state, mine.ended_at = "committed", utcnow()
            elif row.lease_attempt is not None and _is_live(session.get(Attempt, row.lease_attempt), utcnow(), None):
                raise InProgressElsewhere(
                    f"dossier {code} is reserved by attempt {row.lease_attempt}",
                    "Hồ sơ này đang được xử lý ở nơi khác.",
                )
            now = at or utcnow()
            row.lease_attempt = None
            _record_versions(session, code, artifacts, utcnow())
            row.documents.clear()
            row.artifacts.clear()
            session.flush()  # delete old rows before inserting ones with the same unique names
            for position, doc in enumerate(documents, start=1):
                row.documents.append(
                    Document(
                        position=position,
                        doc_type=doc.type,
                        pages=list(doc.pages),
                        confidence=doc.confidence,
                        fields=dict(doc.fields),
                        field_confidence=dict(doc.field_confidence),
                    )
                )
            row.artifacts.extend(_artifact_rows(artifacts, now).values())
            row.events.append(Event(
                at=now, actor=actor, from_state=row.state, to_state=state.value,
                action="intake" if handover_note is None else "handover", note=handover_note,
            ))
            if handover_note is not None:
                session.add(AuditEntry(at=now, actor=actor, action="handed_over", dossier_code=code, attempt=attempt,
                                       note=handover_note))
            row.state = state.value
            row.intake_status = intake_status
            row.receipt_json = to_jsonable_python(receipt)
            row.completed_at = now
            row.updated_at = now
            return self._reload(session, code)

    def correct_documents(
        self,
        code: str,
        receipt: dict[str, Any],
        documents: list[DocumentInfo],
        *,
        actor: str,
        role: Role,
        note: str,
        detail: dict[str, Any],
        allowed_from: set[DossierState],
        at: datetime | None = None,
    ) -> DossierRecord:
        """Replace the dossier's documents and receipt after a correction by hand, with an event (``correct``)
        that keeps the state; InvalidState unless the dossier is in one of ``allowed_from``."""
        with self._session() as session:
            row = self._load(session, code, lock=True)
            current = DossierState(row.state)
            if current not in allowed_from:
                raise InvalidState(f"dossier {code} is {current.value!r}; documents can be corrected only in "
                                   f"{sorted(s.value for s in allowed_from)}")
            now = at or utcnow()
            row.documents.clear()
            session.flush()
            for position, doc in enumerate(documents, start=1):
                row.documents.append(Document(
                    position=position, doc_type=doc.type, pages=list(doc.pages), confidence=doc.confidence,
                    fields=dict(doc.fields), field_confidence=dict(doc.field_confidence),
                ))
            row.receipt_json = receipt
            row.events.append(Event(
                at=now, actor=actor, from_state=current.value, to_state=current.value, action="correct", note=note,
                role=Role(role).value, detail=to_jsonable_python(detail),
            ))
            row.updated_at = now
            return self._reload(session, code)

    def discard(self, code: str, *, attempt: str | None = None, actor: str = "hoso", note: str | None = None) -> None:
        """Delete a dossier still in ``receiving`` (a failed intake); InvalidState otherwise.

        With ``attempt``, only while that attempt holds the reservation (InProgressElsewhere otherwise). The
        audit log keeps the discard, which outlives the dossier's own events.
        """
        with self._session() as session:
            row = self._load(session, code, lock=True)
            if row.state != DossierState.receiving.value:
                raise InvalidState(
                    f"dossier {code} is {row.state!r}; only 'receiving' dossiers can be discarded"
                )
            if attempt is not None:
                mine = self._held(session, attempt)
                mine.state, mine.ended_at = "rolled_back", utcnow()
            session.add(AuditEntry(at=utcnow(), actor=actor, action="reservation_discarded", dossier_code=code,
                                   attempt=attempt, note=note))
            session.delete(row)

    def transition(
        self,
        code: str,
        to_state: DossierState,
        *,
        actor: str,
        action: str,
        note: str | None = None,
        artifacts: Iterable[tuple[str, ObjectInfo]] = (),
        allowed_from: set[DossierState] | None = None,
        at: datetime | None = None,
        role: Role | None = None,
        detail: dict[str, Any] | None = None,
        guard: Callable[[Session, Dossier], None] | None = None,
    ) -> DossierRecord:
        """Move a dossier to ``to_state`` (adding/replacing artifacts by name) and log an event.

        Without ``allowed_from`` the :data:`DEFAULT_TRANSITIONS` table decides. ``at`` defaults to now.
        ``role`` and ``detail`` (JSON-ready) go into the event; ``guard`` runs in the transaction, with the
        dossier's row locked, before anything changes: it raises to refuse (storage/identity.py checks and
        ends a step's claim there).
        """
        to_state = DossierState(to_state)
        with self._session() as session:
            row = self._load(session, code, lock=True)
            if guard is not None:
                guard(session, row)
            current = DossierState(row.state)
            allowed = (
                {DossierState(s) for s in allowed_from}
                if allowed_from is not None
                else {s for s, targets in DEFAULT_TRANSITIONS.items() if to_state in targets}
            )
            if current not in allowed:
                raise InvalidState(
                    f"dossier {code} is {current.value!r}; {action!r} to {to_state.value!r} needs one of "
                    f"{sorted(s.value for s in allowed)}"
                )
            now = at or utcnow()
            artifacts = list(artifacts)
            new = _artifact_rows(artifacts, now)
            if new:
                stale = [a for a in row.artifacts if a.name in new]
                for a in stale:
                    row.artifacts.remove(a)
                session.flush()
                row.artifacts.extend(new.values())
                _record_versions(session, code, artifacts, utcnow())
            row.events.append(
                Event(
                    at=now,
                    actor=actor,
                    from_state=current.value,
                    to_state=to_state.value,
                    action=action,
                    note=note,
                    role=None if role is None else Role(role).value,
                    detail=None if detail is None else to_jsonable_python(detail),
                )
            )
            row.state = to_state.value
            if to_state == DossierState.returned:
                row.returned_at = now
            row.updated_at = now
            return self._reload(session, code)

    def record_batch_item(
        self,
        batch_id: str,
        input_name: str,
        *,
        outcome: BatchOutcome,
        input_sha256: str | None = None,
        dossier_code: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Append one line of a batch run's outcome."""
        if outcome not in ("processed", "already_done", "failed"):
            raise ValueError(f"unknown batch outcome {outcome!r}")
        with self._session() as session:
            session.add(
                BatchItem(
                    batch_id=batch_id,
                    input_name=input_name,
                    input_sha256=input_sha256,
                    outcome=outcome,
                    dossier_code=dossier_code,
                    reason=reason,
                    at=utcnow(),
                )
            )

    def record_handover(
        self,
        batch_id: str,
        artifact: ObjectInfo,
        *,
        totals: dict[str, int],
        summary: dict[str, Any],
        actor: str,
    ) -> HandoverRecordInfo:
        """Record an archive batch's signed hand-over record (its version final in the ledger), once per batch."""
        with self._session() as session:
            now = utcnow()
            if session.get(HandoverRecordRow, batch_id) is not None:
                raise InvalidState(f"batch {batch_id} has its hand-over record already")
            _record_versions(session, None, [("handover", artifact)], now)
            row = HandoverRecordRow(
                batch_id=batch_id, object_key=artifact.key, version_id=artifact.version_id, sha256=artifact.sha256,
                size=artifact.size, rows=totals["rows"], handed_over=totals["handed_over"],
                already_done=totals["already_done"], failed=totals["failed"], summary=to_jsonable_python(summary),
                actor=actor, created_at=now,
            )
            session.add(row)
            session.add(AuditEntry(at=now, actor=actor, action="handover_record", note=f"{batch_id}: {artifact.key}"))
            session.flush()
            return HandoverRecordInfo.model_validate(row)

    def handover_record(self, batch_id: str) -> HandoverRecordInfo | None:
        with self._session() as session:
            row = session.get(HandoverRecordRow, batch_id)
            return None if row is None else HandoverRecordInfo.model_validate(row)

    def batch_items(self, batch_id: str) -> list[BatchItemRecord]:
        """The outcomes recorded for ``batch_id``, in recording order."""
        with self._session() as session:
            rows = session.scalars(
                sa.select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.id)
            )
            return [BatchItemRecord.model_validate(r) for r in rows]
