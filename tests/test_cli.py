"""End to end through the ``hoso`` command: signing, storage and registry for real; OCR scripted
(``support.fake_ocr``), and real Tesseract in the tests marked slow."""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from pathlib import Path

import pikepdf
import pytest
from support.cli import SAMPLE, Hoso
from support.servers import PrefectServer, pg_schema

from pipeline.core.errors import ExitCode
from pipeline.training.samples import render_sample_dossier
from storage import keys
from storage.objects import LocalObjectStore

CONTRACT_KEYS = {"dossier_code", "procedure", "status", "received_at", "due_at", "pages", "documents", "missing",
                 "unexpected", "artifacts"}


@pytest.fixture
def hoso(tmp_path: Path) -> Hoso:
    return Hoso(tmp_path / "var")


@pytest.fixture
def hoso_on_prefect(tmp_path: Path, prefect_server: PrefectServer) -> Hoso:
    """Flows run against the session's Prefect server (a batch here may take several runs)."""
    return Hoso(tmp_path / "var", {"PREFECT_API_URL": prefect_server.api_url})


def _ingest_sample(runner: Hoso, out: Path) -> tuple[Hoso, Path, dict]:
    proc = runner("ingest", str(SAMPLE), "--procedure", "business_household_registration", "--out", str(out),
                  "--json")
    assert proc.returncode == 0, proc.stderr
    return runner, out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> tuple[Hoso, Path, dict]:
    """One ingest of the bundled sample (scripted OCR in a worker pool), shared by the tests that look at its
    outputs."""
    base = tmp_path_factory.mktemp("desk")
    return _ingest_sample(Hoso(base / "var", {"HOSO_OCR_JOBS": "2"}), base / "d")


def test_ingest_writes_contract_json_and_signed_searchable_pdf(received: tuple[Hoso, Path, dict]) -> None:
    _check_received_sample(*received)


@pytest.mark.slow
def test_tesseract_reads_the_sample_into_a_received_signed_searchable_dossier(tmp_path: Path) -> None:
    """The real chain: the sample's scans through Tesseract, understood, accepted, signed and stored."""
    runner, out, printed = _ingest_sample(Hoso(tmp_path / "var", ocr="tesseract"), tmp_path / "d")
    _check_received_sample(runner, out, printed)
    assert all(d["confidence"] > 0.5 for d in printed["documents"])
    assert runner("verify", str(out / "sample_dossier.pdf")).returncode == 0


def _check_received_sample(runner: Hoso, out: Path, printed: dict) -> None:
    import pymupdf  # as the acceptance asks

    written = json.loads((out / "sample_dossier.json").read_text(encoding="utf-8"))
    assert set(written) >= CONTRACT_KEYS
    assert written["dossier_code"] == printed["dossier_code"]
    assert written["procedure"] == "business_household_registration"
    assert written["status"] == "accepted", written
    assert [p["index"] for p in written["pages"]] == list(range(1, len(written["pages"]) + 1))
    types = {d["type"] for d in written["documents"]}
    assert {"giay_de_nghi_dang_ky_ho_kinh_doanh", "cccd"} <= types
    truth = json.loads(SAMPLE.with_suffix(".json").read_text(encoding="utf-8"))
    ids = {d["fields"].get("id_number") for d in written["documents"]}
    assert any(doc["fields"].get("id_number") in ids for doc in truth["documents"])
    with pymupdf.open(out / "sample_dossier.pdf") as pdf:
        text = "".join(page.get_text() for page in pdf)
    assert "HỘ KINH DOANH" in text.upper()
    assert set(written["artifacts"]) >= {"input", "digitised", "manifest"}
    assert set(written["artifacts"].values()) <= set(runner.stored_keys())


def test_stored_objects_follow_the_key_layout(received: tuple[Hoso, Path, dict]) -> None:
    runner, _, receipt = received
    code = receipt["dossier_code"]
    assert receipt["artifacts"] == {
        keys.INPUT: keys.input_key(code, SAMPLE.name),
        keys.DIGITISED: keys.digitised_key(code),
        keys.MANIFEST: keys.manifest_key(code),
    }
    stored = {k for k in runner.stored_keys() if k.startswith(keys.dossier_prefix(code))}
    assert set(receipt["artifacts"].values()) <= stored
    record = runner.registry.get(code)
    assert record.artifacts[keys.INPUT].content_type == "application/pdf"  # told by the bytes


