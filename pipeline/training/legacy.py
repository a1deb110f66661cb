"""A small synthetic legacy archive to hand over: dossiers of old district/provincial units, ``manifest.csv``
with the hand-over columns, and the agency map to the new commune units.

``make_legacy_archive`` draws each dossier with the project's sample generator
(:func:`pipeline.training.samples.render_sample_dossier`: a 2-page scanned dossier); ``variants`` renders
fewer distinct dossiers and gives the others a copy with its own document title (so each input is its
own, by SHA-256) — for tests, where drawing costs more than the scripted OCR. ``flawed`` adds rows that
cannot be handed over, one of each kind in turn (:data:`FLAWS`), whose failures the batch must record.
The output is a pure function of the arguments.

    python -m pipeline.training.legacy OUT_DIR -n 40 [--seed N] [--variants K] [--flawed M]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pikepdf

from pipeline.core.models import DossierState
from pipeline.domain.catalog import load_catalog
from pipeline.domain.deadlines import due_date
from pipeline.training.samples import render_sample_dossier

__all__ = ["FLAWS", "LegacyArchive", "LegacyRow", "make_legacy_archive"]

TZ = "Asia/Ho_Chi_Minh"
PROCEDURE = "business_household_registration"
MANIFEST = "manifest.csv"
AGENCY_MAP = "agency-map.csv"
COLUMNS = ("file", "procedure", "legacy_code", "received_at", "due_at", "state", "agency_code")
#: States legacy dossiers are handed over in, with weights: most are still open, some archived.
STATES = {
    DossierState.received: 2,
    DossierState.appraisal: 4,
    DossierState.approval: 2,
    DossierState.needs_supplement: 1,
    DossierState.result_ready: 1,
    DossierState.returned: 3,
    DossierState.stopped: 1,
}
#: What a flawed row gets wrong, in turn (the kind of failure the batch records for it).
FLAWS = (
    "bad_legacy_code",
    "unknown_agency",
    "bad_date",
    "unknown_state",
    "due_before_received",
    "duplicate_legacy_code",
    "missing_file",
)


@dataclass(frozen=True)
class LegacyRow:
    file: str
    legacy_code: str
    received_at: str
    due_at: str
    state: str
    agency_code: str
    procedure: str = PROCEDURE
    flaw: str | None = None  # None: the row hands a dossier over; else the failure kind it must end in


@dataclass
class LegacyArchive:
    folder: Path
    manifest: Path
    agency_map: Path
    rows: list[LegacyRow] = field(default_factory=list)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # old code -> (new code, new name)

    @property
    def good(self) -> list[LegacyRow]:
        return [r for r in self.rows if r.flaw is None]


def _units(rng: random.Random, province: int, olds: int) -> dict[str, tuple[str, str]]:
    """Old district units (``000.<district>.00.H<province>``) and the provincial department, each mapped to a
    new commune unit (several old units may go to one commune)."""
    communes = [(f"000.{rng.randrange(10, 99)}.{n:02d}.H{province:02d}", f"UBND xã Mẫu {n}") for n in range(1, 3)]
    units = {}
    for k in range(olds):
        old = f"000.{20 + k:02d}.00.H{province:02d}" if k else f"000.00.31.H{province:02d}"
        units[old] = communes[k % len(communes)]
    return units


def _received(rng: random.Random) -> datetime:
    """A working-hours time between 2 Jan 2024 and 30 Jun 2025 (before the district level ended)."""
    day = date(2024, 1, 2) + timedelta(days=rng.randrange(0, 545))
    return datetime.combine(day, time(rng.randrange(7, 16), rng.choice((0, 15, 30, 45))), tzinfo=ZoneInfo(TZ))


def _copy_with_title(template: Path, out: Path, title: str) -> None:
    """The template dossier, its document title set to ``title`` (same pages, another input)."""
    with pikepdf.open(template) as pdf:
        pdf.docinfo["/Title"] = title
        buf = io.BytesIO()
        pdf.save(buf, deterministic_id=True)
    out.write_bytes(buf.getvalue())


def make_legacy_archive(
    folder: Path,
    n: int,
    *,
    seed: int = 0,
    variants: int | None = None,
    flawed: int = 0,
    olds: int = 3,
    province: int = 56,
    procedure: str = PROCEDURE,
) -> LegacyArchive:
    """Write ``n`` handed-over dossiers (+ ``flawed`` rows that cannot be) to ``folder``: ``HS-00001.pdf``…,
    ``manifest.csv`` (file, procedure and the hand-over columns) and ``agency-map.csv``
    (``old_code,new_code,new_name``). ``variants``: how many distinct dossiers are drawn (default: all)."""
    if n < 1 or flawed < 0:
        raise ValueError("n must be at least 1 and flawed not negative")
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    units = _units(rng, province, olds)
    olds_list = sorted(units)
    days = load_catalog().procedure(procedure).processing_days
    drawn = n if variants is None else max(1, min(variants, n))
    templates: list[Path] = []
    rows: list[LegacyRow] = []
    sequence: dict[tuple[str, str], int] = {}
    states, weights = list(STATES), list(STATES.values())
    for i in range(1, n + flawed + 1):
        old = rng.choice(olds_list)
        received = _received(rng)
        yymmdd = f"{received:%y%m%d}"
        sequence[(old, yymmdd)] = seq = sequence.get((old, yymmdd), 0) + 1
        due = due_date(received, days, TZ)
        row = LegacyRow(
            file=f"HS-{i:05d}.pdf",
            legacy_code=f"{old}-{yymmdd}-{seq:04d}",
            received_at=received.isoformat(),
            due_at=due.isoformat(),
            state=rng.choices(states, weights)[0].value,
            agency_code=old,
            procedure=procedure,
        )
        if i > n:
            row = _flaw(row, FLAWS[(i - n - 1) % len(FLAWS)], rows)
        rows.append(row)
        if row.flaw == "missing_file":
            continue
        out = folder / row.file
        k = (i - 1) % drawn
        if k >= len(templates):
            render_sample_dossier(out, seed=seed * 100_003 + i, procedure=procedure)
            templates.append(out)
        else:
            _copy_with_title(templates[k], out, f"Hồ sơ lưu trữ {row.file} {row.legacy_code}")
    manifest = folder / MANIFEST
    with manifest.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.file, r.procedure, r.legacy_code, r.received_at, r.due_at, r.state, r.agency_code])
    agency_map = folder.parent / f"{folder.name}-{AGENCY_MAP}"
    with agency_map.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("old_code", "new_code", "new_name"))
        for old in olds_list:
            writer.writerow((old, *units[old]))
    return LegacyArchive(folder, manifest, agency_map, rows, units)


def _flaw(row: LegacyRow, kind: str, earlier: list[LegacyRow]) -> LegacyRow:
    """``row`` made wrong in one way: the batch must record it as a failure of that kind."""
    from dataclasses import replace

    if kind == "bad_legacy_code":
        return replace(row, legacy_code=row.legacy_code.replace("-", "/", 1), flaw=kind)
    if kind == "unknown_agency":
        old = "000.99.99.H99"
        return replace(row, agency_code=old, legacy_code=old + row.legacy_code[len(row.agency_code) :], flaw=kind)
    if kind == "bad_date":
        return replace(row, received_at="31/02/2024", flaw=kind)
    if kind == "unknown_state":
        return replace(row, state="dang_xu_ly", flaw=kind)
    if kind == "due_before_received":
        before = datetime.fromisoformat(row.received_at) - timedelta(days=3)
        return replace(row, due_at=before.isoformat(), flaw=kind)
    if kind == "duplicate_legacy_code":
        first = next((r for r in earlier if r.flaw is None), None)
        return replace(
            row,
            legacy_code=first.legacy_code if first else row.legacy_code,
            agency_code=first.agency_code if first else row.agency_code,
            flaw=kind,
        )
    return replace(row, flaw=kind)  # missing_file: in the manifest, not in the folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.training.legacy", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int, default=None)
    ap.add_argument("--flawed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        shutil.rmtree(args.out_dir)
    archive = make_legacy_archive(args.out_dir, args.n, seed=args.seed, variants=args.variants, flawed=args.flawed)
    print(
        f"{len(archive.rows)} rows ({len(archive.good)} to hand over) in {archive.manifest}; map {archive.agency_map}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
