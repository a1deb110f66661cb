"""Working-day deadlines with real Vietnamese holidays (Tết 2026, 30/4–1/5, 2/9, swapped Saturdays)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.core.errors import ConfigurationError
from pipeline.domain.deadlines import due_date, is_working_day, next_working_day

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def at(y: int, m: int, d: int, hh: int = 9, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=VN)


def test_working_days_calendar() -> None:
    assert is_working_day(date(2026, 2, 13))  # Friday before Tết
    for d in range(16, 21):  # Tết Bính Ngọ: Mon 16 – Fri 20 Feb 2026
        assert not is_working_day(date(2026, 2, d))
    assert not is_working_day(date(2026, 2, 21))  # Saturday
    assert not is_working_day(date(2025, 9, 2)) and not is_working_day(date(2025, 9, 1))
    assert is_working_day(date(2025, 4, 26))  # Saturday made a working day (swap for Fri 2 May 2025)
    assert not is_working_day(date(2025, 5, 2))
    assert next_working_day(date(2026, 2, 13)) == date(2026, 2, 23)


def test_counts_working_days_across_tet() -> None:
    assert due_date(at(2026, 2, 13, 10), 3) == at(2026, 2, 25, 17)


def test_same_day_procedures_and_the_1500_cutoff() -> None:
    assert due_date(at(2026, 2, 12, 14, 59), 0) == at(2026, 2, 12, 17)
    assert due_date(at(2026, 2, 12, 15, 0), 0) == at(2026, 2, 12, 17)
    assert due_date(at(2026, 2, 12, 16), 0) == at(2026, 2, 13, 17)
    assert due_date(at(2026, 2, 13, 16), 0) == at(2026, 2, 23, 17)  # after cut-off on the eve of Tết
    assert due_date(at(2026, 3, 7, 9), 0) == at(2026, 3, 9, 17)  # received on a Saturday


def test_reunification_and_labour_day() -> None:
    assert due_date(at(2026, 4, 29), 2) == at(2026, 5, 5, 17)


def test_national_day() -> None:
    assert due_date(at(2025, 8, 29), 1) == at(2025, 9, 3, 17)


def test_weekend_reception_counts_from_next_working_day() -> None:
    assert due_date(at(2026, 3, 7, 11), 3) == at(2026, 3, 12, 17)
    assert due_date(at(2026, 3, 9, 8), 3) == at(2026, 3, 12, 17)


def test_swapped_saturday_is_a_working_day() -> None:
    assert due_date(at(2025, 4, 25), 1) == at(2025, 4, 26, 17)


def test_time_zones() -> None:
    # 09:30 UTC on Thu 12 Feb 2026 is 16:30 in Hà Nội: after the cut-off.
    got = due_date(datetime(2026, 2, 12, 9, 30, tzinfo=UTC), 0)
    assert got == at(2026, 2, 13, 17)
    assert got.utcoffset() is not None and got.tzinfo == VN
    assert due_date(datetime(2026, 2, 12, 9, 30), 0) == at(2026, 2, 12, 17)  # naive = local
    with pytest.raises(ConfigurationError):
        due_date(at(2026, 2, 12), 1, tz="Mars/Olympus")
    with pytest.raises(ValueError):
        due_date(at(2026, 2, 12), -1)
