"""Decision 766 indicators over dossiers written through the registry API with explicit times."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from support.cli import Hoso

from pipeline.core.models import DossierState
from pipeline.domain.deadlines import due_date
from pipeline.domain.stats import compute_stats
from storage.objects import ObjectInfo
from storage.records import holder_id, new_attempt_id
from storage.registry import LegacyIntake, Registry

TZ = "Asia/Ho_Chi_Minh"
VN = ZoneInfo(TZ)
JULY = (date(2025, 7, 1), date(2025, 7, 31))
AFTER = datetime(2025, 8, 10, 12, 0, tzinfo=VN)  # "now": the report is run after the period


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=VN)


class Desk:
    """Writes dossiers the way the desk and the clerk do, at chosen times."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.n = 0

    def receive(self, received: str, status: str = "accepted", *, digitised: bool = True, reused: bool = False,
                finalize: bool = True) -> str:
        self.n += 1
        received_at = at(received)
        record = self.registry.reserve(
            input_sha256=f"{self.n:064x}", input_name=f"d{self.n}.pdf", procedure="business_household_registration",
            procedure_code="1.001612", agency_code="000.00.00.H00", received_at=received_at,
            due_at=due_date(received_at, 3, TZ), applicant_id=None, actor="desk",
        )
        if not finalize:
            return record.code
        sources = ["scan", "reused"] if reused else ["scan"]
        artifacts = [("digitised", ObjectInfo(key=f"dossiers/{record.code}/digitised.pdf", size=1, sha256="a"))]
        state = {"accepted": DossierState.received, "needs_supplement": DossierState.needs_supplement,
                 "rejected": DossierState.rejected}[status]
        self.registry.finalize_intake(
            record.code, state=state, intake_status=status, documents=[],
            artifacts=artifacts if digitised else [], actor="desk", at=received_at,
            receipt={"documents": [{"type": "cccd", "pages": [], "source": s} for s in sources]},
        )
        return record.code

    def hand_over(self, received: str, due: str, state: DossierState, when: str = "2025-07-01 09:00") -> str:
        """A legacy dossier of an old unit, handed over at ``when`` in ``state`` (as an archive batch records it)."""
        self.n += 1
        code = f"000.21.00.H56-{at(received):%y%m%d}-{self.n:04d}"
        attempt = new_attempt_id()
        self.registry.claim_intake(
            input_sha256=f"{self.n:064x}", input_name=f"legacy{self.n}.pdf",
            procedure="business_household_registration",
            procedure_code="1.001612", agency_code="000.59.01.H56", received_at=at(received), due_at=at(due),
            applicant_id=None, actor="archive", attempt=attempt, holder=holder_id(), lease_for=timedelta(minutes=2),
            legacy=LegacyIntake(code, "000.21.00.H56", "batch-1"),
        )
        self.registry.finalize_intake(
            code, state=state, intake_status="accepted", documents=[], actor="archive", at=at(when), attempt=attempt,
            artifacts=[("digitised", ObjectInfo(key=f"dossiers/{code}/digitised.pdf", size=1, sha256="a"))],
            receipt={"documents": []}, handover_note="handed over from 000.21.00.H56 to 000.59.01.H56 by batch-1",
        )
        return code

    def move(self, code: str, to: DossierState, when: str, *, result: bool = False) -> None:
        arts = [("result", ObjectInfo(key=f"dossiers/{code}/result.pdf", size=1, sha256="b"))] if result else []
        allowed = {DossierState.received, DossierState.needs_supplement, DossierState.appraisal}
        self.registry.transition(code, to, actor="clerk", action=to.value, artifacts=arts, allowed_from=allowed,
                                 at=at(when))


