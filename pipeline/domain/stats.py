"""The indicators provinces are scored on (Decision 766/QĐ-TTg, domain.md §3), computed from the registry.

Population: the dossiers *received* in the period — ``received_at`` from ``start`` 00:00 to ``end`` 24:00
local time, every intake outcome (accepted, needs supplement, rejected), not reservations in progress.

- **digitisation rate** (4.2, first half): dossiers with a signed digitised copy (artifact ``digitised``)
  / dossiers received.
- **e-result rate** (4.1): dossiers completed with an electronic result (artifact ``result``) / dossiers
  completed (đã xử lý xong, ``result_ready``, or returned).
- **reuse rate** (4.3): dossiers with at least one component reused from the citizen's electronic data
  store (a receipt document with ``source = "reused"``) / dossiers received.
- **early / on time / late** (2.1): a dossier *ends* at the first of: result ready (``result_ready``),
  returned, stopped, refused (``rejected``), withdrawn; a dossier whose only outcome is a request to
  supplement ends at that request; one still open ends at the end of the period (or now, if sooner).
  The citizen's supplement time (``needs_supplement`` → next state) is not counted. Then: **late** when
  the end is after the due time (``due_at``) or when more than one supplement was requested; **early**
  when it ends on a calendar day before the due day; **on time** otherwise — including dossiers still
  open and not yet due ("đang xử lý trong hạn"). 766 counts early and on time together
  (``on_time_or_early_rate``); the three rates sum to 1 over the dossiers timed (below).

Only events that change the state count as reaching one: the audit trail also records steps that leave
the dossier where it is (forms issued, a payment, an apology), which are neither ends nor requests.

**Dossiers handed over** (a legacy archive, ``hoso reprocess --agency-map``) count by their original dates: in
the period their old unit received them in (``received_at`` from the manifest), against their original
``due_at``. The hand-over itself (its ``handover`` event, "from receiving to <state>" at the hand-over time) is
not a step of the dossier's life: the state it names was reached earlier, by the old unit, at a time hoso does
not know. So it is never an end nor a request at the hand-over time (which would make every dossier handed
over after its due day late, and put its end in the wrong period). What each contributes:

- received, digitised, reused: like any dossier received on ``received_at`` (hoso holds its digitised copy);
  completed and e-results: as it stands (one handed over with its result decided — sealing, result ready —
  carries the old unit's paper result: completed, without an e-result; pipeline/usecases/lifecycle.py);
- handed over **in progress** (received … sealing): on the clock like any other from its original
  ``received_at`` to its original ``due_at``, ended by the steps taken here after the hand-over;
- handed over **waiting on the citizen**: the old unit's request counts as one request (more than one in
  all is late) and the wait from the hand-over until the citizen supplemented is not counted;
- handed over **already ended** (result ready, returned, stopped, refused, withdrawn — or still waiting on a
  supplement the old unit asked for): its end lies before the hand-over at an unknown time, so whether it
  was early, on time or late is the old unit's record (synced to the national portal by its own system), not
  hoso's. It is counted as ``handed_over_ended`` and left out of the early / on time / late counts, whose
  rates are over ``timed`` = received − handed_over_ended; a guess either way would skew the indicator.

A rate whose denominator is zero is ``None`` (shown as "—").
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.core.errors import ConfigurationError
from pipeline.core.models import DossierState
from storage import keys
from storage.registry import DossierRecord, EventRecord, Registry

Timeliness = Literal["early", "on_time", "late"]
ENDING_STATES = frozenset({
    DossierState.result_ready, DossierState.returned, DossierState.stopped, DossierState.rejected,
    DossierState.withdrawn,
})
COMPLETED_STATES = frozenset({DossierState.result_ready, DossierState.returned})
HANDOVER = "handover"  # the event of a dossier handed over (storage/registry.py: finalize_intake)


class ProvinceStats(BaseModel):
    start: date
    end: date
    received: int
    digitised: int
    completed: int
    e_results: int
    reused: int
    early: int
    on_time: int
    late: int
    open: int
    handed_over_ended: int = 0  # handed over already ended: timeliness unknown here, not in early/on time/late
    timed: int = 0  # the denominator of the timeliness rates: received − handed_over_ended
    digitisation_rate: float | None
    e_result_rate: float | None
    reuse_rate: float | None
    early_rate: float | None
    on_time_rate: float | None
    late_rate: float | None
    on_time_or_early_rate: float | None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _changes(record: DossierRecord) -> list[EventRecord]:
    """The dossier's state changes in its own life (not the hand-over: see the module docstring)."""
    return [e for e in record.events if e.from_state != e.to_state and e.action != HANDOVER]


