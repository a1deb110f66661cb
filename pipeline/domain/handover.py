"""Hand-over of legacy dossiers (bàn giao hồ sơ) from the old district/provincial units to the new commune units.

A row of an archive batch's ``manifest.csv`` that carries any of :data:`HANDOVER_COLUMNS` hands a legacy
dossier over: :func:`parse_handover` checks it against the agency map (``old_code,new_code[,new_name]``,
:func:`load_agency_map`) and gives a :class:`Handover` — the dossier keeps its original code, its dates and
its state, and lands in the new unit — or a :class:`HandoverRowError` with the reason, which the batch
records as a failure. At the end of the batch the hand-over record (biên bản bàn giao, :class:`HandoverRecord`)
lists every row per old unit → new unit with counts by state and every failure with its reason; it is
rendered to PDF/A-2b (:func:`render_handover`, labels in ``pipeline/data/handover.yaml``) and signed with
PAdES like the one-stop forms (:func:`sign_handover`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, Field, ValidationError
from pyhanko.sign.fields import MDPPerm
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from pipeline.core.errors import ConfigurationError, InputCorrupt, InputMissing, InputTooLarge
from pipeline.core.inputs import open_regular
from pipeline.core.models import DossierState
from pipeline.domain.deadlines import CLOSE
from pipeline.domain.printing import (
    BOLD,
    ITALIC,
    REGULAR,
    PageLayout,
    SignatureBox,
    SignatureSlot,
    as_pdfa_2b,
    date_vi,
    local_time,
    markup,
    register_fonts,
)
from signing.levels import Level
from signing.pki import ROLE_TITLES
from signing.signers import KeySource, sign_pdf

__all__ = [
    "HANDOVER_COLUMNS",
    "AgencyMap",
    "AgencyUnit",
    "Handover",
    "HandoverEntry",
    "HandoverRecord",
    "HandoverRowError",
    "is_handover_row",
    "load_agency_map",
    "parse_handover",
    "render_handover",
    "sign_handover",
]

#: The manifest columns that make a row a hand-over (beside ``file,procedure``).
HANDOVER_COLUMNS = ("legacy_code", "received_at", "due_at", "state", "agency_code")
MAX_MAP_BYTES = 4 << 20
#: An agency code (QCVN 102 identifiers, e.g. ``000.00.00.H00``, ``H55.242``): dot-separated capitals and digits.
AGENCY_CODE = re.compile(r"[A-Z0-9]+(?:\.[A-Z0-9]+)*")
#: A dossier code of the 2018 framework (TT 01/2018 Art. 19): ``<agency code>-YYMMDD-<sequence>``.
#: ASCII digits only: ``\d`` alone also takes full-width or Arabic-Indic digits, another code for one dossier.
LEGACY_CODE = re.compile(r"(?P<agency>[A-Z0-9]+(?:\.[A-Z0-9]+)*)-(?P<day>\d{6})-(?P<seq>\d{4,6})", re.ASCII)
MAX_AGENCY = 40  # dossiers.agency_code
MAX_CODE = 64  # dossiers.code
MAX_UNIT_NAME = 200  # a line of the hand-over record
#: Dates a legacy archive can hold: the registry stores UTC, so year 1 east of UTC or 9999 west of it overflow.
EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
#: A dossier is handed over in any state but the desk's own reservation.
HANDOVER_STATES = tuple(s for s in DossierState if s != DossierState.receiving)

Outcome = Literal["handed_over", "already_done", "failed"]


class HandoverRowError(ValueError):
    """A manifest row that cannot be handed over; ``kind`` names the cause (``bad_legacy_code``, …)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def reason(self) -> str:
        """The batch's failure reason: ``handover_<kind>: <message>``."""
        return f"handover_{self.kind}: {self}"


# --- the agency map ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgencyUnit:
    code: str
    name: str | None = None


@dataclass(frozen=True)
class AgencyMap:
    """Old district/provincial agency codes → the new commune units that take their dossiers over."""

    units: Mapping[str, AgencyUnit]

    def successor(self, old_code: str) -> AgencyUnit | None:
        return self.units.get(old_code)


def _agency_ok(code: str) -> bool:
    return len(code) <= MAX_AGENCY and AGENCY_CODE.fullmatch(code) is not None


