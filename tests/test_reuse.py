"""Reuse end to end through ``hoso``: a citizen's CCCD digitised once fills the next dossier's CCCD slot."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pikepdf
import pytest
from support.cli import SAMPLE, Hoso
from support.servers import NatdbServer, free_ports

from pipeline.national.db import HttpNationalDb, StoredDocument
from storage.registry import Registry

TRUTH = json.loads((SAMPLE.with_suffix(".json")).read_text(encoding="utf-8"))
APPLICANT = TRUTH["documents"][1]["fields"]["id_number"]  # the sample's citizen, in the national-database seed
CONTRACT_KEYS = {"dossier_code", "procedure", "status", "received_at", "due_at", "pages", "documents", "missing",
                 "unexpected", "artifacts"}

# `hoso ingest` runs against the national-database service (test_national reuses documents in-process)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def request_form_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Page 1 of the sample: the giấy đề nghị alone, without the CCCD."""
    target = tmp_path_factory.mktemp("form") / "de-nghi.pdf"
    with pikepdf.open(SAMPLE) as src, pikepdf.new() as dst:
        dst.pages.append(src.pages[0])
        dst.save(target)
    return target


@pytest.fixture(scope="module")
def two_dossiers(
    tmp_path_factory: pytest.TempPathFactory, natdb: NatdbServer, request_form_only: Path
) -> tuple[Path, dict[str, str], dict, dict, str]:
    """The sample (form + CCCD), then the form alone with ``--applicant-id``, against the real service."""
    base = tmp_path_factory.mktemp("reuse")
    data, out = base / "var", base / "out"
    env = {"HOSO_NATDB": "http", "HOSO_NATDB_URL": natdb.url, "HOSO_NATDB_TIMEOUT": "10",
           "HOSO_NATDB_TOKEN": natdb.worker_token}
    hoso = Hoso(data, env)
    first = hoso("ingest", str(SAMPLE), "-p", "business_household_registration", "--json")
    assert first.returncode == 0, first.stderr
    second = hoso("ingest", str(request_form_only), "-p", "business_household_registration",
                  "--applicant-id", APPLICANT, "--out", str(out))
    assert second.returncode == 0, second.stderr
    receipt = json.loads((out / "de-nghi.json").read_text(encoding="utf-8"))
    return data, env, json.loads(first.stdout), receipt, second.stdout


def test_first_dossier_is_verified_and_scanned(two_dossiers: tuple[Path, dict[str, str], dict, dict, str]) -> None:
    _, _, first, _, _ = two_dossiers
    assert first["status"] == "accepted"
    assert first["applicant_check"]["outcome"] == "verified"
    assert [(d["type"], d["source"], d["pages"]) for d in first["documents"]] == [
        ("giay_de_nghi_dang_ky_ho_kinh_doanh", "scan", [1]),
        ("cccd", "scan", [2]),
    ]


def test_second_dossier_fills_the_cccd_slot_by_reference(
    two_dossiers: tuple[Path, dict[str, str], dict, dict, str],
) -> None:
    data, _, first, second, console_text = two_dossiers
    assert set(second) >= CONTRACT_KEYS
    assert (second["status"], second["missing"]) == ("accepted", [])
    assert [p["index"] for p in second["pages"]] == [1]  # one page scanned
    form, cccd = second["documents"]
    assert (form["type"], form["source"], form["pages"]) == ("giay_de_nghi_dang_ky_ho_kinh_doanh", "scan", [1])
    assert (cccd["type"], cccd["source"], cccd["pages"]) == ("cccd", "reused", [])
    assert cccd["fields"]["id_number"] == APPLICANT
    ref = cccd["reference"]
    assert ref["dossier_code"] == first["dossier_code"] and ref["pages"] == [2]
    assert ref["object_key"] == first["artifacts"]["digitised"]
    # the reference points at the first dossier's signed digitised PDF, byte for byte
    stored = (data / "objects" / ref["object_key"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == ref["sha256"]
    # the printed receipt says where the CCCD came from
    assert "sử dụng lại từ kho dữ liệu điện tử" in console_text
    assert first["dossier_code"] in console_text
    assert "đã xác thực" in console_text
    # the registry keeps the receipt with the reused document (read by `hoso stats`)
    record = Registry(f"sqlite:///{data / 'registry.db'}").get(second["dossier_code"])
    assert record.state == "received"
    assert [d["source"] for d in (record.receipt_json or {})["documents"]] == ["scan", "reused"]


def test_stats_count_the_reuse(two_dossiers: tuple[Path, dict[str, str], dict, dict, str]) -> None:
    data, env, first, _, _ = two_dossiers
    day = datetime.fromisoformat(first["received_at"]).astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date().isoformat()
    proc = Hoso(data, env)("stats", "--from", day, "--to", day, "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert (stats["received"], stats["digitised"], stats["reused"]) == (2, 2, 1)
    assert stats["reuse_rate"] == 0.5 and stats["digitisation_rate"] == 1.0


def test_a_forged_newer_record_is_not_reused_the_sound_one_is(
    two_dossiers: tuple[Path, dict[str, str], dict, dict, str], natdb: NatdbServer, request_form_only: Path,
) -> None:
    """Someone with write access records a newer 'CCCD' for the citizen, pointing at nothing real."""
    data, env, first, _, _ = two_dossiers
    forged = StoredDocument(id_number=APPLICANT, doc_type="cccd", object_key="dossiers/FORGED-9/digitised.pdf",
                            sha256="e" * 64, dossier_code="FORGED-9", pages=[1], fields={"id_number": APPLICANT},
                            saved_at=datetime.now(UTC) + timedelta(days=1))
    writer = HttpNationalDb(natdb.url, token=natdb.tokens["write-only"], timeout=10, retries=0)
    try:
        writer.save_document(forged)
    finally:
        writer.close()
    third_input = request_form_only.with_name("de-nghi-lan-3.pdf")  # other bytes: not the second dossier again
    with pikepdf.open(request_form_only) as pdf:
        pdf.docinfo["/Title"] = "lan 3"
        pdf.save(third_input)
    proc = Hoso(data, env)("ingest", str(third_input), "-p", "business_household_registration",
                           "--applicant-id", APPLICANT, "--json")
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    (cccd,) = [d for d in receipt["documents"] if d["type"] == "cccd"]
    assert cccd["source"] == "reused" and cccd["reference"]["dossier_code"] == first["dossier_code"]
    assert (receipt["status"], receipt["missing"]) == ("accepted", [])
    notes = [n for n in receipt["applicant_check"]["notes_vi"] if "Không sử dụng lại" in n]
    assert len(notes) == 1 and "FORGED-9" in notes[0] and "không còn" in notes[0]


def test_a_database_that_is_down_leaves_the_dossier_accepted_unverified(tmp_path: Path) -> None:
    (port,) = free_ports(1, with_grpc=False)  # nothing listens there
    env = {"HOSO_NATDB": "http", "HOSO_NATDB_URL": f"http://127.0.0.1:{port}", "HOSO_NATDB_TIMEOUT": "1",
           "HOSO_NATDB_RETRIES": "1"}
    proc = Hoso(tmp_path / "var", env)("ingest", str(SAMPLE), "-p", "business_household_registration", "--json")
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    assert (receipt["status"], receipt["missing"]) == ("accepted", [])
    check = receipt["applicant_check"]
    assert check["outcome"] == "unverified" and "unavailable after 2 attempts" in check["reason"]
    assert [d["source"] for d in receipt["documents"]] == ["scan", "scan"]
