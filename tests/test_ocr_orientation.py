"""Orientation on generated pages: every quarter turn comes back upright across scales, fonts, noise and
tables (text-line structure for the axis, a Tesseract-read strip for which way up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr.preprocess import analyse_geometry, rotate_image
from ocr.tesseract import strip_scores
from ocr.triage import to_gray

FONTS = {
    "noto-sans": Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),
    "noto-serif": Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf"),
    "dejavu-serif": Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"),
}
pytestmark = pytest.mark.skipif(not all(f.exists() for f in FONTS.values()), reason="Noto/DejaVu fonts missing")
DPI = 150
BODY = [
    "Họ và tên người đề nghị: Nguyễn Thị Hương, sinh ngày 12/03/1985",
    "Nơi cư trú: xã Kim Chung, huyện Đông Anh, thành phố Hà Nội",
    "Số định danh cá nhân: 001185012345, cấp ngày 05/07/2021",
    "Tôi xin cam đoan những lời khai trên là đúng sự thật và chịu trách nhiệm.",
]
CELLS = [["STT", "Họ và tên", "Quan hệ", "Năm sinh"], ["1", "Trần Văn Bình", "Chồng", "1982"],
         ["2", "Trần Thị Mai", "Con", "2010"], ["3", "Trần Minh Đức", "Con", "2014"]]


def form_page(font: str, table: bool = False, noise: float = 0.0) -> Image.Image:
    """An A4 page at 150 dpi: a centred heading, body lines and optionally a ruled table."""
    im = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(im)
    big, body = ImageFont.truetype(str(FONTS[font]), 30), ImageFont.truetype(str(FONTS[font]), 24)
    draw.text((620, 140), "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", fill=0, font=big, anchor="mm")
    draw.text((620, 190), "Độc lập - Tự do - Hạnh phúc", fill=0, font=body, anchor="mm")
    draw.text((620, 280), "ĐƠN ĐỀ NGHỊ CẤP GIẤY CHỨNG NHẬN", fill=0, font=big, anchor="mm")
    y = 360
    for line in BODY * (2 if table else 4):
        draw.text((130, y), line, fill=0, font=body)
        y += 44
    if table:
        widths, row_h, x0 = [80, 420, 220, 200], 52, 130
        for r, row in enumerate(CELLS):
            x = x0
            for w, cell in zip(widths, row, strict=True):
                draw.rectangle((x, y + r * row_h, x + w, y + (r + 1) * row_h), outline=0, width=2)
                draw.text((x + 10, y + r * row_h + 12), cell, fill=0, font=body)
                x += w
    arr = np.asarray(im, dtype=np.float64)
    if noise:
        rng = np.random.default_rng(3)
        arr = arr * 0.85 + 25 + rng.normal(0, noise, arr.shape)  # grey paper, sensor noise
        specks = rng.random(arr.shape) < 0.002
        arr[specks] = 0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def turned(page: Image.Image, turn: int, scale: float) -> Image.Image:
    """``page`` resized by ``scale`` (its dpi claim unchanged, as after flattening a photo), content
    turned ``turn`` degrees clockwise."""
    if scale != 1:
        page = page.resize((round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS)
    return page.rotate(-turn, expand=True, fillcolor=255) if turn else page


# Matrices keep one representative case in the fast lane (a quarter turn, the middle scale, the first font).
SLOW = pytest.mark.slow


@pytest.mark.parametrize("font", [*list(FONTS)[:1], *(pytest.param(f, marks=SLOW) for f in list(FONTS)[1:])])
@pytest.mark.parametrize("scale", [pytest.param(0.6, marks=SLOW), 0.95, pytest.param(1.4, marks=SLOW)])
@pytest.mark.parametrize("turn", [pytest.param(0, marks=SLOW), 90, *(pytest.param(t, marks=SLOW) for t in (180, 270))])
def test_text_line_axis_across_scales_and_fonts(font: str, scale: float, turn: int) -> None:
    geo = analyse_geometry(to_gray(turned(form_page(font), turn, scale)), DPI)
    assert geo.rotation % 180 == turn % 180
    assert geo.sideways_ratio > 1.4 if turn % 180 == 0 else geo.sideways_ratio < 1 / 1.4


@pytest.mark.parametrize("turn", [pytest.param(0, marks=SLOW), 90, *(pytest.param(t, marks=SLOW) for t in (180, 270))])
@pytest.mark.parametrize("variant", ["table", "noise"])
def test_text_line_axis_with_tables_and_noise(turn: int, variant: str) -> None:
    page = form_page("noto-serif", table=variant == "table", noise=22.0 if variant == "noise" else 0.0)
    geo = analyse_geometry(to_gray(turned(page, turn, 1.0)), DPI)
    assert geo.rotation % 180 == turn % 180


def test_a_page_of_only_a_table_grid_and_no_text_keeps_its_orientation() -> None:
    im = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(im)
    for y in range(200, 1500, 60):
        draw.line((100, y, 1140, y), fill=0, width=2)
    geo = analyse_geometry(to_gray(im), DPI)
    assert geo.rotation == 0


@pytest.mark.parametrize(
    ("font", "turn", "scale", "table", "noise"),
    [
        ("noto-sans", 180, 1.0, False, 0.0),
        pytest.param("noto-serif", 90, 0.7, True, 0.0, marks=SLOW),
        pytest.param("dejavu-serif", 270, 1.3, False, 22.0, marks=SLOW),
        pytest.param("noto-serif", 0, 1.0, True, 22.0, marks=SLOW),
    ],
)
def test_every_quarter_turn_comes_back_upright(font: str, turn: int, scale: float, table: bool, noise: float) -> None:
    page = turned(form_page(font, table=table, noise=noise), turn, scale)
    geo = analyse_geometry(to_gray(page), DPI)
    scores = strip_scores(page, DPI, geo, [geo.rotation, (geo.rotation + 180) % 360], "vie")
    best = max(scores, key=lambda t: scores[t])
    assert best == turn
    assert scores[best] - min(scores.values()) > 0.15  # a clear call, no full-page re-read needed
    upright = rotate_image(page, best, geo.skew)
    assert upright.width < upright.height  # portrait again


@pytest.mark.parametrize("turn", [90, pytest.param(180, marks=SLOW)])
def test_process_page_reads_a_turned_scaled_noisy_table_page_upright(turn: int, tmp_path: Path) -> None:
    from ocr.models import OcrOptions
    from ocr.plugin import PageImage
    from ocr.tesseract import TesseractEngine

    page = turned(form_page("noto-serif", table=True, noise=15.0), turn, 0.8)
    options = OcrOptions(jobs=1, cache_dir=tmp_path / "cache")
    result = TesseractEngine().recognize_page(PageImage(1, page, DPI, tmp_path / "p.pdf"), options)
    assert result.rotation == turn
    assert "Hạnh phúc" in result.text and "Trần Văn Bình" in result.text