def load_agency_map(path: Path) -> AgencyMap:
    """``old_code,new_code[,new_name]`` (UTF-8 CSV, a header line optional) as an :class:`AgencyMap`.

    The whole file is refused (InputCorrupt, exit 5) when a line is not two or three cells, a code is not an
    agency code, or an old code is mapped twice to different units: a batch never hands over on a guess.
    """
    return parse_agency_map(read_agency_map(path, check=False), path.name)


def read_agency_map(path: Path, *, check: bool = True) -> str:
    """The agency map file's text (checked whole, as :func:`load_agency_map` does, unless ``check`` is off): what
    a batch hands its workers, which then need no copy of the file."""
    if not os.path.lexists(path):
        raise InputMissing(f"agency map {path} not found", f"Không tìm thấy tệp ánh xạ đơn vị: {path}")
    with open_regular(path) as raw:
        if os.fstat(raw.fileno()).st_size > MAX_MAP_BYTES:
            raise InputTooLarge(f"{path}: more than {MAX_MAP_BYTES >> 20} MB", "Tệp ánh xạ đơn vị quá lớn.")
        try:
            text = raw.read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _bad_map(path.name, f"not a UTF-8 CSV file ({exc})") from exc
    if check:
        parse_agency_map(text, path.name)
    return text


def parse_agency_map(text: str, label: str = "agency map") -> AgencyMap:
    """An agency map's CSV text (:func:`load_agency_map`) as an :class:`AgencyMap`; ``label`` names it in errors."""
    try:
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    except csv.Error as exc:
        raise _bad_map(label, f"not a UTF-8 CSV file ({exc})") from exc
    units: dict[str, AgencyUnit] = {}
    for line, row in enumerate(rows, start=1):
        cells = [unicodedata.normalize("NFC", c.strip()) for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line == 1 and cells[0].lower() == "old_code":
            continue
        if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
            raise _bad_map(label, f"line {line}: expected old_code,new_code[,new_name], got {len(cells)} cells")
        old, new = cells[0], cells[1]
        name = cells[2] if len(cells) == 3 and cells[2] else None
        if name is not None and (
            len(name) > MAX_UNIT_NAME or any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name)
        ):
            raise _bad_map(label, f"line {line}: the unit's name has control or invisible characters or is too long")
        for code in (old, new):
            if not _agency_ok(code):
                raise _bad_map(label, f"line {line}: {code!r} is not an agency code (e.g. 000.21.35.H56)")
        unit = AgencyUnit(new, name)
        if old in units and units[old] != unit:
            raise _bad_map(label, f"line {line}: {old} is mapped twice ({units[old].code}, {new})")
        units[old] = unit
    return AgencyMap(units)


def _bad_map(name: str, why: str) -> InputCorrupt:
    return InputCorrupt(
        f"agency map {name}: {why}",
        f"Tệp ánh xạ đơn vị không hợp lệ ({name}: cần CSV mã UTF-8, các cột old_code,new_code[,new_name]).",
    )


# --- one manifest row -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handover:
    """A legacy dossier handed over: its original code and dates, the state it is in, from and to which unit."""

    legacy_code: str
    from_agency: str
    to_agency: str
    to_agency_name: str | None
    received_at: dt.datetime
    due_at: dt.datetime | None  # None: the manifest gave none; the procedure's processing time decides
    state: DossierState
    batch_id: str

    @property
    def note(self) -> str:
        """The audit line of the hand-over."""
        return f"handed over from {self.from_agency} to {self.to_agency} by {self.batch_id}"


def is_handover_row(values: Mapping[str, str | None]) -> bool:
    """True when a manifest row carries any of the hand-over columns."""
    return any((values.get(c) or "").strip() for c in HANDOVER_COLUMNS)


_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y")


def _when(value: str, column: str, tz: ZoneInfo, day_time: dt.time) -> dt.datetime:
    """An ISO 8601 date-time (naive: local time in ``tz``), or a date (``YYYY-MM-DD``, ``DD/MM/YYYY``) at
    ``day_time`` local; between :data:`EARLIEST` and :data:`LATEST`."""
    when: dt.datetime | None = None
    for fmt in _DATE_FORMATS:
        try:
            when = dt.datetime.combine(dt.datetime.strptime(value, fmt).date(), day_time, tzinfo=tz)
            break
        except ValueError:
            continue
    if when is None:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise HandoverRowError(
                "bad_date", f"{column} {value!r} is not a date (YYYY-MM-DD, DD/MM/YYYY or an ISO 8601 date-time)"
            ) from None
        when = when.replace(tzinfo=tz) if when.tzinfo is None else when
    try:
        in_range = EARLIEST <= when < LATEST
    except OverflowError:  # its UTC form is before year 1 or after 9999
        in_range = False
    if not in_range:
        raise HandoverRowError("bad_date", f"{column} {value!r} is not between 1900 and 2099")
    return when


