"""The dossier registry: codes, states, documents, artifacts and the audit trail (SQLAlchemy 2).

SQLite by default, PostgreSQL for shared deployments. Every public method is one transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
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

from pipeline.core.errors import DossierNotFound, InvalidState, StorageFailed
from pipeline.core.models import DocumentInfo, DossierState, Role

if TYPE_CHECKING:
    from pipeline.core.settings import Settings
    from storage.objects import ObjectInfo

BatchOutcome = Literal["processed", "already_done", "failed"]

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
    documents: list[DocumentRecord] = Field(default_factory=list)
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    events: list[EventRecord] = Field(default_factory=list)

    @field_validator("artifacts", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        """The row's list of artifacts, keyed by name."""
        return value if isinstance(value, dict) else {a.name: a for a in value}


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
        )
    return rows


# --- the registry -------------------------------------------------------------------------------


class Registry:
    """Dossier registry on a SQLAlchemy URL; tables are created if missing.

    ``timezone`` decides the calendar day in dossier codes (default: ``received_at``'s own zone).
    """

    def __init__(self, url: str, *, timezone: str | None = None) -> None:
        self.url = url
        self._tz = ZoneInfo(timezone) if timezone else None
        try:
            parsed = make_url(url)
        except exc.ArgumentError as err:
            raise StorageFailed(f"invalid database URL {url!r}: {err}") from err
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self.engine = self._make_engine(parsed)
        self._create_tables(parsed)

    def _create_tables(self, url: sa.URL) -> None:
        import storage.identity  # noqa: F401  (users, tokens, lookup secrets and claims live on Base too)

        for attempt in (1, 2):
            try:
                Base.metadata.create_all(self.engine)
                return
            except exc.OperationalError as err:
                failure: exc.SQLAlchemyError = err
                break
            except exc.SQLAlchemyError as err:
                # Two processes creating the tables at once: the loser's second look finds them.
                failure = err
                if attempt == 1:
                    time.sleep(0.2)
        self.engine.dispose()
        raise StorageFailed(
            f"registry database {url.render_as_string(hide_password=True)} unavailable: {failure}",
            "Không kết nối được cơ sở dữ liệu hồ sơ.",
        ) from failure

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry at ``HOSO_DATABASE_URL`` (default: SQLite in the data folder)."""
        return cls(settings.resolved_database_url, timezone=settings.timezone)

    def _make_engine(self, url: sa.URL) -> Engine:
        if not self._sqlite:
            return sa.create_engine(url, pool_pre_ping=True)
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

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
                    day = self._code_day(received_at)
                    seq = self._next_sequence(session, agency_code, day)
                    code = f"{agency_code}-{day}-{seq:04d}"
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
                    )
                    row.events.append(
                        Event(at=now, actor=actor, from_state=None, to_state=row.state, action="reserve")
                    )
                    session.add(row)
                    return self._reload(session, code)
            except exc.IntegrityError:
                # Another process reserved the same input between our lookup and insert
                # (the sequence increment rolled back with it): return theirs.
                continue
        raise StorageFailed(f"could not reserve a dossier code for input {input_sha256[:12]}… ({procedure})")

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
    ) -> DossierRecord:
        """Close intake in one transaction: documents, artifacts, receipt, state and an event.

        ``at`` (default: now) is when intake ended; given explicitly by imports and tests.
        """
        state = DossierState(state)
        if state not in INTAKE_STATES:
            raise InvalidState(f"intake cannot end in state {state.value!r}")
        with self._session() as session:
            row = self._load(session, code, lock=True)
            if row.state != DossierState.receiving.value:
                raise InvalidState(
                    f"dossier {code} is {row.state!r}, not 'receiving'; intake already finalized"
                )
            now = at or utcnow()
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
            row.events.append(
                Event(at=now, actor=actor, from_state=row.state, to_state=state.value, action="intake")
            )
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

    def discard(self, code: str) -> None:
        """Delete a dossier still in ``receiving`` (a failed intake); InvalidState otherwise."""
        with self._session() as session:
            row = self._load(session, code, lock=True)
            if row.state != DossierState.receiving.value:
                raise InvalidState(
                    f"dossier {code} is {row.state!r}; only 'receiving' dossiers can be discarded"
                )
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
            new = _artifact_rows(artifacts, now)
            if new:
                stale = [a for a in row.artifacts if a.name in new]
                for a in stale:
                    row.artifacts.remove(a)
                session.flush()
                row.artifacts.extend(new.values())
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

    def batch_items(self, batch_id: str) -> list[BatchItemRecord]:
        """The outcomes recorded for ``batch_id``, in recording order."""
        with self._session() as session:
            rows = session.scalars(
                sa.select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.id)
            )
            return [BatchItemRecord.model_validate(r) for r in rows]
