"""Due dates in working days: Monday–Friday minus Vietnamese public holidays (domain.md §5)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from pipeline.core.errors import ConfigurationError

CUTOFF = time(15, 0)  # same-day procedures: received after 15:00 -> next working day (S54, S43)
CLOSE = time(17, 0)  # results are due by the end of the office day


@lru_cache(maxsize=64)
def _vn_year(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("VN", years=year)


def is_working_day(day: date) -> bool:
    """True on Monday–Friday that are not Vietnamese public holidays (incl. Tết and substitute days off).

    Weekend days the government turned into working days (swaps listed by ``holidays``) count as working.
    """
    cal = _vn_year(day.year)
    if day in cal:
        return False
    if day.weekday() < 5:
        return True
    return day in getattr(cal, "weekend_workdays", set())


def next_working_day(day: date) -> date:
    """The first working day strictly after ``day``."""
    day += timedelta(days=1)
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"Unknown time zone {tz!r}", f"Múi giờ không hợp lệ: {tz!r}.") from exc


def due_date(received_at: datetime, working_days: int, tz: str = "Asia/Ho_Chi_Minh") -> datetime:
    """When a dossier received at ``received_at`` is due, as a tz-aware datetime at 17:00 local time.

    ``working_days == 0`` means the same working day; received after the 15:00 cut-off (or on a day off)
    it is due the next working day. Otherwise the day of reception is not counted (Civil Code Art. 147):
    the result is due on the Nth working day after it; a dossier received on a day off counts as received
    on the next working day. A naive ``received_at`` is taken as local time in ``tz``.
    """
    if working_days < 0:
        raise ValueError("working_days must be >= 0")
    zone = _zone(tz)
    local = received_at.replace(tzinfo=zone) if received_at.tzinfo is None else received_at.astimezone(zone)
    day = local.date()
    if working_days == 0:
        if not is_working_day(day) or local.time() > CUTOFF:
            day = next_working_day(day)
    else:
        if not is_working_day(day):
            day = next_working_day(day)
        for _ in range(working_days):
            day = next_working_day(day)
    return datetime.combine(day, CLOSE, tzinfo=zone)