@pytest.fixture
def registry(registry_url: str) -> Registry:
    """A registry holding one July of a small desk (expected outcomes in the comments)."""
    reg = Registry(registry_url, timezone=TZ)
    desk = Desk(reg)
    # A: due Fri 04/07 17:00, result Wed 02/07 → early; reused, e-result
    a = desk.receive("2025-07-01 09:00", reused=True)
    desk.move(a, DossierState.returned, "2025-07-02 10:00", result=True)
    # B: result on the due day before 17:00 → on time
    b = desk.receive("2025-07-01 10:00")
    desk.move(b, DossierState.returned, "2025-07-04 16:00", result=True)
    # C: result Mon 07/07 → late; a paper result (no e-result)
    c = desk.receive("2025-07-01 11:00")
    desk.move(c, DossierState.returned, "2025-07-07 09:00")
    # D: only a request to supplement, at intake → ends then → early
    desk.receive("2025-07-02 08:30", "needs_supplement")
    # E: still open, was due Tue 08/07 → late
    desk.receive("2025-07-03 09:00")
    # F: still open, due Mon 04/08 after the period's end → on time, open
    desk.receive("2025-07-30 09:00")
    # G: refused at the desk (nothing digitised) → early
    desk.receive("2025-07-15 09:00", "rejected", digitised=False)
    # J: due Thu 10/07; the citizen took 7 days to supplement, which does not count → early; reused
    j = desk.receive("2025-07-07 09:00", "needs_supplement", reused=True)
    desk.move(j, DossierState.received, "2025-07-14 09:00")
    desk.move(j, DossierState.returned, "2025-07-15 09:00", result=True)
    # K: two requests to supplement → late, though fast
    k = desk.receive("2025-07-21 09:00", "needs_supplement")
    desk.move(k, DossierState.received, "2025-07-21 10:00")
    desk.move(k, DossierState.needs_supplement, "2025-07-21 11:00")
    desk.move(k, DossierState.received, "2025-07-21 12:00")
    desk.move(k, DossierState.returned, "2025-07-21 13:00", result=True)
    # L: received 23:30 local on the last day (16:30 UTC) → in the period; open, on time
    desk.receive("2025-07-31 23:30")
    # outside: 30/06, 01/08 00:30 local (still 31/07 in UTC), and a reservation never finalized
    desk.receive("2025-06-30 09:00")
    desk.receive("2025-08-01 00:30")
    desk.receive("2025-07-10 09:00", finalize=False)
    return reg


def test_indicators_of_a_month(registry: Registry) -> None:
    stats = compute_stats(registry, *JULY, tz=TZ, now=AFTER)
    assert (stats.received, stats.digitised, stats.reused) == (10, 9, 2)
    assert (stats.completed, stats.e_results) == (5, 4)
    assert (stats.early, stats.on_time, stats.late, stats.open) == (4, 3, 3, 3)
    assert stats.digitisation_rate == 0.9
    assert stats.e_result_rate == 0.8
    assert stats.reuse_rate == 0.2
    assert (stats.early_rate, stats.on_time_rate, stats.late_rate) == (0.4, 0.3, 0.3)
    assert stats.on_time_or_early_rate == 0.7


def test_open_dossiers_end_at_the_report_time_within_the_period(registry: Registry) -> None:
    # E (received 03/07, due 08/07 17:00) is still open: on time while the report runs before it is due
    period = (date(2025, 7, 3), date(2025, 7, 8))  # E and J (J ended early)
    before = compute_stats(registry, *period, tz=TZ, now=at("2025-07-08 16:59"))
    assert (before.received, before.early, before.on_time, before.late, before.open) == (2, 1, 1, 0, 1)
    after = compute_stats(registry, *period, tz=TZ, now=at("2025-07-08 17:01"))
    assert (after.early, after.on_time, after.late) == (1, 0, 1)
    # a report for 03/07 alone ends at 03/07 24:00, when E was in progress on time
    third = compute_stats(registry, date(2025, 7, 3), date(2025, 7, 3), tz=TZ, now=AFTER)
    assert (third.on_time, third.late) == (1, 0)
    # a June report ends on 30/06 24:00: the dossier of 30/06 (due 03/07) is in progress on time
    june = compute_stats(registry, date(2025, 6, 1), date(2025, 6, 30), tz=TZ, now=AFTER)
    assert (june.received, june.on_time, june.late, june.open) == (1, 1, 0, 1)
    one_day = compute_stats(registry, date(2025, 7, 1), date(2025, 7, 1), tz=TZ, now=AFTER)
    assert (one_day.received, one_day.early, one_day.on_time, one_day.late) == (3, 1, 1, 1)  # A, B, C


def test_an_empty_period_has_no_rates(registry: Registry) -> None:
    stats = compute_stats(registry, date(2024, 1, 1), date(2024, 1, 31), tz=TZ, now=AFTER)
    assert stats.received == 0 and stats.reuse_rate is None and stats.late_rate is None
    with pytest.raises(ValueError):
        compute_stats(registry, date(2025, 7, 31), date(2025, 7, 1))


