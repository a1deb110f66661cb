"""End to end: pages in, recognised pages and a searchable PDF out (small generated pages, cached OCR)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
import qrcode
from PIL import Image, ImageDraw, ImageFont

from ocr import inspect_input, ocr_input
from ocr.engine import page_pool
from ocr.models import OcrOptions, OcrResult
from ocr.recognize import parse_tsv
from pipeline.core.errors import InputEncrypted

FONT = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
pytestmark = pytest.mark.skipif(not FONT.exists(), reason="Noto Sans not installed")

LINES = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "GIẤY ĐỀ NGHỊ ĐĂNG KÝ HỘ KINH DOANH",
    "Họ và tên: Nguyễn Thị Hương",
    "Số định danh cá nhân: 001185012345",
    "Nơi cư trú: Xã Kim Chung, Huyện Đông Anh",
]
W, H, DPI = 1240, 1754, 150  # A4 at 150 dpi: small and quick to OCR


def text_page(lines: list[str] = LINES) -> Image.Image:
    im = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype(str(FONT), 30)
    for i, line in enumerate(lines):
        draw.text((120, 150 + i * 60), line, fill=0, font=font)
    return im


def separator_page(payload: str) -> Image.Image:
    im = Image.new("L", (W, H), 255)
    qr = qrcode.make(payload, box_size=12, border=2).get_image().convert("L")
    im.paste(qr, ((W - qr.width) // 2, 500))
    return im


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", s)).strip()


def to_pdf(images: list[Image.Image], path: Path) -> Path:
    images[0].save(path, "PDF", resolution=DPI, save_all=True, append_images=images[1:])
    return path


def _ocr(src: Path, out: Path, options: dict[str, object]) -> OcrResult:
    """Inspect, then OCR: the engine takes the inspected input."""
    opts = OcrOptions.model_validate(options)
    return ocr_input(inspect_input(src, opts), out, opts)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ocr-cache")


@pytest.fixture(scope="module")
def dossier(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, Path, object]:
    """A 4-page PDF: separator, upright text, text upside down, blank; OCR'd once for the tests below."""
    d = tmp_path_factory.mktemp("dossier")
    pages = [separator_page("SEP|T-1|01"), text_page(), text_page().rotate(180), Image.new("L", (W, H), 250)]
    src = to_pdf(pages, d / "in.pdf")
    out = d / "out.pdf"
    result = _ocr(src, out, {"jobs": 1, "cache_dir": cache})
    return src, out, result


def test_pages_classified_in_order(dossier: tuple[Path, Path, object]) -> None:
    _, _, result = dossier
    kinds = [(p.index, p.kind) for p in result.pages]  # type: ignore[attr-defined]
    assert kinds == [(1, "separator"), (2, "content"), (3, "content"), (4, "blank")]
    assert result.pages[0].separator_payload == "SEP|T-1|01"  # type: ignore[attr-defined]


def test_upside_down_page_is_turned_upright(dossier: tuple[Path, Path, object]) -> None:
    _, _, result = dossier
    upright, flipped = result.pages[1], result.pages[2]  # type: ignore[attr-defined]
    assert upright.rotation == 0 and flipped.rotation == 180
    for page in (upright, flipped):
        assert "Nguyễn Thị Hương" in page.text
        assert page.text == unicodedata.normalize("NFC", page.text)
        assert page.confidence > 0.7
        assert page.words and all(0 <= w.left < W and 0 <= w.top < H for w in page.words)
    # Word boxes are in the upright page frame: the first line is near the top on both pages.
    for page in (upright, flipped):
        first = next(w for w in page.words if w.text.startswith("CỘNG"))
        assert 130 <= first.top <= 200


def test_searchable_pdf_round_trip(dossier: tuple[Path, Path, object]) -> None:
    _, out, result = dossier
    doc = pdfium.PdfDocument(str(out))
    try:
        assert len(doc) == 4
        for i, page in enumerate(result.pages):  # type: ignore[attr-defined]
            w_pt, h_pt = doc[i].get_size()
            assert abs(w_pt - W * 72 / DPI) < 1 and abs(h_pt - H * 72 / DPI) < 1
            extracted = norm(doc[i].get_textpage().get_text_range())
            if page.kind == "content":
                assert norm(page.text) in extracted or extracted in norm(page.text)
                assert "Độc lập - Tự do - Hạnh phúc" in extracted
    finally:
        doc.close()