def parse_handover(
    values: Mapping[str, str | None],
    agency_map: AgencyMap | None,
    *,
    batch_id: str,
    tz: str,
    now: dt.datetime,
) -> Handover:
    """The hand-over a manifest row asks for; HandoverRowError (with its kind) when it cannot be made.

    Required: ``legacy_code`` (``<old agency>-YYMMDD-NNNN``, issued by the row's ``agency_code``),
    ``agency_code`` (mapped by ``agency_map``), ``received_at`` (not in the future), ``state`` (a lifecycle
    state name but ``receiving``). ``due_at`` may be left out (the procedure's processing time from
    ``received_at`` then decides) but never lies before ``received_at``. A date without a time is
    received at 00:00 and due at 17:00, local time.
    """
    get = {c: unicodedata.normalize("NFC", (values.get(c) or "").strip()) for c in HANDOVER_COLUMNS}
    missing = [c for c in ("legacy_code", "agency_code", "received_at", "state") if not get[c]]
    if missing:
        raise HandoverRowError("missing_field", f"hand-over row without {', '.join(missing)}")
    code, old = get["legacy_code"], get["agency_code"]
    if not _agency_ok(old):
        raise HandoverRowError("bad_agency_code", f"agency_code {old!r} is not an agency code")
    match = LEGACY_CODE.fullmatch(code)
    if match is None or len(code) > MAX_CODE:
        raise HandoverRowError(
            "bad_legacy_code", f"legacy code {code!r} is not <agency code>-YYMMDD-NNNN (TT 01/2018 Art. 19)"
        )
    try:
        dt.datetime.strptime(match["day"], "%y%m%d")
    except ValueError:
        raise HandoverRowError("bad_legacy_code", f"legacy code {code!r}: {match['day']} is not a date") from None
    if match["agency"] != old:
        raise HandoverRowError(
            "bad_legacy_code", f"legacy code {code!r} was not issued by {old} (its agency is {match['agency']})"
        )
    if get["state"] not in HANDOVER_STATES:
        raise HandoverRowError(
            "unknown_state", f"state {get['state']!r} is not one of {', '.join(s.value for s in HANDOVER_STATES)}"
        )
    zone = ZoneInfo(tz)
    received = _when(get["received_at"], "received_at", zone, dt.time(0, 0))
    due = _when(get["due_at"], "due_at", zone, CLOSE) if get["due_at"] else None
    if received > now:
        raise HandoverRowError("bad_date", f"received_at {received.isoformat()} is in the future")
    if due is not None and due < received:
        raise HandoverRowError(
            "due_before_received", f"due_at {due.isoformat()} is before received_at {received.isoformat()}"
        )
    if agency_map is None:
        raise HandoverRowError("unknown_agency", f"no agency map (--agency-map) to map {old} to a new unit")
    unit = agency_map.successor(old)
    if unit is None:
        raise HandoverRowError("unknown_agency", f"old agency {old} is not in the agency map")
    return Handover(
        legacy_code=code,
        from_agency=old,
        to_agency=unit.code,
        to_agency_name=unit.name,
        received_at=received,
        due_at=due,
        state=DossierState(get["state"]),
        batch_id=batch_id,
    )


# --- the hand-over record ---------------------------------------------------------------------------


class HandoverEntry(BaseModel):
    """One hand-over row of the manifest and how it ended; the dossier's values as the registry holds them."""

    file: str
    outcome: Outcome
    legacy_code: str | None = None
    procedure: str | None = None
    procedure_label: str | None = None
    state: str | None = None
    received_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    from_agency: str | None = None
    to_agency: str | None = None
    to_agency_name: str | None = None
    reason: str | None = None


class HandoverPair(BaseModel):
    from_agency: str
    to_agency: str
    to_agency_name: str | None = None
    counts: dict[str, int]
    entries: list[HandoverEntry]