def test_the_citizen_gets_a_lookup_link_and_the_receipt_form_is_stored(received: tuple[Hoso, Path, dict]) -> None:
    from urllib.parse import parse_qs, urlsplit

    from support.pdfs import stream_bytes

    runner, out, printed = received
    code = printed["dossier_code"]
    assert printed["lookup_url"].startswith(f"http://127.0.0.1:8000/tra-cuu/{code}?s=")
    (secret,) = parse_qs(urlsplit(printed["lookup_url"]).query)["s"]
    written = (out / "sample_dossier.json").read_text(encoding="utf-8")
    assert "lookup_url" not in json.loads(written) and secret not in written  # only the printed answer has it
    record = runner.registry.get(code)
    assert record.artifacts["form-01-1"].object_key == keys.form_key(code, "01", "tiep-nhan", 1)
    citizen = (out / "sample_dossier-mau-01-1-cong-dan.pdf").read_bytes()
    assert secret.encode() in stream_bytes(citizen)
    store = LocalObjectStore(runner.data_dir / "objects")
    for key in runner.stored_keys():
        data = store.get_bytes(key)
        assert secret.encode() not in (stream_bytes(data) if key.endswith(".pdf") else data), key
    (event,) = [e for e in record.events if e.action == "intake_forms"]
    assert (event.actor, event.role, event.detail["batch"]) == ("desk-officer", "desk", "ingest")


