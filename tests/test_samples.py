"""The synthetic sample dossier: deterministic, small, image-only, and understood from its text truth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from pikepdf import PdfImage

from pipeline.core.errors import ConfigurationError
from pipeline.core.mrz import cccd_mrz, parse_mrz
from pipeline.domain.catalog import load_catalog
from pipeline.domain.classify import classify
from pipeline.domain.extract import check_id, extract_fields
from pipeline.training.samples import SampleTruth, main, render_sample_dossier


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleTruth]:
    out = tmp_path_factory.mktemp("sample") / "a.pdf"
    return out, render_sample_dossier(out, seed=3)


@pytest.mark.slow
def test_deterministic_for_a_seed(rendered: tuple[Path, SampleTruth], tmp_path: Path) -> None:
    first, truth = rendered
    again = render_sample_dossier(tmp_path / "b.pdf", seed=3)
    assert (tmp_path / "b.pdf").read_bytes() == first.read_bytes()
    assert again == truth
    other = render_sample_dossier(tmp_path / "c.pdf", seed=4)
    assert other.documents[0].fields["id_number"] != truth.documents[0].fields["id_number"]


def test_image_only_pdf_at_200_dpi(rendered: tuple[Path, SampleTruth]) -> None:
    path, truth = rendered
    assert path.stat().st_size <= 2 * 1024 * 1024
    with pikepdf.open(path) as pdf:
        assert len(pdf.pages) == truth.n_pages == 2
        for pg in pdf.pages:
            images = list(pg.Resources.XObject.values())
            assert len(images) == 1 and images[0].Filter == "/DCTDecode"
            assert b"Tf" not in pg.Contents.read_bytes()  # no text layer
            width_in = float(pg.MediaBox[2]) / 72
            assert abs(int(images[0].Width) / width_in - 200) < 1


def test_truth_text_is_classified_and_extracted(rendered: tuple[Path, SampleTruth]) -> None:
    _, truth = rendered
    cat = load_catalog()
    assert [d.type for d in truth.documents] == ["giay_de_nghi_dang_ky_ho_kinh_doanh", "cccd"]
    for doc in truth.documents:
        got, _ = classify(doc.text, cat)
        assert got == doc.type
        fields, _ = extract_fields(got, doc.text)
        assert fields["id_number"] == doc.fields["id_number"]
        assert fields["full_name"] == doc.fields["full_name"]
        assert fields["date_of_birth"] == doc.fields["date_of_birth"]
        assert check_id(doc.fields["id_number"], doc.fields["date_of_birth"], doc.fields["gender"]) == 1.0


def test_card_back_prints_the_cccd_mrz(rendered: tuple[Path, SampleTruth]) -> None:
    _, truth = rendered
    card = truth.documents[1]
    f = card.fields
    expiry = re.search(r"Có giá trị đến: (\S+)", card.text)
    assert expiry is not None
    lines = cccd_mrz(f["id_number"], f["date_of_birth"], f["gender"], expiry.group(1), f["full_name"])
    assert "\n".join(lines) in card.text
    mrz = parse_mrz(card.text)
    assert mrz is not None and mrz.all_checks_pass and mrz.id_number == f["id_number"]


def test_bundled_sample_matches_the_generator(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "pipeline" / "data"
    truth = render_sample_dossier(tmp_path / "s.pdf", seed=0)
    assert json.loads((data / "sample_dossier.json").read_text(encoding="utf-8")) == json.loads(
        truth.model_dump_json()
    )
    # Same pages, pixel for pixel up to the JPEG encoder (its bytes vary between Pillow/libjpeg builds).
    bundled, fresh = _page_pixels(data / "sample_dossier.pdf"), _page_pixels(tmp_path / "s.pdf")
    assert [p.shape for p in bundled] == [p.shape for p in fresh]
    for a, b in zip(bundled, fresh, strict=True):
        assert float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)))) < 2.0


def _page_pixels(pdf: Path) -> list[np.ndarray]:
    with pikepdf.open(pdf) as doc:
        return [
            np.asarray(PdfImage(image).as_pil_image().convert("L"))
            for page in doc.pages
            for image in page.get_images().values()
        ]


def test_cli_and_unsupported_procedure(tmp_path: Path) -> None:
    assert main([str(tmp_path / "x.pdf"), "--seed", "1"]) == 0
    assert (tmp_path / "x.json").is_file()
    with pytest.raises(ConfigurationError):
        render_sample_dossier(tmp_path / "y.pdf", procedure="birth_registration")
