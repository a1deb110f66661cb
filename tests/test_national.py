"""National databases: the reference service as a real process, the embedded one, and a service that is down."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.servers import LOOPBACK, NatdbServer, free_ports

from pipeline.core.errors import ConfigurationError
from pipeline.core.models import DocumentInfo, Receipt
from pipeline.core.settings import Settings
from pipeline.domain.applicant import apply_applicant_check, consult_national_db, save_dossier_documents
from pipeline.domain.catalog import load_catalog
from pipeline.domain.extract import check_id
from pipeline.domain.validate import validate
from pipeline.national.db import (
    DisabledNationalDb,
    HttpNationalDb,
    NationalDb,
    NationalDbUnavailable,
    RegistryNationalDb,
    StoredDocument,
    synthetic_citizens,
)
from pipeline.usecases.services import Services
from storage.registry import Registry

SAMPLE = json.loads((Path(__file__).resolve().parents[1] / "pipeline/data/sample_dossier.json").read_text())
APPLICANT = SAMPLE["documents"][1]["fields"]  # the sample's CCCD: Trần Mỹ Khánh Oanh, 079178499748
NOBODY = "001090123456"  # a well-formed ID that is not in the seed
PROCEDURE = load_catalog().procedure("business_household_registration")


def test_seed_is_deterministic_valid_and_holds_the_sample_citizen() -> None:
    people = synthetic_citizens()
    assert len(people) == 201 and len({p.id_number for p in people}) == 201
    assert people[0].model_dump() == {k: APPLICANT[k] for k in ("id_number", "full_name", "date_of_birth", "gender")}
    # every ID is structurally right for its holder's birth year and gender (extract.check_id's rules)
    assert all(check_id(p.id_number, p.date_of_birth, p.gender) == 1.0 for p in people)
    assert NOBODY not in {p.id_number for p in people}
    synthetic_citizens.cache_clear()
    assert synthetic_citizens() == people


@pytest.fixture(params=["http", "embedded"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NationalDb]:
    """The reference service over HTTP (a real process), or the embedded one on a fresh registry."""
    if request.param == "http":
        server: NatdbServer = request.getfixturevalue("natdb")
        client: NationalDb = HttpNationalDb(server.url, timeout=5, retries=1)
    else:
        client = RegistryNationalDb(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))
    try:
        yield client
    finally:
        client.close()


def test_verify_outcomes(db: NationalDb) -> None:
    ok = db.verify_citizen(APPLICANT["id_number"], "TRAN MY KHANH OANH", "1978-03-01")  # marks dropped; ISO date
    assert (ok.outcome, ok.mismatched) == ("verified", [])
    slip = db.verify_citizen(APPLICANT["id_number"], "TRẦN MỸ KHÁNH 0ANH", APPLICANT["date_of_birth"])  # O → 0
    assert slip.outcome == "verified"
    name = db.verify_citizen(APPLICANT["id_number"], "Trần Mỹ Khánh Linh", APPLICANT["date_of_birth"])  # 2 edits
    assert (name.outcome, name.mismatched) == ("mismatch", ["full_name"])
    both = db.verify_citizen(APPLICANT["id_number"], "Trần Văn An", "02/03/1978")
    assert both.mismatched == ["full_name", "date_of_birth"]
    assert "không khớp" in both.notes_vi[0]
    assert db.verify_citizen(NOBODY, "Trần Văn An", None).outcome == "not_found"
    assert db.verify_citizen(APPLICANT["id_number"], None, None).outcome == "verified"  # existence only


def test_store_saves_replaces_and_finds_newest_first(db: NationalDb) -> None:
    owner = synthetic_citizens()[7].id_number
    t0 = datetime(2025, 7, 1, 3, 0, tzinfo=UTC)

    def doc(code: str, doc_type: str, at: datetime, key: str = "k") -> StoredDocument:
        return StoredDocument(id_number=owner, doc_type=doc_type, object_key=f"dossiers/{code}/{key}.pdf",
                              sha256="a" * 64, dossier_code=code, pages=[2], fields={"id_number": owner},
                              saved_at=at)

    db.save_document(doc("D-1", "cccd", t0))
    db.save_document(doc("D-2", "cccd", t0 + timedelta(days=3)))
    db.save_document(doc("D-2", "so_ho_khau", t0 + timedelta(days=3)))
    db.save_document(doc("D-1", "cccd", t0 + timedelta(hours=1), key="v2"))  # same dossier and type: replaced
    found = db.find_documents(owner, ["cccd"])
    assert [(d.dossier_code, d.object_key) for d in found] == [
        ("D-2", "dossiers/D-2/k.pdf"),
        ("D-1", "dossiers/D-1/v2.pdf"),
    ]
    assert found[0].saved_at == t0 + timedelta(days=3) and found[0].pages == [2]
    assert {d.doc_type for d in db.find_documents(owner, ["cccd", "so_ho_khau"])} == {"cccd", "so_ho_khau"}
    assert db.find_documents(synthetic_citizens()[8].id_number, ["cccd"]) == []
    assert db.find_documents(owner, []) == []


def test_service_rejects_malformed_ids(natdb: NatdbServer) -> None:
    client = HttpNationalDb(natdb.url, timeout=5, retries=0)
    check = client.verify_citizen("07918242460", None, None)  # 11 digits: the service answers 422
    assert check.outcome == "unverified" and "422" in (check.reason or "")
    with pytest.raises(NationalDbUnavailable):
        client.find_documents("abc", ["cccd"])


def test_nothing_listening_is_unverified_quickly_and_once() -> None:
    (port,) = free_ports(1, with_grpc=False)
    client = HttpNationalDb(f"http://{LOOPBACK}:{port}", timeout=2, retries=2, backoff=0.05)
    start = time.perf_counter()
    check = client.verify_citizen(APPLICANT["id_number"], APPLICANT["full_name"], APPLICANT["date_of_birth"])
    assert check.outcome == "unverified" and "3 attempts" in (check.reason or "")
    assert "ConnectError" in (check.reason or "")
    assert "vẫn được tiếp nhận" in check.notes_vi[0]
    with pytest.raises(NationalDbUnavailable):  # remembered as down: no second round of attempts
        client.find_documents(APPLICANT["id_number"], ["cccd"])
    assert time.perf_counter() - start < 2


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung service)."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_hung_service_times_out_into_unverified(silent_port: int) -> None:
    client = HttpNationalDb(f"http://{LOOPBACK}:{silent_port}", timeout=0.3, retries=1, backoff=0.05)
    start = time.perf_counter()
    check = client.verify_citizen(APPLICANT["id_number"], APPLICANT["full_name"], APPLICANT["date_of_birth"])
    elapsed = time.perf_counter() - start
    assert check.outcome == "unverified" and "no answer within 0.3 s" in (check.reason or "")
    assert 0.6 <= elapsed < 3, elapsed  # two attempts of 0.3 s each, bounded


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first request, then a real 'verified' answer."""

    calls = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls == 1:
            self.send_response(503)
            self.end_headers()
            return
        body = b'{"outcome": "verified", "mismatched": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_5xx_is_retried() -> None:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = HttpNationalDb(f"http://{LOOPBACK}:{server.server_port}", timeout=2, retries=2, backoff=0.01)
        assert client.verify_citizen(APPLICANT["id_number"], None, None).outcome == "verified"
        assert _Flaky.calls == 2
    finally:
        server.shutdown()
        server.server_close()