class HandoverRecord(BaseModel):
    """The biên bản bàn giao of one batch: every hand-over row of its manifest, per old unit → new unit."""

    batch_id: str
    issued_at: dt.datetime
    agency_name: str
    entries: list[HandoverEntry]

    @property
    def totals(self) -> dict[str, int]:
        """rows = handed_over + already_done + failed: every hand-over row of the manifest, once."""
        counts = Counter(e.outcome for e in self.entries)
        return {"rows": len(self.entries), **{k: counts[k] for k in ("handed_over", "already_done", "failed")}}

    @property
    def pairs(self) -> list[HandoverPair]:
        """The dossiers that landed (now or in an earlier batch), per old unit → new unit, with counts by state."""
        groups: dict[tuple[str, str], list[HandoverEntry]] = {}
        for e in self.entries:
            if e.outcome != "failed" and e.from_agency and e.to_agency:
                groups.setdefault((e.from_agency, e.to_agency), []).append(e)
        pairs = []
        for (old, new), entries in sorted(groups.items()):
            entries.sort(key=lambda e: (e.legacy_code or "", e.file))
            order = {s.value: i for i, s in enumerate(DossierState)}
            counts = Counter(e.state or "" for e in entries)
            pairs.append(
                HandoverPair(
                    from_agency=old,
                    to_agency=new,
                    to_agency_name=next((e.to_agency_name for e in entries if e.to_agency_name), None),
                    counts=dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99))),
                    entries=entries,
                )
            )
        return pairs

    @property
    def failures(self) -> list[HandoverEntry]:
        return sorted((e for e in self.entries if e.outcome == "failed"), key=lambda e: e.file)

    def summary(self) -> dict[str, Any]:
        """What the registry keeps beside the signed PDF: totals and the counts by state per pair."""
        return {
            "totals": self.totals,
            "pairs": [{"from": p.from_agency, "to": p.to_agency, "counts": p.counts} for p in self.pairs],
            "failures": {e.file: e.reason for e in self.failures},
        }


class HandoverLayout(PageLayout):
    """Sizes in points of the A4 hand-over record."""


class HandoverLabels(BaseModel):
    signer: Literal["officer", "approver"]
    title: str
    subtitle: str
    document_name: str
    motto: list[str] = Field(min_length=2, max_length=2)
    number_line: str
    intro: str
    pair_heading: str
    pair_unknown_name: str
    counts_heading: str
    counts_columns: list[str] = Field(min_length=2, max_length=2)
    counts_total: str
    list_heading: str
    list_columns: list[str] = Field(min_length=7, max_length=7)
    failures_heading: str
    failures_none: str
    failures_columns: list[str] = Field(min_length=5, max_length=5)
    totals_heading: str
    totals_lines: dict[Literal["rows", "handed_over", "already_done", "failed"], str]
    signature_title: str
    signature_hint: str
    footer: str
    page: str
    slip_step: str
    outcomes: dict[Literal["handed_over", "already_done"], str]
    reasons: dict[str, str] = Field(default_factory=dict)
    states: dict[str, str]
    layout: HandoverLayout

    def state(self, name: str | None) -> str:
        return self.states.get(name or "", name or "")

    def reason(self, reason: str | None) -> str:
        """A failure's reason, after the Vietnamese for its cause when there is one."""
        vi = self.reasons.get((reason or "").split(":", 1)[0])
        return f"{vi}. {reason}" if vi else reason or ""


@lru_cache(maxsize=1)
def load_labels() -> HandoverLabels:
    """``pipeline/data/handover.yaml``, checked: every hand-over state has its label."""
    text = resources.files("pipeline").joinpath("data/handover.yaml").read_text(encoding="utf-8")
    try:
        labels = HandoverLabels.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise ConfigurationError(
            f"invalid pipeline/data/handover.yaml: {exc}", "Tệp nhãn biên bản không hợp lệ."
        ) from exc
    lacking = {s.value for s in HANDOVER_STATES} - set(labels.states)
    if lacking:
        raise ConfigurationError(f"pipeline/data/handover.yaml: no label for states {sorted(lacking)}")
    return labels


