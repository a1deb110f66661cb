"""Hand-over of legacy dossiers (issue 12 item 4): manifest rows and the agency map, legacy dossiers through the
desk and the registry (own code, dates, state, new unit), the signed hand-over record, the r0004 migration on
SQLite and PostgreSQL, and ``hoso reprocess --agency-map`` end to end (slow: through Prefect)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from support.cli import SCRIPTED_ENGINE, Hoso
from support.pdfs import flat_text
from support.servers import SeaweedServer

from pipeline.core.errors import DossierCodeTaken, ExitCode, InputCorrupt
from pipeline.core.models import DossierState, Role
from pipeline.core.settings import Settings
from pipeline.domain.handover import (
    AgencyMap,
    AgencyUnit,
    HandoverRecord,
    HandoverRowError,
    load_agency_map,
    parse_handover,
    render_handover,
)
from pipeline.training.legacy import FLAWS, LegacyArchive, make_legacy_archive
from pipeline.usecases.archive import BatchItemResult, discover_batch, process_one
from pipeline.usecases.handover import handover_entries, write_handover_record
from pipeline.usecases.services import Services
from pipeline.web.app import create_app
from signing.verify import verify_pdf
from storage import keys, schema
from storage.identity import Identity
from storage.objects import sha256_bytes
from storage.records import holder_id, new_attempt_id
from storage.registry import IntakeClaim, LegacyIntake, Registry

TZ = "Asia/Ho_Chi_Minh"
VN = ZoneInfo(TZ)
NOW = datetime(2025, 7, 1, 9, 0, tzinfo=VN)
OLD, NEW = "000.21.00.H56", "000.59.01.H56"
MAP = AgencyMap({OLD: AgencyUnit(NEW, "UBND xã Mẫu 1")})
GOOD = {
    "legacy_code": f"{OLD}-240523-0042",
    "agency_code": OLD,
    "received_at": "2024-05-23T09:15:00+07:00",
    "due_at": "28/05/2024",
    "state": "appraisal",
}


# --- manifest rows and the agency map (no I/O) ---------------------------------------------------


def test_a_good_row_keeps_its_code_dates_and_state_and_lands_in_the_new_unit() -> None:
    h = parse_handover(GOOD, MAP, batch_id="b1", tz=TZ, now=NOW)
    assert (h.legacy_code, h.from_agency, h.to_agency, h.to_agency_name) == (
        GOOD["legacy_code"],
        OLD,
        NEW,
        "UBND xã Mẫu 1",
    )
    assert h.received_at == datetime(2024, 5, 23, 9, 15, tzinfo=VN)
    assert h.due_at == datetime(2024, 5, 28, 17, 0, tzinfo=VN)  # a date alone: due at the office's close
    assert h.state == DossierState.appraisal
    assert h.note == f"handed over from {OLD} to {NEW} by b1"
    without_due = parse_handover(GOOD | {"due_at": "", "received_at": "2024-05-23"}, MAP, batch_id="b", tz=TZ, now=NOW)
    assert without_due.due_at is None and without_due.received_at == datetime(2024, 5, 23, tzinfo=VN)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"legacy_code": f"{OLD}/240523-0042"}, "bad_legacy_code"),
        ({"legacy_code": f"{OLD}-241332-0042"}, "bad_legacy_code"),  # month 13
        ({"legacy_code": "000.22.00.H56-240523-0042"}, "bad_legacy_code"),  # issued by another unit
        ({"legacy_code": f"{OLD.lower()}-240523-0042", "agency_code": OLD.lower()}, "bad_agency_code"),
        ({"legacy_code": ""}, "missing_field"),
        ({"state": ""}, "missing_field"),
        ({"legacy_code": "000.99.99.H99-240523-0042", "agency_code": "000.99.99.H99"}, "unknown_agency"),
        ({"state": "dang_xu_ly"}, "unknown_state"),
        ({"state": "receiving"}, "unknown_state"),
        ({"received_at": "31/02/2024"}, "bad_date"),
        ({"received_at": "2025-08-01"}, "bad_date"),  # after NOW: in the future
        ({"due_at": "2024-05-20"}, "due_before_received"),
        # Digits that only look like the sequence 0042 (full-width): another code for the same dossier.
        ({"legacy_code": f"{OLD}-240523-\uff10\uff10\uff14\uff12"}, "bad_legacy_code"),
        ({"legacy_code": f"{OLD}-\u0662\u0664\u0660\u0665\u0662\u0663-0042"}, "bad_legacy_code"),
        # Dates the registry cannot hold (year 1 in UTC is before datetime.min) or no archive has.
        ({"received_at": "0001-01-01"}, "bad_date"),
        ({"received_at": "1899-12-31"}, "bad_date"),
        ({"due_at": "9999-12-31T23:00:00-05:00"}, "bad_date"),
        ({"due_at": "2100-01-01"}, "bad_date"),
    ],
)
def test_a_row_that_cannot_be_handed_over_says_why(change: dict[str, str], kind: str) -> None:
    with pytest.raises(HandoverRowError) as caught:
        parse_handover(GOOD | change, MAP, batch_id="b1", tz=TZ, now=NOW)
    assert caught.value.kind == kind
    assert caught.value.reason.startswith(f"handover_{kind}: ")


def test_no_agency_map_means_no_hand_over() -> None:
    with pytest.raises(HandoverRowError) as caught:
        parse_handover(GOOD, None, batch_id="b1", tz=TZ, now=NOW)
    assert caught.value.kind == "unknown_agency" and "--agency-map" in str(caught.value)


def test_the_agency_map_is_read_whole_or_refused(tmp_path: Path) -> None:
    good = tmp_path / "map.csv"
    good.write_text(f"old_code,new_code,new_name\n{OLD},{NEW},UBND xã Mẫu 1\n000.22.00.H56,{NEW}\n\n", encoding="utf-8")
    units = load_agency_map(good).units
    assert units == {OLD: AgencyUnit(NEW, "UBND xã Mẫu 1"), "000.22.00.H56": AgencyUnit(NEW, None)}
    for body in (
        f"{OLD},{NEW}\n{OLD},000.60.02.H56\n",  # one old unit, two new ones
        f"{OLD}\n",  # one cell
        f"{OLD},xã mới\n",  # not an agency code
        f"{OLD},{NEW},UBND \x1b[2J xã\n",  # a name with an escape sequence (the record, logs)
        f"{OLD},{NEW},UBND xã \u202eMẫu 1\n",  # a right-to-left override
        f"{OLD},{NEW},{'UBND xã ' * 40}\n",  # a name no record line holds
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(InputCorrupt):
            load_agency_map(bad)
    (tmp_path / "latin1.csv").write_bytes(f"{OLD},{NEW},UBND x\xe3\n".encode("latin-1"))
    with pytest.raises(InputCorrupt):
        load_agency_map(tmp_path / "latin1.csv")


def test_a_file_named_again_by_another_row_does_not_drop_its_hand_over(tmp_path: Path) -> None:
    """A hand-over row followed by a plain row for its file: the legacy dossier is never received as a new one."""
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (tmp_path / "b.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n%b\n")
    header = ["file", "procedure", *GOOD]
    rows = [
        ["a.pdf", "business_household_registration", *GOOD.values()],
        ["a.pdf", "business_household_registration", "", "", "", "", ""],
        ["b.pdf", "business_household_registration", *GOOD.values()],
        ["b.pdf", "business_household_registration", *(GOOD | {"legacy_code": f"{OLD}-240523-0043"}).values()],
    ]
    with (tmp_path / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    items = {i.name: i for i in discover_batch(tmp_path, agency_map=MAP, batch_id="b1", tz=TZ, now=NOW)}
    for name, lines in (("a.pdf", "2 and 3"), ("b.pdf", "4 and 5")):
        assert items[name].refused is not None, name
        assert items[name].refused.startswith(f"handover_duplicate_file: manifest.csv lines {lines} "), name
        assert items[name].legacy is not None  # listed in the hand-over record with its reason


def test_a_manifest_header_is_read_as_written_by_hand_or_refused(tmp_path: Path) -> None:
    """Spaces after the commas (or capitals) still name the columns; a column named twice is refused whole:
    which of the two holds would be a guess, and a guess drops hand-overs."""
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    row = ",".join(["a.pdf", "business_household_registration", *GOOD.values()])
    (tmp_path / "manifest.csv").write_text(
        "File, procedure, " + ", ".join(GOOD) + "\r\n" + row + "\r\n", encoding="utf-8-sig"
    )
    (item,) = discover_batch(tmp_path, agency_map=MAP, batch_id="b1", tz=TZ, now=NOW)
    assert item.refused is None and item.handover is not None
    assert item.handover.legacy_code == GOOD["legacy_code"]
    (tmp_path / "manifest.csv").write_text(
        "file,procedure," + ",".join(GOOD) + ",file\n" + row + ",b.pdf\n", encoding="utf-8"
    )
    with pytest.raises(InputCorrupt, match="file"):
        discover_batch(tmp_path, agency_map=MAP, batch_id="b1", tz=TZ, now=NOW)


def test_a_hostile_row_still_gets_its_line_in_the_hand_over_record(tmp_path: Path) -> None:
    """A legacy code of 100 000 characters with an escape sequence fails its row; the record lists the row
    (shortened, escaped) instead of failing to lay out (reportlab: a cell taller than a page)."""
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    hostile = "\x1b]0;pwn\x07" + "9" * 100_000
    with (tmp_path / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(
            [
                ["file", "procedure", *GOOD],
                ["a.pdf", "p", *(GOOD | {"legacy_code": hostile, "state": hostile}).values()],
            ]
        )
    items = discover_batch(tmp_path, agency_map=MAP, batch_id="b1", tz=TZ, now=NOW)
    results = [process_one(item, cast(Services, None)) for item in items]  # refused before any service is used
    (entry,) = handover_entries(cast(Services, None), items, results)
    assert entry.outcome == "failed" and entry.reason is not None
    assert entry.reason.startswith("handover_bad_legacy_code")
    for text in (entry.legacy_code, entry.state, entry.reason):
        assert text is not None and "\x1b" not in text and len(text) <= 1000
    record = HandoverRecord(batch_id="b1", issued_at=NOW, agency_name="UBND", entries=[entry])
    assert render_handover(record).pdf.startswith(b"%PDF")


# --- a batch in one process: desk, registry, store, the record -----------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> LegacyArchive:
    """Two legacy dossiers to hand over and one row of each flaw (drawn once, copied by title)."""
    return make_legacy_archive(tmp_path_factory.mktemp("legacy") / "archive", 2, seed=7, variants=1, flawed=len(FLAWS))


@dataclass
class Batch:
    id: str
    results: list[BatchItemResult]
    record_key: str | None


def run_batch(services: Services, folder: Path, agency_map: Path, batch_id: str) -> Batch:
    """What the hoso-reprocess flow does, without Prefect: discover, each dossier, the hand-over record."""
    items = discover_batch(folder, agency_map=load_agency_map(agency_map), batch_id=batch_id, tz=TZ)
    results = [process_one(item, services) for item in items]
    for item, result in zip(items, results, strict=True):
        services.registry.record_batch_item(
            batch_id, item.name, outcome=result.outcome, dossier_code=result.dossier_code, reason=result.reason
        )
    info = write_handover_record(services, batch_id, items, results) if any(i.legacy for i in items) else None
    return Batch(batch_id, results, info.object_key if info else None)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    s = Services(
        Settings(
            data_dir=tmp_path / "var",
            timezone=TZ,
            ocr_engine=SCRIPTED_ENGINE,
            ocr_jobs=1,
            level_digitised="B-B",
            agency_code="000.00.00.H56",
        )
    )
    yield s
    s.close()


def test_a_legacy_batch_is_handed_over_recorded_and_idempotent(
    services: Services, archive: LegacyArchive, tmp_path: Path
) -> None:
    registry, store = services.registry, services.store
    first = run_batch(services, archive.folder, archive.agency_map, "batch-1")
    by_file = {r.name: r for r in first.results}
    assert len(first.results) == len(archive.rows)  # the row whose file is missing is an item too
    for row in archive.rows:
        result = by_file[row.file]
        if row.flaw is None:
            assert (result.outcome, result.dossier_code) == ("processed", row.legacy_code), result.reason
        else:
            assert result.outcome == "failed" and result.reason and f"handover_{row.flaw}" in result.reason

    for row in archive.good:
        d = registry.get(row.legacy_code)  # found by its own code: no new code
        new_code, _ = archive.units[row.agency_code]
        assert (d.code, d.legacy_code, d.agency_code, d.handed_over_from, d.handover_batch) == (
            row.legacy_code,
            row.legacy_code,
            new_code,
            row.agency_code,
            "batch-1",
        )
        assert d.state == row.state
        assert (d.received_at, d.due_at) == (
            datetime.fromisoformat(row.received_at),
            datetime.fromisoformat(row.due_at),
        )
        handover = [e for e in d.events if e.action == "handover"]
        assert len(handover) == 1 and handover[0].to_state == row.state
        assert handover[0].note == f"handed over from {row.agency_code} to {new_code} by batch-1"
        assert [a.note for a in registry.audit_log(dossier_code=d.code) if a.action == "handed_over"] == [
            handover[0].note
        ]
        assert keys.DIGITISED in d.artifacts  # digitised and certified like any reprocessed dossier…
        assert not [name for name in d.artifacts if name.startswith(keys.FORM)]  # …but no fresh Mẫu 01
        assert d.receipt_json and d.receipt_json["dossier_code"] == row.legacy_code

    record = registry.handover_record("batch-1")
    assert record is not None and first.record_key == record.object_key == keys.handover_key("batch-1")
    assert (record.rows, record.handed_over, record.already_done, record.failed) == (
        len(archive.rows),
        len(archive.good),
        0,
        len(FLAWS),
    )
    assert record.rows == record.handed_over + record.already_done + record.failed
    with archive.manifest.open(encoding="utf-8", newline="") as fh:
        assert record.rows == sum(1 for _ in csv.DictReader(fh))  # every row of the manifest, once
    pdf = store.get_bytes(record.object_key, record.version_id)
    assert sha256_bytes(pdf) == record.sha256
    report = verify_pdf(pdf, [services.pki.root_cert], identities=services.signer_identities)
    assert report.ok, report.problems
    text = flat_text(pdf)
    assert "BIÊN BẢN BÀN GIAO" in text and "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text
    squashed = "".join(text.split())  # table cells wrap codes at their hyphens
    for row in archive.rows:
        assert row.legacy_code in squashed, row
    pairs = record.summary["pairs"]
    assert sum(sum(p["counts"].values()) for p in pairs) == len(archive.good)
    assert set(record.summary["failures"]) == {r.file for r in archive.rows if r.flaw}

    # Staff integrations find it by its legacy code through the API.
    ident = Identity(registry)
    ident.add_user("lan", "Nguyễn Thị Lan", [Role.desk], "mat-khau-du-dai-1")
    token, _ = ident.issue_token("lan", Role.desk)
    row = archive.good[0]
    with TestClient(create_app(services), base_url="https://testserver") as client:
        r = client.get(f"/api/dossiers/{row.legacy_code}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["code"], body["legacy_code"], body["handed_over_from"], body["state"]) == (
        row.legacy_code,
        row.legacy_code,
        row.agency_code,
        row.state,
    )

    # …and staff open its page by it.
    with TestClient(create_app(services), base_url="https://testserver", follow_redirects=False) as staff:
        form = staff.get("/nhan-vien/dang-nhap").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        staff.post(
            "/nhan-vien/dang-nhap",
            data={"csrf_token": csrf[1], "username": "lan", "password": "mat-khau-du-dai-1", "next": "/nhan-vien"},
        )
        page = staff.get(f"/nhan-vien/ho-so/{row.legacy_code}")
    assert page.status_code == 200 and row.legacy_code in page.text

    # The same batch again: nothing new in the store, every dossier already done, the failures again.
    dossier_objects = sorted(i.key for i in store.list() if i.key.startswith("dossiers/"))
    second = run_batch(services, archive.folder, archive.agency_map, "batch-2")
    assert sorted(r.outcome for r in second.results) == sorted(
        ["already_done"] * len(archive.good) + ["failed"] * len(FLAWS)
    )
    assert sorted(i.key for i in store.list() if i.key.startswith("dossiers/")) == dossier_objects
    again = registry.handover_record("batch-2")
    assert again is not None and (again.handed_over, again.already_done, again.failed) == (
        0,
        len(archive.good),
        len(FLAWS),
    )
    assert registry.get(archive.good[0].legacy_code).handover_batch == "batch-1"

    # Another input under a legacy code the registry holds: refused before any OCR, nothing overwritten.
    other = tmp_path / "other"
    other.mkdir()
    taken = archive.good[0]
    shutil.copy(archive.folder / archive.good[1].file, other / "khac.pdf")
    (other / "manifest.csv").write_text(
        "file,procedure,legacy_code,received_at,due_at,state,agency_code\n"
        f"khac.pdf,{taken.procedure},{taken.legacy_code},{taken.received_at},,received,{taken.agency_code}\n",
        encoding="utf-8",
    )
    before = registry.get(taken.legacy_code)
    third = run_batch(services, other, archive.agency_map, "batch-3")
    assert third.results[0].outcome == "failed"
    assert third.results[0].reason and "invalid_state" in third.results[0].reason
    assert registry.get(taken.legacy_code) == before


@pytest.mark.slow  # an S3 server (session-wide) and 9 inputs through the desk: ~2.5 s, ~6 s with the server's start
def test_a_legacy_batch_under_an_s3_prefix_is_handed_over_with_its_record(
    seaweedfs: SeaweedServer, archive: LegacyArchive, tmp_path: Path
) -> None:
    """``hoso reprocess s3://bucket/prefix`` with a manifest of hand-over rows does what a folder does: every
    row an input (the one whose file is missing too, failed with its reason), and the signed record at the end."""
    from minio import Minio

    from flows.archive import BatchSource, _handover_record

    bucket = f"inbox-{uuid.uuid4().hex[:8]}"
    s3 = Minio(seaweedfs.endpoint, access_key=seaweedfs.access_key, secret_key=seaweedfs.secret_key, secure=False)
    s3.make_bucket(bucket)
    for path in sorted(archive.folder.iterdir()):
        s3.fput_object(bucket, f"2019/huyen-cu/{path.name}", str(path))
    settings = Settings(
        data_dir=tmp_path / "var", timezone=TZ, ocr_engine=SCRIPTED_ENGINE, ocr_jobs=1, level_digitised="B-B",
        agency_code="000.00.00.H56", s3_endpoint=seaweedfs.endpoint, s3_access_key=seaweedfs.access_key,
        s3_secret_key=seaweedfs.secret_key,
    )
    source = BatchSource(f"s3://{bucket}/2019/huyen-cu", None, archive.agency_map.read_text(), "batch-s3", TZ)
    names = source.names(settings)
    assert sorted(names) == sorted(r.file for r in archive.rows)  # the missing file's row is an input too
    with Services(settings) as services:
        for name in names:
            with source.materialise(name, services.settings) as item:
                result = process_one(item, services)
            services.registry.record_batch_item(
                "batch-s3", name, outcome=result.outcome, dossier_code=result.dossier_code, reason=result.reason
            )
        key = _handover_record(services, source, services.registry.batch_items("batch-s3"))
        record = services.registry.handover_record("batch-s3")
        assert record is not None and key == record.object_key == keys.handover_key("batch-s3")
        assert (record.rows, record.handed_over, record.already_done, record.failed) == (
            len(archive.rows), len(archive.good), 0, len(FLAWS)
        )
        missing = next(r.file for r in archive.rows if r.flaw == "missing_file")
        assert record.summary["failures"][missing].startswith("handover_missing_file")
        for row in archive.good:
            assert services.registry.get(row.legacy_code).handover_batch == "batch-s3"
        pdf = services.store.get_bytes(record.object_key, record.version_id)
        assert verify_pdf(pdf, [services.pki.root_cert], identities=services.signer_identities).ok


# --- the registry: a legacy code is taken once ------------------------------------------------------


def _claim(registry: Registry, sha: str, legacy: LegacyIntake | None, agency: str = NEW) -> IntakeClaim:
    received = datetime(2024, 5, 23, 9, 15, tzinfo=VN)
    return registry.claim_intake(
        input_sha256=sha,
        input_name=f"{sha}.pdf",
        procedure="p",
        procedure_code=None,
        agency_code=agency,
        received_at=received,
        due_at=received + timedelta(days=5),
        applicant_id=None,
        actor="archive",
        attempt=new_attempt_id(),
        holder=holder_id(),
        lease_for=timedelta(minutes=2),
        legacy=legacy,
    )


def test_concurrent_hand_overs_of_one_legacy_code_give_one_dossier(registry_url: str) -> None:
    registry = Registry(registry_url)
    legacy = LegacyIntake(GOOD["legacy_code"], OLD, "b1")
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            outcomes.append(_claim(registry, f"{n:064x}", legacy).status)
        except DossierCodeTaken:
            outcomes.append("taken")

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["new", "taken", "taken"]
        (only,) = registry.list_dossiers(state=DossierState.receiving)
        assert (only.code, only.legacy_code, only.handed_over_from, only.handover_batch) == (
            GOOD["legacy_code"],
            GOOD["legacy_code"],
            OLD,
            "b1",
        )
        # A code the sequence would draw that a handed-over dossier holds is passed over.
        _claim(registry, "e" * 64, LegacyIntake(f"{NEW}-240523-0001", OLD, "b1"))
        assert _claim(registry, "f" * 64, None).record.code == f"{NEW}-240523-0002"
    finally:
        registry.close()


# --- the migration on SQLite and PostgreSQL --------------------------------------------------------


def test_r0004_adds_the_hand_over_columns_to_a_registry_with_dossiers(registry_url: str) -> None:
    if registry_url.startswith("sqlite:///"):
        Path(registry_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(registry_url)
    schema.upgrade(engine, "0003")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dossiers (code, procedure, agency_code, input_sha256, input_name, state, received_at, "
                "due_at, created_at, updated_at) VALUES ('000.00.00.H56-250701-0001', 'p', '000.00.00.H56', "
                "'ab', 'a.pdf', 'received', :t, :t, :t, :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    registry = Registry(registry_url, upgrade="always")
    try:
        assert registry.schema_revision() == schema.head()  # 0004 and any later revision
        old = registry.get("000.00.00.H56-250701-0001")
        assert (old.state, old.legacy_code, old.handed_over_from, old.handover_batch) == ("received", None, None, None)
        with registry.engine.connect() as conn:
            inspector = sa.inspect(conn)
            indexes = {i["name"]: i for i in inspector.get_indexes("dossiers")}
            assert indexes["ix_dossiers_legacy_code"]["unique"]
            assert "handover_records" in inspector.get_table_names()
        assert registry.handover_record("none") is None
    finally:
        registry.close()
    # and back down, then up again
    if registry_url.startswith("sqlite:///"):
        Path(registry_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(registry_url)
    schema.upgrade(engine, "0004")
    from alembic import command

    from storage.schema import _config  # the migrations' own configuration

    with engine.begin() as conn:
        cfg = _config(conn)
        command.downgrade(cfg, "0003")
        assert "legacy_code" not in {c["name"] for c in sa.inspect(conn).get_columns("dossiers")}
    engine.dispose()


# --- the command, through Prefect (slow) ----------------------------------------------------------


@pytest.mark.slow
def test_hoso_reprocess_hands_over_a_legacy_archive(tmp_path: Path) -> None:
    """Through the command and its Prefect flow (an ephemeral server in the command's process)."""
    archive = make_legacy_archive(tmp_path / "archive", 3, seed=11, variants=1, flawed=3)
    hoso = Hoso(tmp_path / "var", {"HOSO_TIMEZONE": TZ})
    proc = hoso("reprocess", str(archive.folder), "--agency-map", str(archive.agency_map), "--json", timeout=900)
    assert proc.returncode == ExitCode.failed, proc.stderr  # three rows could not be handed over
    summary = json.loads(proc.stdout)
    assert (summary["total"], summary["processed"], summary["failed"]) == (6, 3, 3)
    assert summary["handover_record"] == keys.handover_key(summary["batch_id"])
    record = hoso.registry.handover_record(summary["batch_id"])
    assert record is not None and record.rows == len(archive.rows) == summary["total"]
    row = archive.good[0]
    status = hoso("status", row.legacy_code, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["code"], shown["state"], shown["handed_over_from"]) == (row.legacy_code, row.state, row.agency_code)
    assert datetime.fromisoformat(shown["received_at"]) == datetime.fromisoformat(row.received_at)
    assert f"bàn giao từ {row.agency_code}" in hoso("status", row.legacy_code).stdout
    rerun = hoso("reprocess", str(archive.folder), "--agency-map", str(archive.agency_map), timeout=900)
    assert "Biên bản bàn giao: handovers/" in rerun.stdout, rerun.stderr
    assert "đã có từ trước: 3" in rerun.stdout
    bad_map = tmp_path / "bad-map.csv"
    bad_map.write_text("000.21.00.H56\n", encoding="utf-8")
    refused = hoso("reprocess", str(archive.folder), "--agency-map", str(bad_map))
    assert refused.returncode == ExitCode.input_corrupt, refused.stderr
    fsck = hoso("fsck", "--json", "--no-signatures")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert timedelta(0) <= datetime.now(UTC) - datetime.fromisoformat(shown["updated_at"])
