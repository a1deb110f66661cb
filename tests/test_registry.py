"""The dossier registry on SQLite and on a real PostgreSQL (fresh schema per test)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.core.errors import DossierNotFound, InvalidState, StorageFailed
from pipeline.core.models import DocumentInfo, DossierState
from storage.objects import ObjectInfo
from storage.registry import Registry

AGENCY = "000.00.31.H26"
RECEIVED = datetime(2025, 3, 3, 9, 30, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = Registry(registry_url)
    yield reg
    reg.close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reserve(reg: Registry, name: str, **over: Any) -> Any:
    args: dict[str, Any] = {
        "input_sha256": sha(name),
        "input_name": f"{name}.pdf",
        "procedure": "khai_sinh",
        "procedure_code": "1.001193",
        "agency_code": AGENCY,
        "received_at": RECEIVED,
        "due_at": RECEIVED + timedelta(days=3),
        "applicant_id": "001085012345",
        "actor": "desk-1",
    }
    args.update(over)
    return reg.reserve(**args)


def obj(key: str, data: bytes, content_type: str = "application/pdf") -> ObjectInfo:
    return ObjectInfo(
        key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=content_type
    )


def test_reserve_finalize_get(registry: Registry) -> None:
    rec = reserve(registry, "dossier-a")
    assert rec.code == f"{AGENCY}-250303-0001"
    assert rec.state == DossierState.receiving
    assert rec.intake_status is None and rec.completed_at is None
    assert rec.received_at == RECEIVED and rec.received_at.tzinfo is not None
    assert [e.action for e in rec.events] == ["reserve"]

    docs = [
        DocumentInfo(
            type="to_khai_khai_sinh", pages=[1, 2], confidence=0.91, fields={"ho_ten": "Nguyễn Văn A"}
        ),
        DocumentInfo(type="giay_chung_sinh", pages=[3], confidence=0.8, field_confidence={"so": 0.7}),
    ]
    receipt = {"dossier_code": rec.code, "received_at": RECEIVED, "status": "accepted"}
    final = registry.finalize_intake(
        rec.code,
        state=DossierState.received,
        intake_status="accepted",
        documents=docs,
        artifacts=[
            ("input", obj(f"{rec.code}/input.pdf", b"in")),
            ("receipt", obj(f"{rec.code}/r.pdf", b"r")),
        ],
        receipt=receipt,
        actor="desk-1",
    )
    got = registry.get(rec.code)
    assert got == final
    assert got.state == DossierState.received and got.intake_status == "accepted"
    assert [d.to_info() for d in got.documents] == docs
    assert [d.position for d in got.documents] == [1, 2]
    assert got.artifacts["input"].object_key == f"{rec.code}/input.pdf"
    assert got.artifacts["receipt"].sha256 == hashlib.sha256(b"r").hexdigest()
    assert got.receipt_json == {
        "dossier_code": rec.code,
        "received_at": RECEIVED.isoformat(),
        "status": "accepted",
    }
    assert [(e.from_state, e.to_state, e.action) for e in got.events] == [
        (None, DossierState.receiving, "reserve"),
        (DossierState.receiving, DossierState.received, "intake"),
    ]
    for stamp in (
        got.created_at,
        got.updated_at,
        got.completed_at,
        got.events[0].at,
        got.artifacts["input"].created_at,
    ):
        assert stamp is not None and stamp.utcoffset() == timedelta(0)
    assert got.due_at == RECEIVED + timedelta(days=3)

    with pytest.raises(InvalidState):  # intake closes once
        registry.finalize_intake(
            rec.code,
            state=DossierState.rejected,
            intake_status="rejected",
            documents=[],
            artifacts=[],
            receipt={},
            actor="desk-1",
        )
    with pytest.raises(DossierNotFound):
        registry.get(f"{AGENCY}-250303-9999")


def test_reserve_same_input_resumes(registry: Registry) -> None:
    first = reserve(registry, "same")
    again = reserve(registry, "same", input_name="renamed.pdf", actor="desk-2")
    assert again == first
    assert registry.find_by_input(sha("same"), "khai_sinh") == first
    assert registry.find_by_input(sha("same"), "ket_hon") is None
    other_procedure = reserve(registry, "same", procedure="ket_hon")
    assert other_procedure.code != first.code
    assert len(registry.list_dossiers()) == 2


def test_code_sequence_per_agency_and_day(registry_url: str) -> None:
    reg = Registry(registry_url, timezone="Asia/Ho_Chi_Minh")
    try:
        day1 = [reserve(reg, f"d1-{i}").code for i in range(3)]
        assert day1 == [f"{AGENCY}-250303-{n:04d}" for n in (1, 2, 3)]
        next_day = reserve(reg, "d2", received_at=RECEIVED + timedelta(days=1)).code
        assert next_day == f"{AGENCY}-250304-0001"
        other_agency = reserve(reg, "o1", agency_code="000.00.31.H27").code
        assert other_agency == "000.00.31.H27-250303-0001"
        # 20:00 UTC is already the next morning in Hanoi: the local calendar day counts.
        late = reserve(reg, "late", received_at=datetime(2025, 3, 3, 20, 0, tzinfo=UTC)).code
        assert late == f"{AGENCY}-250304-0002"
        assert reserve(reg, "d1-3").code == f"{AGENCY}-250303-0004"
    finally:
        reg.close()


def test_concurrent_reservations_get_distinct_codes(registry: Registry) -> None:
    codes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(w: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                code = reserve(registry, f"w{w}-{i}").code
                with lock:
                    codes.append(code)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(codes) == [f"{AGENCY}-250303-{n:04d}" for n in range(1, 21)]


def test_concurrent_reservations_of_one_input_share_a_code(registry: Registry) -> None:
    codes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            codes.append(reserve(registry, "the-same-scan").code)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(codes) == 4 and len(set(codes)) == 1
    assert len(registry.list_dossiers()) == 1
    # A rolled-back duplicate must not burn a sequence number.
    assert reserve(registry, "next").code == f"{AGENCY}-250303-0002"


def _finalize(reg: Registry, code: str, state: DossierState = DossierState.received) -> Any:
    return reg.finalize_intake(
        code, state=state, intake_status=state.value, documents=[], artifacts=[], receipt={}, actor="desk-1"
    )


def test_discard_only_while_receiving(registry: Registry) -> None:
    rec = reserve(registry, "to-discard")
    registry.discard(rec.code)
    with pytest.raises(DossierNotFound):
        registry.get(rec.code)
    assert registry.find_by_input(sha("to-discard"), "khai_sinh") is None

    kept = reserve(registry, "to-keep")
    _finalize(registry, kept.code)
    with pytest.raises(InvalidState):
        registry.discard(kept.code)
    assert registry.get(kept.code).state == DossierState.received
    with pytest.raises(DossierNotFound):
        registry.discard("nope")


def test_transition_rules_and_artifacts(registry: Registry) -> None:
    rec = reserve(registry, "t")
    with pytest.raises(InvalidState):  # receiving -> returned is not a default transition
        registry.transition(rec.code, DossierState.returned, actor="clerk", action="return")
    _finalize(registry, rec.code)
    with pytest.raises(InvalidState):
        registry.transition(
            rec.code,
            DossierState.returned,
            actor="clerk",
            action="return",
            allowed_from={DossierState.needs_supplement},
        )
    assert registry.get(rec.code).returned_at is None

    signed = registry.transition(
        rec.code,
        DossierState.received,
        actor="clerk",
        action="sign",
        artifacts=[("result", obj("r/1.pdf", b"v1"))],
        allowed_from={DossierState.received},
    )
    assert signed.artifacts["result"].object_key == "r/1.pdf" and signed.returned_at is None

    done = registry.transition(
        rec.code,
        DossierState.returned,
        actor="clerk",
        action="return",
        note="trả kết quả",
        artifacts=[
            ("result", obj("r/2.pdf", b"v2")),
            ("seal", obj("r/seal.json", b"{}", "application/json")),
        ],
    )
    assert done.state == DossierState.returned
    assert done.returned_at is not None and done.returned_at.utcoffset() == timedelta(0)
    assert set(done.artifacts) == {"result", "seal"}
    assert done.artifacts["result"].object_key == "r/2.pdf"
    assert done.artifacts["result"].sha256 == hashlib.sha256(b"v2").hexdigest()
    assert [(e.action, e.to_state) for e in done.events][-2:] == [
        ("sign", DossierState.received),
        ("return", DossierState.returned),
    ]
    assert done.events[-1].note == "trả kết quả" and done.events[-1].actor == "clerk"
    with pytest.raises(InvalidState):  # returned is final
        registry.transition(rec.code, DossierState.received, actor="clerk", action="reopen")
    with pytest.raises(DossierNotFound):
        registry.transition("missing", DossierState.returned, actor="clerk", action="return")


def test_list_and_stale(registry: Registry) -> None:
    a = reserve(registry, "a", received_at=RECEIVED - timedelta(days=2))
    b = reserve(registry, "b")
    c = reserve(registry, "c", received_at=RECEIVED + timedelta(days=1))
    _finalize(registry, b.code, DossierState.needs_supplement)
    assert [r.code for r in registry.list_dossiers()] == [a.code, b.code, c.code]
    assert [r.code for r in registry.list_dossiers(state=DossierState.needs_supplement)] == [b.code]
    assert [r.code for r in registry.list_dossiers(since=RECEIVED)] == [b.code, c.code]
    assert [r.code for r in registry.list_dossiers(since=RECEIVED, until=RECEIVED + timedelta(hours=1))] == [
        b.code
    ]
    assert [r.code for r in registry.stale_reservations(timedelta(0))] == [a.code, c.code]
    assert registry.stale_reservations(timedelta(hours=1)) == []


def test_batch_items(registry: Registry) -> None:
    rec = reserve(registry, "batch-1")
    registry.record_batch_item(
        "B1", "a.pdf", outcome="processed", input_sha256=sha("batch-1"), dossier_code=rec.code
    )
    registry.record_batch_item("B1", "b.pdf", outcome="failed", reason="input_encrypted")
    registry.record_batch_item("B2", "a.pdf", outcome="already_done", dossier_code=rec.code)
    items = registry.batch_items("B1")
    assert [(i.input_name, i.outcome, i.dossier_code, i.reason) for i in items] == [
        ("a.pdf", "processed", rec.code, None),
        ("b.pdf", "failed", None, "input_encrypted"),
    ]
    assert items[0].input_sha256 == sha("batch-1") and items[0].at.utcoffset() == timedelta(0)
    assert [i.outcome for i in registry.batch_items("B2")] == ["already_done"]
    assert registry.batch_items("nope") == []
    with pytest.raises(ValueError):
        registry.record_batch_item("B1", "c.pdf", outcome="maybe")  # type: ignore[arg-type]


def test_reopen_keeps_data(registry_url: str) -> None:
    reg = Registry(registry_url)
    code = reserve(reg, "persist").code
    reg.close()
    again = Registry(registry_url)
    try:
        assert again.get(code).input_name == "persist.pdf"
        assert reserve(again, "persist-2").code.endswith("-0002")
    finally:
        again.close()


def test_naive_datetime_refused(registry: Registry) -> None:
    with pytest.raises(ValueError):
        reserve(registry, "naive", received_at=datetime(2025, 3, 3, 9, 30))


def test_unreachable_database_is_storage_failed() -> None:
    with pytest.raises(StorageFailed, match="unavailable"):
        Registry("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_records_are_read_from_rows_by_attribute() -> None:
    """Each record model reads its ORM row's attributes (``from_attributes``): a column added to a table
    and not to its record, or a record field no row has, fails here."""
    from pydantic import BaseModel
    from sqlalchemy import inspect as sa_inspect

    from storage.registry import (
        Artifact,
        ArtifactRecord,
        BatchItem,
        BatchItemRecord,
        Document,
        DocumentRecord,
        Dossier,
        DossierRecord,
        Event,
        EventRecord,
    )

    pairs: list[tuple[type[BaseModel], type[Any], set[str]]] = [
        (DossierRecord, Dossier, set()),
        (DocumentRecord, Document, {"id", "dossier_code"}),
        (ArtifactRecord, Artifact, {"id", "dossier_code"}),
        (EventRecord, Event, {"id", "dossier_code"}),
        (BatchItemRecord, BatchItem, {"id"}),
    ]
    for record, row, internal in pairs:
        assert record.model_config.get("from_attributes") is True, record.__name__
        mapper = sa_inspect(row)
        attributes = {c.key for c in mapper.column_attrs} | {r.key for r in mapper.relationships}
        assert set(record.model_fields) == attributes - internal - {"dossier"}, record.__name__

    at = datetime(2025, 3, 3, 2, 30, tzinfo=UTC)
    row = Dossier(
        code="D-1", procedure="khai_sinh", procedure_code=None, agency_code=AGENCY, input_sha256=sha("x"),
        input_name="x.pdf", applicant_id=None, state="received", intake_status="accepted", received_at=at,
        due_at=at, completed_at=at, returned_at=None, receipt_json={"a": 1}, created_at=at, updated_at=at,
        documents=[Document(position=1, doc_type="cccd", pages=[1], confidence=0.9, fields={"id_number": "1"},
                            field_confidence={})],
        artifacts=[Artifact(name=n, object_key=f"dossiers/D-1/{n}", sha256=sha(n), size=1,
                            content_type="application/pdf", created_at=at) for n in ("input", "digitised")],
        events=[Event(at=at, actor="desk", from_state=None, to_state="receiving", action="reserve")],
    )
    record = DossierRecord.model_validate(row)
    assert record.state is DossierState.received
    assert {name: a.object_key for name, a in record.artifacts.items()} == {
        "input": "dossiers/D-1/input", "digitised": "dossiers/D-1/digitised"}
    assert record.documents[0].to_info() == DocumentInfo(type="cccd", pages=[1], confidence=0.9,
                                                         fields={"id_number": "1"})
    assert [(e.from_state, e.to_state) for e in record.events] == [(None, DossierState.receiving)]