def test_handed_over_dossiers_count_by_their_original_dates_not_the_hand_over(registry_url: str) -> None:
    """Dossiers of May 2024 handed over on 01/07/2025: their hand-over is neither an end nor a request; those
    that ended before it (timeliness unknown here: the old unit's record) leave the early/on time/late counts."""
    registry = Registry(registry_url, timezone=TZ)
    desk = Desk(registry)
    own = desk.receive("2024-05-06 09:00")  # hoso's own: returned the next day → early
    desk.move(own, DossierState.returned, "2024-05-07 09:00", result=True)
    desk.hand_over("2024-05-23 09:15", "2024-05-28 17:00", DossierState.returned)  # ended before the hand-over
    desk.hand_over("2024-05-24 09:00", "2024-05-29 17:00", DossierState.needs_supplement)  # still waiting: ended
    desk.hand_over("2024-05-27 09:00", "2024-06-28 17:00", DossierState.appraisal)  # open at 31/05, not due: on time
    late = desk.hand_over("2024-05-28 09:00", "2024-06-03 17:00", DossierState.appraisal)  # returned here: late
    desk.move(late, DossierState.returned, "2025-07-10 09:00", result=True)

    may = compute_stats(registry, date(2024, 5, 1), date(2024, 5, 31), tz=TZ, now=AFTER)
    assert (may.received, may.digitised, may.completed, may.e_results) == (5, 5, 3, 2)
    assert (may.handed_over_ended, may.timed) == (2, 3)
    assert (may.early, may.on_time, may.late, may.open) == (1, 1, 1, 1)
    assert (may.early_rate, may.on_time_rate, may.late_rate) == (0.3333, 0.3333, 0.3333)
    assert may.on_time_or_early_rate == 0.6667
    # Not received on the hand-over day: nothing of them in July 2025.
    july = compute_stats(registry, *JULY, tz=TZ, now=AFTER)
    assert (july.received, july.late, july.timed) == (0, 0, 0)


def test_a_dossier_handed_over_waiting_on_the_citizen_counts_the_old_request(registry_url: str) -> None:
    """The old unit's request counts as one (one more here is late); the wait from the hand-over to the
    supplement is the citizen's time, not counted."""
    registry = Registry(registry_url, timezone=TZ)
    desk = Desk(registry)
    once = desk.hand_over("2025-06-30 09:00", "2025-07-01 17:00", DossierState.needs_supplement)
    desk.move(once, DossierState.received, "2025-07-03 09:00")  # waited 2 days from the hand-over
    desk.move(once, DossierState.returned, "2025-07-03 10:00", result=True)  # 07-01 10:00 without the wait
    twice = desk.hand_over("2025-06-30 10:00", "2025-07-10 17:00", DossierState.needs_supplement)
    desk.move(twice, DossierState.received, "2025-07-02 09:00")
    desk.move(twice, DossierState.needs_supplement, "2025-07-02 10:00")
    desk.move(twice, DossierState.received, "2025-07-02 11:00")
    desk.move(twice, DossierState.returned, "2025-07-02 12:00", result=True)
    june = compute_stats(registry, date(2025, 6, 30), date(2025, 6, 30), tz=TZ, now=AFTER)
    assert (june.received, june.handed_over_ended, june.timed) == (2, 0, 2)
    assert (june.early, june.on_time, june.late) == (0, 1, 1)


@pytest.mark.slow  # a `hoso` run
def test_hoso_stats_prints_the_table(tmp_path: Path) -> None:
    data = tmp_path / "var"
    registry = Registry(f"sqlite:///{data / 'registry.db'}", timezone=TZ)
    desk = Desk(registry)
    yesterday = (datetime.now(VN) - timedelta(days=1)).strftime("%Y-%m-%d")
    code = desk.receive(f"{yesterday} 09:00", reused=True)
    desk.receive(f"{yesterday} 10:00")
    desk.move(code, DossierState.returned, f"{yesterday} 11:00", result=True)
    hoso = Hoso(data)
    table = hoso("stats", "--from", yesterday, "--to", yesterday)
    assert table.returncode == 0, table.stderr
    assert "Tỷ lệ khai thác, sử dụng lại dữ liệu số hóa (4.3)" in table.stdout
    assert "50.0 %" in table.stdout and "1/2" in table.stdout
    backwards = hoso("stats", "--from", yesterday, "--to", "2000-01-01")
    assert backwards.returncode == 2 and "--to is before --from" in backwards.stderr
