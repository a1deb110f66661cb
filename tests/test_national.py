"""National databases: the reference service as a real process, the embedded one, and a service that is down;
who may ask the service what; which stored documents a dossier may reuse."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from pyhanko.sign.fields import MDPPerm
from reportlab.pdfgen import canvas
from support.servers import LOOPBACK, NATDB_CLIENTS, NatdbServer, free_ports

from pipeline.core.errors import ConfigurationError
from pipeline.core.models import DocumentInfo, Receipt
from pipeline.core.settings import Settings
from pipeline.domain.applicant import (
    MAX_REUSE_CANDIDATES,
    ReuseGuard,
    apply_applicant_check,
    consult_national_db,
    save_dossier_documents,
)
from pipeline.domain.catalog import load_catalog
from pipeline.domain.extract import check_id
from pipeline.domain.validate import validate
from pipeline.national.auth import add_client, load_clients, token_hash
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
from signing.identities import SignerIdentities
from signing.pki import ensure_dev_pki
from signing.signers import OFFICER_STAMP_BOX, SigningKeys, sign_pdf
from storage import keys
from storage.objects import LocalObjectStore
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
        client: NationalDb = HttpNationalDb(server.url, token=server.worker_token, timeout=5, retries=1)
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
    client = HttpNationalDb(natdb.url, token=natdb.worker_token, timeout=5, retries=0)
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


PASSPHRASE = b"test-passphrase"


def _pdf(text: str) -> bytes:
    """A one-page PDF whose text stays readable in the bytes (so a test can alter it in place)."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595.28, 841.89), pageCompression=0)
    c.drawString(72, 700, text)
    c.showPage()
    c.save()
    return buf.getvalue()


def _certify(signing_keys: SigningKeys, pdf: bytes) -> bytes:
    """Certified by the desk officer, as the desk certifies a digitised copy."""
    return sign_pdf(pdf, signing_keys.signer("officer"), field_name="CanBoTiepNhan",
                    reason="Chứng thực bản số hóa từ hồ sơ giấy", location="Hà Nội", signer_name="Cán bộ tiếp nhận",
                    role_label="Cán bộ tiếp nhận", visible_box=OFFICER_STAMP_BOX, certify=MDPPerm.NO_CHANGES)


@pytest.fixture(scope="module")
def pki_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other-pki")


@pytest.fixture(scope="module")
def roots(pki_dirs: tuple[Path, Path]) -> list[bytes | Path]:
    return [ensure_dev_pki(pki_dirs[0], PASSPHRASE).root_cert]


@pytest.fixture(scope="module")
def identities(pki_dirs: tuple[Path, Path]) -> SignerIdentities:
    """The signers of the genuine copies (what Services configures from its dev PKI)."""
    return SignerIdentities.from_config(ensure_dev_pki(pki_dirs[0], PASSPHRASE).identity_files())


@pytest.fixture(scope="module")
def genuine(pki_dirs: tuple[Path, Path]) -> bytes:
    """A digitised copy as the desk stores it: signed by the officer of the trusted PKI."""
    return _certify(SigningKeys(ensure_dev_pki(pki_dirs[0], PASSPHRASE), PASSPHRASE), _pdf("Ban so hoa CCCD 001"))


@pytest.fixture(scope="module")
def foreign(pki_dirs: tuple[Path, Path]) -> bytes:
    """The same kind of copy signed under another (untrusted) PKI."""
    return _certify(SigningKeys(ensure_dev_pki(pki_dirs[1], PASSPHRASE), PASSPHRASE), _pdf("Ban so hoa CCCD 001"))


def _keep(store: LocalObjectStore, code: str, pdf: bytes, key: str | None = None) -> tuple[str, str]:
    """Store ``pdf`` as dossier ``code``'s digitised copy (or under ``key``); its key and SHA-256."""
    key = key or keys.digitised_key(code)
    store.put_bytes(key, pdf, content_type="application/pdf")
    return key, hashlib.sha256(pdf).hexdigest()