def _form(fields: dict[str, str]) -> DocumentInfo:
    return DocumentInfo(type="giay_de_nghi_dang_ky_ho_kinh_doanh", pages=[1], confidence=0.95, fields=fields)


def test_desk_reuses_a_stored_cccd_by_reference(db: NationalDb) -> None:
    # a citizen no other test stores documents for (the HTTP service lives for the whole session)
    person = synthetic_citizens()[11].model_dump()
    db.save_document(StoredDocument(
        id_number=person["id_number"], doc_type="cccd", object_key="dossiers/OLD-1/digitised.pdf", sha256="b" * 64,
        dossier_code="OLD-1", pages=[2], fields=person, saved_at=datetime(2025, 6, 20, tzinfo=UTC),
    ))
    documents = [_form({k: person[k] for k in ("full_name", "id_number", "date_of_birth")})]
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], documents)
    assert check is not None and check.outcome == "verified"
    assert len(reused) == 1
    cccd = reused[0]
    assert (cccd.type, cccd.source, cccd.pages, cccd.fields["id_number"]) == ("cccd", "reused", [], person["id_number"])
    assert cccd.reference is not None
    assert (cccd.reference.dossier_code, cccd.reference.pages) == ("OLD-1", [2])
    validation = apply_applicant_check(validate(PROCEDURE, [*documents, *reused], load_catalog()), check)
    assert (validation.status, validation.missing) == ("accepted", [])

    # the same form under a name the population DB does not know for this ID: supplement, nothing reused
    wrong = [_form({"full_name": "Lâm Quốc Trung", "id_number": person["id_number"]})]
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], wrong)
    assert check is not None and check.outcome == "mismatch" and reused == []
    scanned_both = [*wrong, DocumentInfo(type="cccd", pages=[2], confidence=0.9)]
    validation = apply_applicant_check(validate(PROCEDURE, scanned_both, load_catalog()), check)
    assert validation.status == "needs_supplement" and validation.missing == []
    assert "không khớp với Cơ sở dữ liệu quốc gia về dân cư" in validation.reasons_vi[-1]