class _Header(Flowable):
    """The issuing unit and the number line on the left; the national motto and the date line on the right."""

    def __init__(self, record: HandoverRecord, labels: HandoverLabels) -> None:
        super().__init__()
        self.record, self.labels, self.size = record, labels, labels.layout.header_size

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width, self.height = availWidth, self.size * 1.35 * 4 + 8
        return self.width, self.height

    def draw(self) -> None:
        c, size, top = self.canv, self.size, self.height
        left, right = self.width * 0.42, self.width * 0.58
        c.saveState()
        c.setFont(BOLD, size)
        name = self.record.agency_name.upper()
        fit = min(size, size * (left - 4) / max(pdfmetrics.stringWidth(name, BOLD, size), 1))
        c.setFont(BOLD, fit)
        c.drawCentredString(left / 2, top - size, name)
        c.setLineWidth(0.6)
        c.line(left / 2 - left * 0.18, top - size * 1.6, left / 2 + left * 0.18, top - size * 1.6)
        c.setFont(REGULAR, size)
        c.drawCentredString(left / 2, top - size * 2.9, self.labels.number_line)
        mid = left + right / 2
        y = top
        half = 0.0
        for i, line in enumerate(self.labels.motto):
            want = size if i == 0 else size * 1.08
            fit = min(want, want * (right - 2) / pdfmetrics.stringWidth(line, BOLD, want))
            c.setFont(BOLD, fit)
            c.drawCentredString(mid, y - size, line)
            half = pdfmetrics.stringWidth(line, BOLD, fit) / 2
            y -= size * 1.35
        c.line(mid - half, y - 2.5, mid + half, y - 2.5)
        c.setFont(ITALIC, size)
        day = date_vi(self.record.issued_at)
        c.drawCentredString(mid, y - size * 1.5, day[:1].upper() + day[1:])
        c.restoreState()


@dataclass(frozen=True)
class RenderedHandover:
    pdf: bytes
    signature: tuple[int, tuple[float, float, float, float]]  # page (0-based), box
    pages: int


def _day(ts: dt.datetime | None) -> str:
    return "" if ts is None else f"{local_time(ts):%d/%m/%Y}"