def _reached(record: DossierRecord, states: frozenset[DossierState]) -> list[datetime]:
    """When the dossier entered one of ``states`` (state changes only), oldest first."""
    return sorted(e.at for e in _changes(record) if e.to_state in states)


def handover_event(record: DossierRecord) -> EventRecord | None:
    """The hand-over that brought a legacy dossier into hoso, if it was handed over."""
    return next((e for e in record.events if e.action == HANDOVER), None)


def ended_before_handover(record: DossierRecord) -> bool:
    """Whether the dossier was handed over already ended — in an ending state, or waiting on a supplement its
    old unit asked for and never moved since: its 766 end is before the hand-over, at a time hoso does not
    know."""
    handover = handover_event(record)
    if handover is None:
        return False
    if handover.to_state in ENDING_STATES:
        return True
    later = record.events[record.events.index(handover) + 1 :]  # the trail in the order it was written
    return handover.to_state == DossierState.needs_supplement and not any(
        e.from_state != e.to_state for e in later
    )


def dossier_end(record: DossierRecord, period_end: datetime) -> tuple[datetime, bool]:
    """When the dossier ended for 766 purposes, and whether it is still open (then: ``period_end``).
    Not for a dossier :func:`ended_before_handover` (its end is not known here)."""
    endings = _reached(record, ENDING_STATES)
    if endings:
        return endings[0], False
    requests = _reached(record, frozenset({DossierState.needs_supplement}))
    if record.state == DossierState.needs_supplement and requests:
        return requests[0], False
    return max(period_end, record.received_at), True


def supplement_time(record: DossierRecord, end: datetime) -> timedelta:
    """Time the dossier waited on the citizen: from each supplement request to the next state change."""
    waited = timedelta()
    events = sorted(record.events, key=lambda e: e.at)
    for i, ev in enumerate(events):
        if ev.to_state != DossierState.needs_supplement or ev.from_state == ev.to_state or ev.at >= end:
            continue
        resumed = next((later.at for later in events[i + 1 :] if later.to_state != ev.to_state), None)
        if resumed is not None:
            waited += min(resumed, end) - ev.at
    return waited


def timeliness(record: DossierRecord, period_end: datetime, tz: str) -> tuple[Timeliness | None, bool]:
    """Early, on time or late (see the module docstring), and whether the dossier is still open; None for a
    dossier handed over already ended (its timeliness is its old unit's record)."""
    if ended_before_handover(record):
        return None, False
    end, still_open = dossier_end(record, period_end)
    requests = len(_reached(record, frozenset({DossierState.needs_supplement})))
    handover = handover_event(record)
    if handover is not None and handover.to_state == DossierState.needs_supplement:
        requests += 1  # the old unit's request, before the hand-over
    effective = end - supplement_time(record, end)
    if requests > 1 or effective > record.due_at:
        return "late", still_open
    zone = ZoneInfo(tz)
    if not still_open and effective.astimezone(zone).date() < record.due_at.astimezone(zone).date():
        return "early", still_open
    return "on_time", still_open


def _reused(record: DossierRecord) -> bool:
    docs = (record.receipt_json or {}).get("documents") or []
    return any(isinstance(d, dict) and d.get("source") == "reused" for d in docs)


