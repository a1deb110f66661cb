"""The signed-input rule: a PDF that already carries a signature is stored byte-identical; OCR is derived."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pikepdf
import pytest
from support.cli import SCRIPTED_ENGINE

from pipeline.core.inputs import identify_input, pdf_signature_fields
from pipeline.core.settings import Settings
from pipeline.training.samples import render_sample_dossier
from pipeline.usecases.desk import IntakeRequest, ingest
from pipeline.usecases.services import Services
from signing.signers import sign_pdf
from signing.verify import verify_pdf


@pytest.fixture(scope="module")
def signed_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Services, Path]:
    tmp = tmp_path_factory.mktemp("signed-input")
    services = Services(Settings(data_dir=tmp / "var", natdb="off", ocr_jobs=1, ocr_engine=SCRIPTED_ENGINE))
    plain = tmp / "plain.pdf"
    render_sample_dossier(plain, seed=3)
    with pikepdf.open(plain) as pdf:  # a clean xref table, as a signing application would write
        clean = io.BytesIO()
        pdf.save(clean)
    signed = sign_pdf(
        clean.getvalue(),
        services.keys.signer("officer"),
        field_name="CongDan",
        reason="Citizen signs the submission",
        location="Hà Nội",
        signer_name="Nguyễn Văn An",
        role_label="Công dân",
    )
    path = tmp / "signed.pdf"
    path.write_bytes(signed)
    return services, path


@pytest.mark.slow
def test_signature_fields_found_only_on_signed_pdfs(signed_input: tuple[Services, Path], tmp_path: Path) -> None:
    _, path = signed_input
    assert identify_input(path).signature_fields == ["CongDan"]
    plain = tmp_path / "plain.pdf"
    render_sample_dossier(plain, seed=3)
    assert identify_input(plain).signature_fields == []


def test_signed_input_is_stored_byte_identical_and_ocr_is_a_derived_copy(
    signed_input: tuple[Services, Path],
) -> None:
    services, path = signed_input
    original = path.read_bytes()
    outcome = ingest(IntakeRequest(path, "business_household_registration"), services)
    artifacts = outcome.receipt.artifacts
    stored = services.store.get_bytes(artifacts["input"])
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(original).hexdigest()
    assert path.read_bytes() == original  # the desk never touches the file it was given
    report = verify_pdf(stored, [services.pki.root_cert])
    assert [s.field for s in report.signatures] == ["CongDan"] and report.signatures[0].intact
    manifest = json.loads(services.store.get_bytes(artifacts["manifest"]))
    link = manifest["derived_from"]["digitised"]
    assert link["key"] == artifacts["input"] and link["sha256"] == hashlib.sha256(original).hexdigest()
    assert link["signature_fields"] == ["CongDan"]
    digitised = services.store.get_bytes(artifacts["digitised"])
    # A new document certified by the desk officer, not an update of the citizen's signed file.
    assert signature_fields_of(digitised) == ["CanBoTiepNhan"]


def signature_fields_of(pdf: bytes) -> list[str]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
        f.write(pdf)
        f.flush()
        return pdf_signature_fields(Path(f.name))