@pytest.mark.slow
def test_verify_accepts_the_signed_copy_and_detects_one_changed_byte(
    received: tuple[Hoso, Path, dict], tmp_path: Path
) -> None:
    runner, out, _ = received
    ok = runner("verify", str(out / "sample_dossier.pdf"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = bytearray((out / "sample_dossier.pdf").read_bytes())
    with pikepdf.open(out / "sample_dossier.pdf") as pdf:
        byte_range = [int(v) for v in pdf.Root.AcroForm.Fields[0].V.ByteRange]
    target = byte_range[0] + byte_range[1] // 2  # inside the first signed range
    data[target] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    bad = runner("verify", str(tampered))
    assert bad.returncode != 0


@pytest.mark.slow
def test_result_is_signed_twice_and_the_dossier_is_returned(received: tuple[Hoso, Path, dict]) -> None:
    runner, out, receipt = received
    code = receipt["dossier_code"]
    issued = runner("issue-result", code, "--out", str(out))
    assert issued.returncode == 0, issued.stderr
    result_pdf = out / f"{code}-ket-qua.pdf"
    report = runner("verify", str(result_pdf), "--json")
    assert report.returncode == 0, report.stdout
    signatures = json.loads(report.stdout)["signatures"]
    assert len(signatures) == 2 and all(s["intact"] and s["trusted"] for s in signatures)
    status = json.loads(runner("status", code, "--json").stdout)
    assert status["state"] == "returned"
    assert [e["to_state"] for e in status["events"]][-1] == "returned"
    assert "result" in status["artifacts"]
    again = runner("issue-result", code)
    assert again.returncode == ExitCode.invalid_state


@pytest.mark.slow  # a second `hoso` run; test_flows_inprocess re-runs the desk in-process
def test_second_ingest_of_the_same_input_does_no_work(received: tuple[Hoso, Path, dict]) -> None:
    runner, _, first = received
    proc = runner("ingest", str(SAMPLE), "--procedure", "business_household_registration", "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["already_done"] is True and again["lookup_url"] is None  # the secret was handed out once
    assert again["dossier_code"] == first["dossier_code"]
    assert len(runner.registry.list_dossiers()) == 1


def _png_header_bomb(path: Path, side: int = 30000) -> None:
    """A 1-bit PNG of side×side pixels that is tiny on disk (rows of zeros compress away)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, ExitCode]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_byte.pdf").write_bytes(b"")
    sample = SAMPLE.read_bytes()
    (folder / "truncated.pdf").write_bytes(sample[: int(len(sample) * 0.4)])
    with pikepdf.open(SAMPLE) as pdf:
        pdf.save(folder / "encrypted.pdf", encryption=pikepdf.Encryption(user="u", owner="o", R=6))
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.pages[0].MediaBox = pikepdf.Array([0, 0, 0, 0])
    pdf.save(folder / "zero_size_page.pdf")
    _png_header_bomb(folder / "bomb.png")
    (folder / "notes.pdf").write_bytes(b"just some text, not a scan\n" * 10)
    (folder / "readme.txt").write_text("scanned on 14/07/2025\n")  # a batch no longer skips it by its name
    os.mkfifo(folder / "pipe.pdf")  # reading it would wait forever for a writer
    (folder / "link.pdf").symlink_to(SAMPLE)  # a good dossier elsewhere: never followed
    return {
        "zero_byte.pdf": (folder / "zero_byte.pdf", ExitCode.input_empty),
        "truncated.pdf": (folder / "truncated.pdf", ExitCode.input_corrupt),
        "encrypted.pdf": (folder / "encrypted.pdf", ExitCode.input_encrypted),
        "zero_size_page.pdf": (folder / "zero_size_page.pdf", ExitCode.input_invalid_page),
        "bomb.png": (folder / "bomb.png", ExitCode.input_too_large),
        "notes.pdf": (folder / "notes.pdf", ExitCode.input_unsupported),
        "readme.txt": (folder / "readme.txt", ExitCode.input_unsupported),
        "pipe.pdf": (folder / "pipe.pdf", ExitCode.input_not_regular),
        "link.pdf": (folder / "link.pdf", ExitCode.input_not_regular),
    }


@pytest.mark.parametrize(
    "name",
    ["zero_byte.pdf", *(pytest.param(name, marks=pytest.mark.slow) for name in [
        "truncated.pdf", "encrypted.pdf", "zero_size_page.pdf", "bomb.png", "notes.pdf", "pipe.pdf", "link.pdf"])],
)
def test_bad_input_gets_one_clear_line_its_exit_code_and_leaves_nothing(
    hoso: Hoso, tmp_path: Path, name: str
) -> None:
    path, code = _bad_inputs(tmp_path / "bad")[name]
    start = time.monotonic()
    proc = hoso("ingest", str(path), "--procedure", "business_household_registration", timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hoso: lỗi"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert hoso.stored_keys() == []
    assert hoso.registry.list_dossiers() == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_is_refused_at_once(hoso: Hoso) -> None:
    start = time.monotonic()
    proc = hoso("ingest", "/dev/zero", "--procedure", "business_household_registration", timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == ExitCode.input_not_regular, proc.stderr
    assert proc.stderr.startswith("hoso: lỗi [input_not_regular]:") and proc.stderr.count("\n") == 1
    assert hoso.stored_keys() == []


@pytest.mark.slow
def test_unknown_procedure_is_refused_before_any_work(hoso: Hoso) -> None:
    proc = hoso("ingest", str(SAMPLE), "--procedure", "no_such_procedure")
    assert proc.returncode == ExitCode.unknown_procedure
    assert "no_such_procedure" in proc.stderr
    assert hoso.stored_keys() == []


def _batch(folder: Path, seeds: list[int], bad: bool = True) -> Path:
    folder.mkdir(parents=True)
    rows = ["file,procedure"]
    for seed in seeds:
        render_sample_dossier(folder / f"ARC-{seed:04d}.pdf", seed=seed)
        rows.append(f"ARC-{seed:04d}.pdf,business_household_registration")
    if bad:
        (folder / "ARC-9999.pdf").write_bytes(b"")
        rows.append("ARC-9999.pdf,business_household_registration")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.slow
def test_reprocess_accounts_for_every_input_and_skips_finished_work(hoso_on_prefect: Hoso, tmp_path: Path) -> None:
    hoso = hoso_on_prefect
    folder = _batch(tmp_path / "batch", [11, 12])
    first = hoso("reprocess", str(folder), "--json", timeout=600)
    summary = json.loads(first.stdout)
    assert (summary["total"], summary["processed"], summary["failed"]) == (3, 2, 1), first.stderr
    assert "input_empty" in summary["failures"]["ARC-9999.pdf"]
    assert first.returncode == ExitCode.failed
    keys_after_first = hoso.stored_keys()
    second = json.loads(hoso("reprocess", str(folder), "--json", timeout=600).stdout)
    assert (second["processed"], second["already_done"], second["failed"]) == (0, 2, 1)
    assert hoso.stored_keys() == keys_after_first
    items = hoso.registry.batch_items(second["batch_id"])
    assert sorted(i.outcome for i in items) == ["already_done", "already_done", "failed"]


@pytest.mark.slow
def test_reprocess_killed_half_way_resumes_with_each_dossier_once(hoso_on_prefect: Hoso, tmp_path: Path) -> None:
    hoso = hoso_on_prefect
    folder = _batch(tmp_path / "batch", [21, 22, 23, 24], bad=False)
    hoso.env["HOSO_TEST_OCR_DELAY"] = "0.5"  # scripted OCR is quick: slowed down, it leaves time to interrupt
    run = hoso.popen("reprocess", str(folder), "--json")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and run.poll() is None:
        if hoso.data_dir.joinpath("registry.db").exists() and len(hoso.registry.list_dossiers()) >= 1:
            break
        time.sleep(0.5)
    assert run.poll() is None, "the first run ended before it could be interrupted"
    os.killpg(run.pid, signal.SIGKILL)  # the whole job dies at once, as in a power cut
    run.wait(timeout=30)
    done_before = len(hoso.registry.list_dossiers())
    assert 1 <= done_before < 4
    del hoso.env["HOSO_TEST_OCR_DELAY"]
    rerun = hoso("reprocess", str(folder), "--json", timeout=900)
    summary = json.loads(rerun.stdout)
    assert summary["failed"] == 0, summary
    dossiers = hoso.registry.list_dossiers()
    assert len(dossiers) == 4
    assert len({d.input_sha256 for d in dossiers}) == 4
    assert all(d.state == "received" for d in dossiers)
    prefixes = {key.split("/")[1] for key in hoso.stored_keys()}
    assert prefixes == {d.code for d in dossiers}
    for d in dossiers:
        assert sum(1 for k in hoso.stored_keys() if k.startswith(f"dossiers/{d.code}/input/")) == 1


@pytest.mark.slow
def test_reprocess_with_tesseract_reads_each_dossier_as_its_own(tmp_path: Path) -> None:
    """Real OCR in the batch flow's worker pool (Prefect's own ephemeral server): each rendered dossier is
    received with its own citizen."""
    hoso = Hoso(tmp_path / "var", ocr="tesseract")
    folder = _batch(tmp_path / "batch", [11, 12], bad=False)
    proc = hoso("reprocess", str(folder), "--json", timeout=600)
    summary = json.loads(proc.stdout)
    assert (proc.returncode, summary["processed"], summary["failed"]) == (0, 2, 0), proc.stderr
    for seed in (11, 12):
        truth = render_sample_dossier(tmp_path / f"again-{seed}.pdf", seed=seed)
        ids = {d.fields["id_number"] for d in truth.documents}
        record = hoso.registry.find_by_input(_sha256(folder / f"ARC-{seed:04d}.pdf"), "business_household_registration")
        assert record is not None and record.state == "received"
        receipt = record.receipt_json or {}
        assert receipt["status"] == "accepted", receipt
        assert ids <= {d["fields"].get("id_number") for d in receipt["documents"]}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_batch_of_bad_inputs_records_each_failure_with_its_reason(hoso_on_prefect: Hoso, tmp_path: Path) -> None:
    hoso = hoso_on_prefect
    bad = _bad_inputs(tmp_path / "bad")
    proc = hoso("reprocess", str(tmp_path / "bad"), "--procedure", "business_household_registration", "--json")
    summary = json.loads(proc.stdout)
    assert proc.returncode == ExitCode.failed
    assert (summary["total"], summary["failed"], summary["processed"]) == (len(bad), len(bad), 0)
    for name, (_, code) in bad.items():
        assert summary["failures"][name].startswith(code.name), (name, summary["failures"][name])
    reasons = {i.input_name: i.reason for i in hoso.registry.batch_items(summary["batch_id"])}
    assert set(reasons) == set(bad) and all(reasons.values())
    assert hoso.stored_keys() == []
    assert hoso.registry.list_dossiers() == []


@pytest.mark.slow
@pytest.mark.postgres
def test_ingest_on_s3_and_postgresql(seaweedfs, postgres_base_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The production shape: objects in S3 (SeaweedFS here), the registry in PostgreSQL."""
    if postgres_base_url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    import uuid

    from minio import Minio

    bucket = f"hoso-e2e-{uuid.uuid4().hex[:8]}"
    with pg_schema(postgres_base_url, "hoso_e2e") as database_url:
        runner = Hoso(tmp_path / "var", {
            "HOSO_STORE": "s3",
            "HOSO_S3_ENDPOINT": seaweedfs.endpoint,
            "HOSO_S3_ACCESS_KEY": seaweedfs.access_key,
            "HOSO_S3_SECRET_KEY": seaweedfs.secret_key,
            "HOSO_S3_BUCKET": bucket,
            "HOSO_DATABASE_URL": database_url,
        })
        proc = runner("ingest", str(SAMPLE), "--procedure", "1.001612", "--json")
        assert proc.returncode == 0, proc.stderr
        receipt = json.loads(proc.stdout)
        status = json.loads(runner("status", receipt["dossier_code"], "--json").stdout)
        assert status["state"] == "received"
        client = Minio(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, secure=False)
        keys = {o.object_name for o in client.list_objects(bucket, recursive=True)}
        assert set(receipt["artifacts"].values()) <= keys
        wrong_env = {k: v for k, v in runner.env.items() if k != "HOSO_DATABASE_URL"}
        wrong = Hoso(tmp_path / "var2", wrong_env | {"HOSO_S3_SECRET_KEY": "not-the-secret",
                                                     "HOSO_DATA_DIR": str(tmp_path / "var2")})
        refused = wrong("ingest", str(SAMPLE), "--procedure", "1.001612")
        assert refused.returncode == ExitCode.storage_failed, refused.stderr
        assert "Traceback" not in refused.stderr
        assert wrong.registry.list_dossiers() == []
