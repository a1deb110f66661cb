"""The work queue of an archive batch: which inputs are left, who is on each, and until when.

Table ``batch_claims`` on the registry's declarative base (in the registry's database, so every worker of a
batch sees the same queue): one row per input of a batch, ``queued`` → ``claimed`` (by a worker process, under
a lease it renews) → ``done``. A worker that dies leaves its claim behind; once the lease has expired — or at
once, when the holder's process is known to be gone (:func:`storage.records.holder_alive`) — another worker
takes the input again. Finishing writes the batch item (``batch_items``) and ends the claim in one
transaction, and only for the holder of the claim: every input of a batch is accounted for exactly once.
An input whose workers died ``max_tries`` times is finished as failed rather than taken again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.registry import Base, BatchItem, BatchOutcome, HolderAlive, Registry, UTCDateTime, utcnow

ClaimState = Literal["queued", "claimed", "done"]
#: Inputs inserted per statement when a batch is queued.
CHUNK = 500


class BatchClaim(Base):
    __tablename__ = "batch_claims"
    __table_args__ = (sa.Index("ix_batch_claims_state", "batch_id", "state"),)

    batch_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    holder: Mapped[str | None] = mapped_column(sa.String(255))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tries: Mapped[int] = mapped_column(sa.Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(sa.String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Progress:
    total: int
    queued: int
    claimed: int
    done: int

    @property
    def finished(self) -> bool:
        return self.done == self.total


class BatchQueue:
    """The queue of one registry's batches (every method is one transaction)."""

    def __init__(self, registry: Registry, *, holder_alive: HolderAlive | None = None, max_tries: int = 3) -> None:
        self.registry = registry
        self.holder_alive = holder_alive
        self.max_tries = max_tries

    def enqueue(self, batch_id: str, names: Iterable[str]) -> int:
        """Queue the inputs of ``batch_id`` not queued yet (re-running a batch id resumes it); how many were new."""
        wanted = list(dict.fromkeys(names))
        added = 0
        with self.registry.transaction() as session:
            known = set(session.scalars(sa.select(BatchClaim.name).where(BatchClaim.batch_id == batch_id)))
            fresh = [n for n in wanted if n not in known]
            now = utcnow()
            for start in range(0, len(fresh), CHUNK):
                session.add_all(
                    BatchClaim(batch_id=batch_id, name=n, state="queued", tries=0, updated_at=now)
                    for n in fresh[start : start + CHUNK]
                )
                session.flush()
            added = len(fresh)
        return added

    def claim(self, batch_id: str, holder: str, lease_for: timedelta) -> str | None:
        """Take the next input nobody holds (queued, or left by a worker whose lease expired or whose process
        is gone) for ``holder``; None when there is none now."""
        while True:
            with self.registry.transaction() as session:
                now = utcnow()
                row = self._next(session, batch_id, now)
                if row is None:
                    return None
                if row.tries >= self.max_tries:  # it took its workers down every time: record it, move on
                    self._finish(
                        session,
                        row,
                        "failed",
                        None,
                        None,
                        f"worker_lost: the worker processing it stopped {row.tries} times",
                        now,
                    )
                    continue
                row.state, row.holder, row.expires_at = "claimed", holder, now + lease_for
                row.tries += 1
                row.updated_at = now
                return row.name

    def _next(self, session: Session, batch_id: str, now: datetime) -> BatchClaim | None:
        mine = sa.select(BatchClaim).where(BatchClaim.batch_id == batch_id)
        # PostgreSQL: workers pass over each other's locked rows; SQLite's BEGIN IMMEDIATE serialises them anyway.
        skip = session.bind is not None and session.bind.dialect.name == "postgresql"
        free = mine.where(
            sa.or_(BatchClaim.state == "queued", sa.and_(BatchClaim.state == "claimed", BatchClaim.expires_at <= now))
        )
        row = session.scalars(free.order_by(BatchClaim.name).limit(1).with_for_update(skip_locked=skip)).one_or_none()
        if row is not None or self.holder_alive is None:
            return row
        held = session.scalars(mine.where(BatchClaim.state == "claimed").with_for_update(skip_locked=skip))
        return next((r for r in held if r.holder and self.holder_alive(r.holder) is False), None)

    def renew(self, batch_id: str, names: Iterable[str], holder: str, lease_for: timedelta) -> list[str]:
        """Extend ``holder``'s claims on ``names``; the names it no longer holds (taken over meanwhile)."""
        wanted = set(names)
        if not wanted:
            return []
        with self.registry.transaction() as session:
            now = utcnow()
            rows = session.scalars(
                sa.select(BatchClaim)
                .where(BatchClaim.batch_id == batch_id, BatchClaim.name.in_(wanted))
                .with_for_update()
            ).all()
            held = {r.name for r in rows if r.state == "claimed" and r.holder == holder}
            for r in rows:
                if r.name in held:
                    r.expires_at = now + lease_for
            return sorted(wanted - held)

    def release(self, batch_id: str, name: str, holder: str) -> None:
        """Give an input back to the queue (its work could not be finished now; not counted as a try)."""
        with self.registry.transaction() as session:
            row = session.get(BatchClaim, (batch_id, name), with_for_update=True)
            if row is not None and row.state == "claimed" and row.holder == holder:
                row.state, row.holder, row.expires_at = "queued", None, None
                row.tries = max(0, row.tries - 1)
                row.updated_at = utcnow()

    def finish(
        self,
        batch_id: str,
        name: str,
        holder: str,
        outcome: BatchOutcome,
        *,
        input_sha256: str | None = None,
        dossier_code: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Record the input's outcome (a batch item) and end the claim, if ``holder`` still holds it; False
        (and nothing recorded) if another worker took it over meanwhile."""
        with self.registry.transaction() as session:
            row = session.get(BatchClaim, (batch_id, name), with_for_update=True)
            if row is None or row.state != "claimed" or row.holder != holder:
                return False
            self._finish(session, row, outcome, input_sha256, dossier_code, reason, utcnow())
            return True

    @staticmethod
    def _finish(
        session: Session,
        row: BatchClaim,
        outcome: BatchOutcome,
        input_sha256: str | None,
        dossier_code: str | None,
        reason: str | None,
        now: datetime,
    ) -> None:
        row.state, row.outcome, row.expires_at, row.updated_at = "done", outcome, None, now
        session.add(
            BatchItem(
                batch_id=row.batch_id,
                input_name=row.name,
                input_sha256=input_sha256,
                outcome=outcome,
                dossier_code=dossier_code,
                reason=reason,
                at=now,
            )
        )

    def progress(self, batch_id: str) -> Progress:
        """How many inputs of the batch are queued, claimed and done."""
        with self.registry.transaction() as session:
            rows = session.execute(
                sa.select(BatchClaim.state, sa.func.count())
                .where(BatchClaim.batch_id == batch_id)
                .group_by(BatchClaim.state)
            )
            counts: Counter[str] = Counter({state: int(n) for state, n in rows})
        return Progress(sum(counts.values()), counts["queued"], counts["claimed"], counts["done"])