def test_desk_reuses_a_stored_cccd_by_reference(
    db: NationalDb, tmp_path: Path, genuine: bytes, roots: list[bytes | Path], identities: SignerIdentities
) -> None:
    # a citizen no other test stores documents for (the HTTP service lives for the whole session)
    person = synthetic_citizens()[11].model_dump()
    store = LocalObjectStore(tmp_path / "objects")
    key, sha = _keep(store, "OLD-1", genuine)
    db.save_document(StoredDocument(
        id_number=person["id_number"], doc_type="cccd", object_key=key, sha256=sha,
        dossier_code="OLD-1", pages=[2], fields=person, saved_at=datetime(2025, 6, 20, tzinfo=UTC),
    ))
    documents = [_form({k: person[k] for k in ("full_name", "id_number", "date_of_birth")})]
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], documents,
                                        ReuseGuard(store, roots, identities))
    assert check is not None and check.outcome == "verified"
    assert len(reused) == 1
    cccd = reused[0]
    assert (cccd.type, cccd.source, cccd.pages, cccd.fields["id_number"]) == ("cccd", "reused", [], person["id_number"])
    assert cccd.reference is not None
    assert (cccd.reference.dossier_code, cccd.reference.pages) == ("OLD-1", [2])
    assert (cccd.reference.object_key, cccd.reference.sha256) == (key, sha)
    assert not any("Không sử dụng lại" in note for note in check.notes_vi)
    validation = apply_applicant_check(validate(PROCEDURE, [*documents, *reused], load_catalog()), check)
    assert (validation.status, validation.missing) == ("accepted", [])

    # the same form under a name the population DB does not know for this ID: supplement, nothing reused
    wrong = [_form({"full_name": "Lâm Quốc Trung", "id_number": person["id_number"]})]
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], wrong, ReuseGuard(store, roots, identities))
    assert check is not None and check.outcome == "mismatch" and reused == []
    scanned_both = [*wrong, DocumentInfo(type="cccd", pages=[2], confidence=0.9)]
    validation = apply_applicant_check(validate(PROCEDURE, scanned_both, load_catalog()), check)
    assert validation.status == "needs_supplement" and validation.missing == []
    assert "không khớp với Cơ sở dữ liệu quốc gia về dân cư" in validation.reasons_vi[-1]


FORGERIES = {
    "wrong_sha256": "mã băm không khớp",
    "missing_object": "tệp lưu trữ không còn",
    "unsigned": "chữ ký số không hợp lệ",
    "tampered_after_signing": "chữ ký số không hợp lệ",
    "signed_by_an_untrusted_ca": "chữ ký số không hợp lệ",
    "not_a_digitised_copy": "không trỏ tới bản số hóa",
    "altered_inside_the_store": "không toàn vẹn",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_stored_document_is_never_reused(
    forgery: str, tmp_path: Path, genuine: bytes, foreign: bytes, roots: list[bytes | Path],
    identities: SignerIdentities,
) -> None:
    db = RegistryNationalDb(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))
    store = LocalObjectStore(tmp_path / "objects")
    person = synthetic_citizens()[12].model_dump()
    code = "FORGED-1"
    tampered = genuine.replace(b"CCCD 001", b"CCCD 999")
    assert tampered != genuine
    pdf = {"unsigned": _pdf("Ban so hoa CCCD 001"), "tampered_after_signing": tampered,
           "signed_by_an_untrusted_ca": foreign}.get(forgery, genuine)
    if forgery == "missing_object":
        key, sha = keys.digitised_key(code), hashlib.sha256(pdf).hexdigest()
    elif forgery == "not_a_digitised_copy":  # a genuine signed PDF, but not the named dossier's digitised copy
        key, sha = _keep(store, code, pdf, key=keys.digitised_key("SOMEONE-ELSE"))
    else:
        key, sha = _keep(store, code, pdf)
    if forgery == "wrong_sha256":
        sha = hashlib.sha256(b"another document").hexdigest()
    if forgery == "altered_inside_the_store":  # the bytes change behind the store's back
        (store.root / key).write_bytes(tampered)
    db.save_document(StoredDocument(id_number=person["id_number"], doc_type="cccd", object_key=key, sha256=sha,
                                    dossier_code=code, pages=[2], fields=person))

    documents = [_form({k: person[k] for k in ("full_name", "id_number", "date_of_birth")})]
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], documents,
                                        ReuseGuard(store, roots, identities))
    assert check is not None and check.outcome == "verified"
    assert reused == []
    (note,) = [n for n in check.notes_vi if "Không sử dụng lại" in n]
    assert code in note and FORGERIES[forgery] in note, note
    validation = validate(PROCEDURE, documents, load_catalog())
    assert validation.status == "needs_supplement" and ["cccd"] in validation.missing