def compute_stats(
    registry: Registry, start: date, end: date, *, tz: str = "Asia/Ho_Chi_Minh", now: datetime | None = None
) -> ProvinceStats:
    """The indicators over dossiers received from ``start`` to ``end`` (both days included)."""
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    zone = ZoneInfo(tz)
    since = datetime.combine(start, time(0), tzinfo=zone)
    until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone)
    period_end = min(until, now or datetime.now(zone))
    records = [
        r for r in registry.list_dossiers(since=since, until=until) if r.state != DossierState.receiving
    ]
    completed = [r for r in records if r.state in COMPLETED_STATES]
    counts: dict[str, int] = {"early": 0, "on_time": 0, "late": 0}
    still_open = ended_before = 0
    for r in records:
        kind, pending = timeliness(r, period_end, tz)
        if kind is None:
            ended_before += 1
            continue
        counts[kind] += 1
        still_open += pending
    received = len(records)
    timed = received - ended_before
    digitised = sum(1 for r in records if keys.DIGITISED in r.artifacts)
    e_results = sum(1 for r in completed if keys.RESULT in r.artifacts)
    reused = sum(1 for r in records if _reused(r))
    return ProvinceStats(
        start=start,
        end=end,
        received=received,
        digitised=digitised,
        completed=len(completed),
        e_results=e_results,
        reused=reused,
        early=counts["early"],
        on_time=counts["on_time"],
        late=counts["late"],
        open=still_open,
        handed_over_ended=ended_before,
        timed=timed,
        digitisation_rate=_rate(digitised, received),
        e_result_rate=_rate(e_results, len(completed)),
        reuse_rate=_rate(reused, received),
        early_rate=_rate(counts["early"], timed),
        on_time_rate=_rate(counts["on_time"], timed),
        late_rate=_rate(counts["late"], timed),
        on_time_or_early_rate=_rate(counts["early"] + counts["on_time"], timed),
    )


class Indicator(BaseModel):
    """One indicator as it is shown (pipeline/data/indicators.yaml)."""

    rate: str
    part: str | None = None  # None: early + on time
    whole: str
    label: str = Field(min_length=1)
    label_en: str = Field(min_length=1)
    chart: str | None = None
    chart_en: str | None = None

    @model_validator(mode="after")
    def _fields_exist(self) -> Indicator:
        fields = ProvinceStats.model_fields
        unknown = [f for f in (self.rate, self.part, self.whole) if f is not None and f not in fields]
        if unknown or (self.chart is None) != (self.chart_en is None):
            raise ValueError(f"indicator {self.rate}: unknown fields {unknown} or a chart label in one language only")
        return self

    def shown(self, lang: str = "vi") -> str:
        return self.label_en if lang == "en" else self.label

    def bar(self, lang: str = "vi") -> str | None:
        return self.chart_en if lang == "en" else self.chart


class IndicatorBook(BaseModel):
    """pipeline/data/indicators.yaml: the indicators in the order they are shown, and the chart's title."""

    title: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    indicators: list[Indicator] = Field(min_length=1)

    def chart_title(self, lang: str = "vi") -> str:
        return self.title_en if lang == "en" else self.title


@lru_cache(maxsize=1)
def indicator_book() -> IndicatorBook:
    """The indicators to show (package data, checked once per process)."""
    text = resources.files("pipeline").joinpath("data/indicators.yaml").read_text(encoding="utf-8")
    try:
        return IndicatorBook.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Invalid pipeline/data/indicators.yaml: {exc}",
                                 "Tệp chỉ số thống kê không hợp lệ; liên hệ quản trị.") from exc


def table_rows(stats: ProvinceStats, lang: str = "vi") -> list[tuple[str, str, str]]:
    """(indicator, rate as a percentage, part / whole) for printing, in ``lang`` (vi or en)."""
    rows = []
    for ind in indicator_book().indicators:
        rate = getattr(stats, ind.rate)
        whole = getattr(stats, ind.whole)
        part = stats.early + stats.on_time if ind.part is None else getattr(stats, ind.part)
        rows.append((ind.shown(lang), "—" if rate is None else f"{rate * 100:.1f} %", f"{part}/{whole}"))
    return rows