def render_handover(record: HandoverRecord, labels: HandoverLabels | None = None) -> RenderedHandover:
    """The record as an unsigned PDF/A-2b (A4, Noto Serif embedded) and where its signature goes."""
    register_fonts()
    lb = labels or load_labels()
    lay = lb.layout
    body = ParagraphStyle("body", fontName=REGULAR, fontSize=lay.body_size, leading=lay.body_size * 1.35)
    head = ParagraphStyle("head", parent=body, fontName=BOLD, spaceBefore=6, spaceAfter=3)
    cell = ParagraphStyle("cell", parent=body, fontSize=lay.small_size, leading=lay.small_size * 1.25)
    cell_head = ParagraphStyle("cell_head", parent=cell, fontName=BOLD, alignment=TA_CENTER)
    center = ParagraphStyle("center", parent=body, alignment=TA_CENTER)
    title = ParagraphStyle("title", parent=center, fontName=BOLD, fontSize=lay.title_size, leading=lay.title_size * 1.3)
    page_w, page_h = A4
    width = page_w - 2 * lay.margin_x

    def grid(rows: list[list[str]], widths: list[float]) -> Table:
        data = [[Paragraph(markup(v), cell_head if i == 0 else cell) for v in row] for i, row in enumerate(rows)]
        table = Table(data, colWidths=[w * width for w in widths], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.4, "black"),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                    ("LEFTPADDING", (0, 0), (-1, -1), 2.5),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 2.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ]
            )
        )
        return table

    totals = record.totals
    story: list[Flowable] = [
        _Header(record, lb),
        Spacer(1, 10),
        Paragraph(markup(lb.title), title),
        Paragraph(markup(lb.subtitle), ParagraphStyle("sub", parent=center, fontName=ITALIC)),
        Spacer(1, 8),
        Paragraph(
            markup(lb.intro.format(date=date_vi(record.issued_at), batch=record.batch_id, rows=totals["rows"])), body
        ),
    ]
    for n, pair in enumerate(record.pairs, start=1):
        new = f"{pair.to_agency} — {pair.to_agency_name or lb.pair_unknown_name}"
        story.append(Paragraph(markup(lb.pair_heading.format(n=n, old=pair.from_agency, new=new)), head))
        counts = [lb.counts_columns] + [[lb.state(s), str(k)] for s, k in pair.counts.items()]
        counts.append([lb.counts_total, str(sum(pair.counts.values()))])
        story += [
            Paragraph(markup(lb.counts_heading), body),
            grid(counts, [0.5, 0.2]),
            Spacer(1, 4),
            Paragraph(markup(lb.list_heading), body),
        ]
        rows = [lb.list_columns]
        for i, e in enumerate(pair.entries, start=1):
            note = lb.outcomes["already_done"] if e.outcome == "already_done" else lb.outcomes["handed_over"]
            rows.append(
                [
                    str(i),
                    e.legacy_code or "",
                    e.procedure_label or e.procedure or "",
                    lb.state(e.state),
                    _day(e.received_at),
                    _day(e.due_at),
                    note,
                ]
            )
        story.append(grid(rows, [0.05, 0.27, 0.21, 0.13, 0.1, 0.1, 0.14]))
    story.append(Paragraph(markup(lb.failures_heading), head))
    if record.failures:
        rows = [lb.failures_columns]
        for i, e in enumerate(record.failures, start=1):
            rows.append([str(i), e.file, e.legacy_code or "", e.from_agency or "", lb.reason(e.reason)])
        story.append(grid(rows, [0.05, 0.15, 0.27, 0.14, 0.39]))
    else:
        story.append(Paragraph(markup(lb.failures_none), body))
    story.append(Paragraph(markup(lb.totals_heading), head))
    story += [Paragraph(markup(f"{label}: {totals[key]}"), body) for key, label in lb.totals_lines.items()]
    slots: list[SignatureSlot] = []
    sign_w = width * 0.45
    block = Table(
        [
            [None, Paragraph(markup(lb.signature_title), ParagraphStyle("sig", parent=center, fontName=BOLD))],
            [None, Paragraph(markup(lb.signature_hint), ParagraphStyle("hint", parent=center, fontName=ITALIC))],
            [None, SignatureBox(sign_w, lay.signature_height, slots)],
        ],
        colWidths=[width - sign_w, sign_w],
    )
    story += [Spacer(1, 10), KeepTogether([block])]

    footer = " ".join(lb.footer.format(batch=record.batch_id).split())

    def on_page(c: Canvas, _doc: Any) -> None:
        c.saveState()
        c.setFont(ITALIC, lay.footer_size)
        c.drawString(lay.margin_x, 22, footer[:200])
        c.setFont(REGULAR, lay.footer_size)
        c.drawRightString(page_w - lay.margin_x, 12, f"{lb.page} {c.getPageNumber()}")
        c.restoreState()

    buf = io.BytesIO()
    doc = BaseDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=lay.margin_x,
        rightMargin=lay.margin_x,
        topMargin=lay.margin_top,
        bottomMargin=lay.margin_bottom,
        title=f"{lb.document_name} - {record.batch_id}",
        author=record.agency_name,
        subject=lb.title,
        keywords="hoso-handover",
        creator="hoso",
        initialFontName=REGULAR,
        pageCompression=1,
        lang="vi",
    )
    frame = Frame(
        lay.margin_x,
        lay.margin_bottom,
        width,
        page_h - lay.margin_top - lay.margin_bottom,
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
        id="body",
    )
    doc.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=on_page)])
    doc.build(story)
    slot = slots[-1]
    return RenderedHandover(as_pdfa_2b(buf.getvalue()), (slot.page, slot.box), doc.page)


def sign_handover(
    record: HandoverRecord,
    keys: KeySource,
    *,
    signer_name: str,
    timestamp_url: str | None = None,
    level: Level | None = None,
    trust_roots: list | None = None,  # type: ignore[type-arg]  # asn1crypto certificates
) -> bytes:
    """Render the record and sign it as ``handover.yaml``'s ``signer`` (PAdES certification, no later changes),
    the visible stamp in its signature block; SigningFailed on failure."""
    labels = load_labels()
    rendered = render_handover(record, labels)
    page, box = rendered.signature
    role = labels.signer
    return sign_pdf(
        rendered.pdf,
        keys.signer(role),
        field_name="BanGiao",
        reason=f"{labels.document_name} — đợt {record.batch_id}",
        location=record.agency_name,
        signer_name=signer_name,
        role_label=ROLE_TITLES[role],
        visible_box=box,
        page=page,
        timestamp_url=timestamp_url,
        level=level,
        certify=MDPPerm.NO_CHANGES,
        trust_roots=trust_roots,
    )