def test_an_older_sound_copy_is_reused_when_the_newest_is_forged(
    tmp_path: Path, genuine: bytes, roots: list[bytes | Path], identities: SignerIdentities
) -> None:
    db = RegistryNationalDb(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))
    store = LocalObjectStore(tmp_path / "objects")
    person = synthetic_citizens()[13].model_dump()
    old_key, old_sha = _keep(store, "OLD-2", genuine)
    new_key, _ = _keep(store, "NEW-2", genuine.replace(b"CCCD 001", b"CCCD 999"))
    for code, key, sha, day in (("OLD-2", old_key, old_sha, 1), ("NEW-2", new_key, old_sha, 20)):
        db.save_document(StoredDocument(id_number=person["id_number"], doc_type="cccd", object_key=key, sha256=sha,
                                        dossier_code=code, fields=person, saved_at=datetime(2025, 6, day, tzinfo=UTC)))
    guard = ReuseGuard(store, roots, identities)
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], [_form({})], guard)
    assert [d.reference.dossier_code for d in reused if d.reference] == ["OLD-2"]
    assert check is not None and any("NEW-2" in n for n in check.notes_vi)


def test_a_flooded_store_costs_a_bounded_number_of_reads(
    tmp_path: Path, genuine: bytes, roots: list[bytes | Path], identities: SignerIdentities
) -> None:
    db = RegistryNationalDb(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))
    store = LocalObjectStore(tmp_path / "objects")
    person = synthetic_citizens()[14].model_dump()
    key, sha = _keep(store, "OLD-3", genuine)
    db.save_document(StoredDocument(id_number=person["id_number"], doc_type="cccd", object_key=key, sha256=sha,
                                    dossier_code="OLD-3", saved_at=datetime(2025, 1, 1, tzinfo=UTC)))
    for n in range(MAX_REUSE_CANDIDATES + 2):  # newer records pointing at nothing
        code = f"FLOOD-{n}"
        db.save_document(StoredDocument(id_number=person["id_number"], doc_type="cccd", sha256=sha,
                                        object_key=keys.digitised_key(code), dossier_code=code,
                                        saved_at=datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=n)))
    check, reused = consult_national_db(db, PROCEDURE, person["id_number"], [_form({})],
                                        ReuseGuard(store, roots, identities))
    assert reused == []
    assert check is not None and len([n for n in check.notes_vi if "FLOOD-" in n]) == MAX_REUSE_CANDIDATES


def test_desk_without_a_service_accepts_and_reuses_nothing(
    silent_port: int, tmp_path: Path, roots: list[bytes | Path], identities: SignerIdentities
) -> None:
    client = HttpNationalDb(f"http://{LOOPBACK}:{silent_port}", timeout=0.2, retries=0)
    guard = ReuseGuard(LocalObjectStore(tmp_path / "objects"), roots, identities)
    documents = [_form({"full_name": APPLICANT["full_name"], "id_number": APPLICANT["id_number"]}),
                 DocumentInfo(type="cccd", pages=[2], confidence=0.9, fields=APPLICANT)]
    check, reused = consult_national_db(client, PROCEDURE, APPLICANT["id_number"], documents, guard)
    assert check is not None and check.outcome == "unverified" and reused == []
    validation = apply_applicant_check(validate(PROCEDURE, documents, load_catalog()), check)
    assert validation.status == "accepted"
    # only the form: the CCCD cannot be looked up, so it is missing (a supplement, not a rejection)
    check, reused = consult_national_db(client, PROCEDURE, APPLICANT["id_number"], documents[:1], guard)
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
    token_file = tmp_path / "natdb-token"
    token_file.write_text("s3cr3t-token\n")
    http = Services(Settings(data_dir=tmp_path, natdb="http", natdb_url="http://127.0.0.1:9", natdb_token="other",
                             natdb_token_file=token_file)).national_db()
    assert isinstance(http, HttpNationalDb) and "s3cr3t" not in repr(http)
    assert http._client.headers["authorization"] == "Bearer s3cr3t-token"  # the file wins
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


# --- who may ask the service what ----------------------------------------------------------------

WRITER = synthetic_citizens()[20].model_dump()  # written to by the route tests only


def _document(code: str) -> dict[str, object]:
    return StoredDocument(id_number=WRITER["id_number"], doc_type="cccd", object_key=keys.digitised_key(code),
                          sha256="d" * 64, dossier_code=code, fields=WRITER).model_dump(mode="json")


def _call(natdb: NatdbServer, scope: str, headers: dict[str, str], code: str) -> httpx.Response:
    """One request to the route of ``scope``: verify MAI, read MAI's documents, or store one for WRITER."""
    with httpx.Client(base_url=natdb.url, timeout=10, trust_env=False) as client:
        if scope == "verify":
            body = {"id_number": APPLICANT["id_number"], "full_name": APPLICANT["full_name"]}
            return client.post("/v1/population/verify", json=body, headers=headers)
        if scope == "read":
            return client.get(f"/v1/citizens/{APPLICANT['id_number']}/documents", params={"type": ["cccd"]},
                              headers=headers)
        return client.put(f"/v1/citizens/{WRITER['id_number']}/documents", json=_document(code), headers=headers)