def test_output_page_image_is_upright(dossier: tuple[Path, Path, object]) -> None:
    _, out, _ = dossier
    doc = pdfium.PdfDocument(str(out))
    try:
        flipped = np.asarray(doc[2].render(scale=DPI / 72).to_pil().convert("L"))
        upright = np.asarray(doc[1].render(scale=DPI / 72).to_pil().convert("L"))
    finally:
        doc.close()
    # Ink sits in the top part of the page on both (the text block starts at y=150 px).
    for arr in (upright, flipped):
        rows = np.nonzero((arr < 128).sum(axis=1))[0]
        assert rows.min() < 250 and rows.max() < H / 2


def test_bilevel_page_stays_bilevel_and_small(tmp_path: Path, cache: Path) -> None:
    page = text_page().point(lambda v: 255 if v > 128 else 0).convert("1")
    src = tmp_path / "bw.tif"
    page.save(src, compression="group4", dpi=(DPI, DPI))
    out = tmp_path / "bw.pdf"
    result = _ocr(src, out, {"jobs": 1, "cache_dir": cache})
    assert "Nguyễn Thị Hương" in result.pages[0].text
    with pikepdf.open(out) as pdf:
        image = pdf.pages[0].Resources.XObject.Im0
        assert image.BitsPerComponent == 1
        assert image.Filter in (pikepdf.Name.CCITTFaxDecode, pikepdf.Name.FlateDecode)
    assert out.stat().st_size < 60_000


def test_folder_in_parallel(tmp_path: Path, cache: Path) -> None:
    d = tmp_path / "scans"
    d.mkdir()
    text_page(LINES[:3]).save(d / "p01.png", dpi=(DPI, DPI))
    text_page(LINES[3:]).save(d / "p02.jpg", dpi=(DPI, DPI), quality=90)
    Image.new("L", (W, H), 255).save(d / "p03.png", dpi=(DPI, DPI))
    out = tmp_path / "out.pdf"
    with page_pool(2) as pool:
        opts = OcrOptions.model_validate({"jobs": 2, "cache_dir": cache})
        result = ocr_input(inspect_input(d, opts), out, opts, executor=pool)
    assert [p.kind for p in result.pages] == ["content", "content", "blank"]
    assert "Hạnh phúc" in result.pages[0].text and "Đông Anh" in result.pages[1].text
    with pikepdf.open(out) as pdf:
        assert len(pdf.pages) == 3
    assert not list(tmp_path.glob("hoso-ocr-*")), "work files are cleaned up"


def test_bad_input_fails_before_any_output(tmp_path: Path) -> None:
    src = to_pdf([text_page()], tmp_path / "plain.pdf")
    enc = tmp_path / "enc.pdf"
    with pikepdf.open(src) as pdf:
        pdf.save(enc, encryption=pikepdf.Encryption(user="u", owner="o"))
    out = tmp_path / "out.pdf"
    with pytest.raises(InputEncrypted):
        _ocr(enc, out, {"jobs": 1})
    assert not out.exists()
    assert inspect_input(src, OcrOptions.model_validate({})).page_count == 1


def test_parse_tsv_lines_and_nfc() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    decomposed = unicodedata.normalize("NFD", "Hương")
    rows = [
        header,
        "5\t1\t1\t1\t1\t1\t10\t10\t50\t20\t96.5\tNguyễn",
        f"5\t1\t1\t1\t1\t2\t70\t10\t50\t20\t90\t{decomposed}",
        "5\t1\t1\t1\t2\t1\t10\t40\t50\t20\t-1\t ",
        "5\t1\t2\t1\t1\t1\t10\t80\t50\t20\t80\tĐộc",
    ]
    text, words = parse_tsv("\n".join(rows))
    assert text == "Nguyễn Hương\nĐộc"
    assert [w.confidence for w in words] == [0.965, 0.9, 0.8]
