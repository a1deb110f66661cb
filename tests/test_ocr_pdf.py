"""The searchable PDF: original image data kept, text layer on the words, NFC round trip, PDF/A-2b marks."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr import ocr_input
from ocr.load import inspect_input, iter_pages
from ocr.models import OcrOptions, OcrResult

FONT = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
pytestmark = pytest.mark.skipif(not FONT.exists(), reason="Noto Sans not installed")
W, H, DPI = 1240, 1754, 150
LINES = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "GIẤY ỦY QUYỀN",
    "Họ và tên: Trần Thị Ngọc Ánh",
    "Nơi thường trú: Phường Bến Nghé, Quận 1",
    "Được ủy quyền nhận kết quả thủ tục hành chính",
]


def text_page() -> Image.Image:
    im = Image.new("RGB", (W, H), (250, 248, 240))
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype(str(FONT), 30)
    for i, line in enumerate(LINES):
        draw.text((120, 150 + i * 60), line, fill=(20, 20, 30), font=font)
    return im


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", s)).strip()


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, OcrResult]:
    """A 2-page image-only PDF: one page turned 90° clockwise and skewed 3°, one upright; OCR'd once."""
    d = tmp_path_factory.mktemp("pdf")
    turned = text_page().rotate(3, resample=Image.Resampling.BICUBIC, fillcolor=(250, 248, 240))
    turned = turned.rotate(-90, expand=True)
    pages = [turned, text_page()]
    src = d / "in.pdf"
    pages[0].save(src, "PDF", resolution=DPI, save_all=True, append_images=pages[1:], quality=88)
    out = d / "out.pdf"
    options = OcrOptions.model_validate({"jobs": 1, "cache_dir": d / "cache"})
    return src, out, ocr_input(inspect_input(src, options), out, options)


def test_text_from_the_pdf_equals_the_ocr_text_after_nfc(scanned: tuple[Path, Path, OcrResult]) -> None:
    _, out, result = scanned
    assert [p.rotation for p in result.pages] == [90, 0]
    doc = pdfium.PdfDocument(str(out))
    try:
        for i, page in enumerate(result.pages):
            assert "Trần Thị Ngọc Ánh" in page.text
            extracted = doc[i].get_textpage().get_text_range()
            assert norm(extracted) == norm(page.text)
    finally:
        doc.close()


def test_original_image_data_is_not_re_encoded(scanned: tuple[Path, Path, OcrResult]) -> None:
    src, out, _ = scanned
    with pikepdf.open(src) as a, pikepdf.open(out) as b:
        for pa, pb in zip(a.pages, b.pages, strict=True):
            (ia,) = [x for x in pa.Resources.XObject.values() if x.Subtype == pikepdf.Name.Image]
            ib = pb.Resources.XObject.Im0
            assert ia.read_raw_bytes() == ib.read_raw_bytes()
            assert ia.Filter == ib.Filter and ia.Width == ib.Width
        # The turned page is shown upright by /Rotate, its image untouched.
        assert int(b.pages[0].get("/Rotate", 0)) == 270 and int(b.pages[1].get("/Rotate", 0)) == 0


def test_text_layer_lies_on_the_ink_of_the_original_image(scanned: tuple[Path, Path, OcrResult]) -> None:
    src, out, _ = scanned
    options = OcrOptions()
    originals = [np.asarray(p.image.convert("L")) for p in iter_pages(inspect_input(src, options), options)]
    doc = pdfium.PdfDocument(str(out))
    try:
        for i, ink in enumerate(originals):
            textpage = doc[i].get_textpage()
            _, h_pt = doc[i].get_mediabox()[2:]
            hits = total = 0
            for k in range(textpage.count_chars()):
                if textpage.get_text_range(k, 1).isspace():
                    continue
                left, bottom, right, top = textpage.get_charbox(k)  # unrotated page space, points
                x0, x1 = int(left * DPI / 72), int(right * DPI / 72) + 1
                y0, y1 = int((h_pt - top) * DPI / 72), int((h_pt - bottom) * DPI / 72) + 1
                box = ink[max(y0, 0) : y1, max(x0, 0) : x1]
                total += 1
                hits += box.size > 0 and int(box.min()) < 128
            assert total > 100 and hits / total > 0.9
    finally:
        doc.close()


def test_output_declares_pdfa_2b_with_an_srgb_output_intent(scanned: tuple[Path, Path, OcrResult]) -> None:
    _, out, _ = scanned
    with pikepdf.open(out) as pdf:
        meta = pdf.open_metadata()
        assert meta["pdfaid:part"] == "2" and meta["pdfaid:conformance"] == "B"
        (intent,) = pdf.Root.OutputIntents
        assert intent.S == pikepdf.Name.GTS_PDFA1 and int(intent.DestOutputProfile.N) == 3
        assert b"sRGB" in intent.DestOutputProfile.read_bytes()[:200] or intent.OutputConditionIdentifier == "sRGB"
        assert "/ID" in pdf.trailer and "/Encrypt" not in pdf.trailer
        for page in pdf.pages:
            fonts = page.Resources.XObject.Txt0.Resources.Font
            for font in fonts.values():
                (desc,) = font.DescendantFonts
                assert "/FontFile2" in desc.FontDescriptor  # embedded, as PDF/A requires


def test_jpeg_page_file_is_embedded_as_is(tmp_path: Path) -> None:
    src = tmp_path / "p1.jpg"
    text_page().save(src, dpi=(DPI, DPI), quality=80)
    out = tmp_path / "out.pdf"
    options = OcrOptions.model_validate({"jobs": 1, "cache_dir": tmp_path / "c"})
    result = ocr_input(inspect_input(src, options), out, options)
    assert "Bến Nghé" in result.pages[0].text
    with pikepdf.open(out) as pdf:
        assert pdf.pages[0].Resources.XObject.Im0.read_raw_bytes() == src.read_bytes()