def _stored_codes(natdb: NatdbServer) -> set[str]:
    worker = HttpNationalDb(natdb.url, token=natdb.worker_token, timeout=10, retries=0)
    try:
        return {d.dossier_code for d in worker.find_documents(WRITER["id_number"], ["cccd"])}
    finally:
        worker.close()


#: A client whose scopes do not include the route's.
OTHER_SCOPE = {"verify": "read-only", "read": "write-only", "write": "verify-only"}


@pytest.mark.parametrize("who", ["no_token", "wrong_token", "wrong_scope", "right_scope"])
@pytest.mark.parametrize("scope", ["verify", "read", "write"])
def test_each_route_answers_only_a_token_with_its_scope(natdb: NatdbServer, scope: str, who: str) -> None:
    headers = {
        "no_token": {},
        "wrong_token": {"Authorization": "Bearer " + natdb.worker_token[:-2] + "xx"},
        "wrong_scope": {"Authorization": "Bearer " + natdb.tokens[OTHER_SCOPE[scope]]},
        "right_scope": {"Authorization": "Bearer " + natdb.tokens[f"{scope}-only"]},
    }[who]
    code = f"AUTH-{scope}-{who}"
    response = _call(natdb, scope, headers, code)
    if who == "right_scope":
        assert response.status_code == 200, response.text
        if scope == "verify":
            assert response.json() == {"outcome": "verified", "mismatched": []}
        if scope == "write":
            assert code in _stored_codes(natdb)
        return
    expected = {"no_token": (401, "authentication required"), "wrong_token": (401, "invalid token"),
                "wrong_scope": (403, "insufficient scope")}[who]
    assert (response.status_code, response.json()) == (expected[0], {"detail": expected[1]})
    assert response.headers["www-authenticate"].startswith("Bearer ")
    if who == "wrong_scope":
        assert f'scope="{scope}"' in response.headers["www-authenticate"]
    for secret in (APPLICANT["full_name"], APPLICANT["id_number"], APPLICANT["date_of_birth"], WRITER["full_name"],
                   "verified"):
        assert secret not in response.text
    if scope == "write":
        assert code not in _stored_codes(natdb)


def test_refusals_come_before_the_body_is_read(natdb: NatdbServer) -> None:
    with httpx.Client(base_url=natdb.url, timeout=10, trust_env=False) as client:
        garbage = client.post("/v1/population/verify", content=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert garbage.status_code == 401  # not 422: an anonymous caller learns nothing of the protocol
        worker = {"Authorization": f"Bearer {natdb.worker_token}"}
        for path in ("/openapi.json", "/docs", "/v1/citizens"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=worker).status_code == 404
        assert client.get("/health").json() == {"status": "ok"}  # no token, and no count of citizens
        for bad in ("Basic " + natdb.worker_token, natdb.worker_token, "Bearer", "Bearer " + "x" * 10_000):
            response = client.get(f"/v1/citizens/{APPLICANT['id_number']}/documents", params={"type": "cccd"},
                                  headers={"Authorization": bad})
            assert response.status_code == 401
        assert client.delete(f"/v1/citizens/{APPLICANT['id_number']}/documents", headers=worker).status_code == 405


def test_the_client_with_a_refused_or_narrow_token(natdb: NatdbServer) -> None:
    wrong = HttpNationalDb(natdb.url, token="not-a-token", timeout=5, retries=3, backoff=0.5)
    start = time.perf_counter()
    check = wrong.verify_citizen(APPLICANT["id_number"], APPLICANT["full_name"], None)
    assert check.outcome == "unverified" and "401" in (check.reason or "")
    assert "HOSO_NATDB_TOKEN" in (check.reason or "")
    with pytest.raises(NationalDbUnavailable, match="credentials"):  # remembered: not asked again
        wrong.find_documents(APPLICANT["id_number"], ["cccd"])
    assert time.perf_counter() - start < 0.5  # no retries for a refused token
    wrong.close()
    verifier = HttpNationalDb(natdb.url, token=natdb.tokens["verify-only"], timeout=5, retries=0)
    assert verifier.verify_citizen(APPLICANT["id_number"], None, None).outcome == "verified"
    with pytest.raises(NationalDbUnavailable, match="403"):
        verifier.find_documents(APPLICANT["id_number"], ["cccd"])
    with pytest.raises(NationalDbUnavailable, match="403"):
        verifier.save_document(StoredDocument.model_validate(_document("AUTH-client")))
    verifier.close()
    assert "AUTH-client" not in _stored_codes(natdb)


def test_clients_file_keeps_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    worker = add_client(path, "worker", ["verify", "read", "write"])
    public = add_client(path, "public-desk", ["verify"])
    text = path.read_text()
    assert worker not in text and public not in text and token_hash(worker) in text
    assert path.stat().st_mode & 0o077 == 0
    clients = load_clients(path)
    assert clients.authenticate(f"Bearer {worker}").name == "worker"  # type: ignore[union-attr]
    assert clients.authenticate(f"bearer {public}").scopes == {"verify"}  # type: ignore[union-attr]
    for bad in (None, "", worker, f"Bearer {worker[:-1]}", f"Bearer {worker}x", f"Basic {worker}"):
        assert clients.authenticate(bad) is None
    again = add_client(path, "worker", ["verify"])  # a new token replaces the old one
    assert load_clients(path).authenticate(f"Bearer {worker}") is None
    assert load_clients(path).authenticate(f"Bearer {again}").scopes == {"verify"}  # type: ignore[union-attr]


@pytest.mark.parametrize("content", [
    "", "clients: []", "clients: [{name: w, scopes: [admin], token_sha256: " + "a" * 64 + "}]",
    "clients: [{name: w, scopes: verify, token_sha256: " + "a" * 64 + "}]",
    "clients: [{name: w, scopes: [verify], token_sha256: secret}]",
    "clients: [{name: w, scopes: [verify], token_sha256: " + "a" * 64 + "}, {name: w, scopes: [read], "
    "token_sha256: " + "b" * 64 + "}]",
    "clients: [{name: a, scopes: [verify], token_sha256: " + "a" * 64 + "}, {name: b, scopes: [read], "
    "token_sha256: " + "a" * 64 + "}]",
    "{{{",
])
def test_a_bad_clients_file_is_a_configuration_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "clients.yaml"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="clients file"):
        load_clients(path)
    with pytest.raises(ConfigurationError):
        load_clients(tmp_path / "missing.yaml")