def test_desk_without_a_service_accepts_and_reuses_nothing(silent_port: int) -> None:
    client = HttpNationalDb(f"http://{LOOPBACK}:{silent_port}", timeout=0.2, retries=0)
    documents = [_form({"full_name": APPLICANT["full_name"], "id_number": APPLICANT["id_number"]}),
                 DocumentInfo(type="cccd", pages=[2], confidence=0.9, fields=APPLICANT)]
    check, reused = consult_national_db(client, PROCEDURE, APPLICANT["id_number"], documents)
    assert check is not None and check.outcome == "unverified" and reused == []
    validation = apply_applicant_check(validate(PROCEDURE, documents, load_catalog()), check)
    assert validation.status == "accepted"
    # only the form: the CCCD cannot be looked up, so it is missing (a supplement, not a rejection)
    check, reused = consult_national_db(client, PROCEDURE, APPLICANT["id_number"], documents[:1])
    assert reused == [] and validation.status == "accepted"
    assert validate(PROCEDURE, documents[:1], load_catalog()).status == "needs_supplement"


def _receipt(status: str, documents: list[DocumentInfo], applicant: str | None) -> Receipt:
    now = datetime(2025, 7, 1, 2, 0, tzinfo=UTC)
    return Receipt(dossier_code="D-9", procedure=PROCEDURE.key, status=status, received_at=now,  # type: ignore[arg-type]
                   due_at=now, applicant_id=applicant, pages=[], documents=documents, missing=[], unexpected=[],
                   artifacts={"digitised": "dossiers/D-9/digitised.pdf"})


def test_saving_keeps_only_the_applicants_own_recognised_papers(tmp_path: Path) -> None:
    db = RegistryNationalDb(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))
    me, child = APPLICANT["id_number"], synthetic_citizens()[3].id_number
    docs = [
        _form({"id_number": me}),
        DocumentInfo(type="cccd", pages=[2], confidence=0.9, fields={"id_number": me}),
        DocumentInfo(type="giay_chung_sinh", pages=[3], confidence=0.9, fields={"id_number": child}),
        DocumentInfo(type="unknown", pages=[4], confidence=0.2),
        DocumentInfo(type="so_ho_khau", pages=[], confidence=1.0, source="reused"),
    ]
    assert save_dossier_documents(db, _receipt("rejected", docs, me), "c" * 64) == 0
    assert save_dossier_documents(db, _receipt("accepted", docs, None), "c" * 64) == 0
    assert save_dossier_documents(db, _receipt("needs_supplement", docs, me), "c" * 64) == 2
    kept = db.find_documents(me, ["cccd", "giay_de_nghi_dang_ky_ho_kinh_doanh", "so_ho_khau", "unknown"])
    assert sorted((d.doc_type, tuple(d.pages)) for d in kept) == [
        ("cccd", (2,)),
        ("giay_de_nghi_dang_ky_ho_kinh_doanh", (1,)),
    ]
    assert db.find_documents(child, ["giay_chung_sinh"]) == []
    # a store that is down loses the saving, not the dossier
    (port,) = free_ports(1, with_grpc=False)
    down = HttpNationalDb(f"http://{LOOPBACK}:{port}", timeout=1, retries=0)
    assert save_dossier_documents(down, _receipt("accepted", docs, me), "c" * 64) == 0


def test_settings_choose_the_implementation(tmp_path: Path) -> None:
    assert isinstance(Services(Settings(data_dir=tmp_path, natdb="off")).national_db(), DisabledNationalDb)
    assert isinstance(Services(Settings(data_dir=tmp_path)).national_db(), RegistryNationalDb)
    http = Services(Settings(data_dir=tmp_path, natdb="http", natdb_url="http://127.0.0.1:9")).national_db()
    assert isinstance(http, HttpNationalDb)
    http.close()
    with pytest.raises(ConfigurationError):
        Services(Settings(data_dir=tmp_path, natdb="http")).national_db()


def test_national_tables_are_the_registrys_one_schema(registry_url: str) -> None:
    """``natdb_*`` live on the registry's metadata and are created with its tables, before any adapter."""
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase

    import pipeline.national.db as natdb_module
    from storage.registry import Base, NatdbCitizen, NatdbCitizenDocument

    assert {"natdb_citizens", "natdb_citizen_documents", "dossiers"} <= set(Base.metadata.tables)
    assert NatdbCitizen.metadata is Base.metadata and NatdbCitizenDocument.metadata is Base.metadata
    declared = [v for v in vars(natdb_module).values() if isinstance(v, type) and issubclass(v, DeclarativeBase)]
    assert all(cls.metadata is Base.metadata for cls in declared)

    registry = Registry(registry_url)
    try:
        assert {"natdb_citizens", "natdb_citizen_documents"} <= set(sa.inspect(registry.engine).get_table_names())
        db = RegistryNationalDb(registry)  # seeds the registry's tables; creates none
        assert db.citizen_count() == len(synthetic_citizens())
        saved = db.save_document(StoredDocument(id_number=APPLICANT["id_number"], doc_type="cccd", sha256="c" * 64,
                                                object_key="dossiers/D-7/digitised.pdf", dossier_code="D-7",
                                                pages=[2], fields={"id_number": APPLICANT["id_number"]}))
        (found,) = db.find_documents(APPLICANT["id_number"], ["cccd"])
        assert found == saved and found.saved_at is not None and found.saved_at.utcoffset() == timedelta(0)
        with registry.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(NatdbCitizenDocument)) == 1
    finally:
        registry.close()