def _service(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOSO_")}
    return subprocess.run([sys.executable, "-m", "pipeline.national.service", *args], env=clean | (env or {}),
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.slow  # starts the service process
def test_the_service_will_not_start_without_its_clients(tmp_path: Path) -> None:
    (port,) = free_ports(1, with_grpc=False)
    url = f"sqlite:///{tmp_path / 'natdb.db'}"
    bare = _service("--port", str(port), "--database-url", url)
    assert bare.returncode == 17 and "clients file" in bare.stderr and "lỗi [configuration]" in bare.stderr
    (tmp_path / "broken.yaml").write_text("clients: []")
    broken = _service("--port", str(port), "--database-url", url, "--clients", str(tmp_path / "broken.yaml"))
    assert broken.returncode == 17 and "broken.yaml" in broken.stderr
    issued = _service("issue-token", "--client", "worker", "--scope", "verify", "--scope", "write",
                      "--clients", str(tmp_path / "clients.yaml"))
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    data = yaml.safe_load((tmp_path / "clients.yaml").read_text())
    assert data == {"clients": [{"name": "worker", "scopes": ["verify", "write"], "token_sha256": token_hash(token)}]}
    assert set(NATDB_CLIENTS) >= {"worker", "verify-only", "read-only", "write-only"}


@pytest.mark.slow
def test_a_desk_killed_before_saving_to_the_citizens_store_saves_on_the_rerun(tmp_path: Path) -> None:
    """Recorded, then killed before the forms and the save: the rerun (already done) still keeps the
    applicant's papers for reuse."""
    import signal

    from support.cli import SAMPLE as SAMPLE_PDF
    from support.cli import Hoso

    hoso = Hoso(tmp_path / "var", {"HOSO_TEST_DIE_AT": "record:after_lock"})
    args = ("ingest", str(SAMPLE_PDF), "--procedure", "business_household_registration", "--json")
    assert hoso(*args).returncode == -signal.SIGKILL
    registry = hoso.registry
    try:
        db = RegistryNationalDb(registry)
        assert db.find_documents(APPLICANT["id_number"], ["cccd"]) == []
        del hoso.env["HOSO_TEST_DIE_AT"]
        rerun = hoso(*args)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert json.loads(rerun.stdout)["already_done"] is True
        (kept,) = db.find_documents(APPLICANT["id_number"], ["cccd"])
        assert kept.dossier_code == json.loads(rerun.stdout)["dossier_code"]
    finally:
        registry.close()
