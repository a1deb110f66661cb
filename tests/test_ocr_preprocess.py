"""Triage and geometry on small generated pages: blank, QR separator, rotation, skew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qrcode
from PIL import Image, ImageDraw, ImageFont

from ocr.preprocess import analyse_geometry, find_page_quad, flatten_page, normalise_for_ocr, rotate_image
from ocr.triage import to_gray, triage

FONT = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
DPI = 150
LINES = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "ĐƠN ĐỀ NGHỊ CẤP GIẤY CHỨNG NHẬN",
    "Họ và tên người đề nghị: Nguyễn Thị Hương",
    "Ngày sinh: 12/03/1985, nơi cư trú: xã Kim Chung",
    "Số định danh cá nhân: 001185012345",
    "Tôi xin cam đoan những lời khai trên là đúng sự thật.",
]


def text_page(lines: list[str] = LINES, size: tuple[int, int] = (1240, 1754), font_px: int = 30) -> Image.Image:
    """An A4 page at 150 dpi with Vietnamese text lines."""
    im = Image.new("L", size, 255)
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype(str(FONT), font_px)
    y = 150
    for line in lines * 3:
        draw.text((120, y), line, fill=0, font=font)
        y += int(font_px * 1.8)
    return im


def noisy_blank(size: tuple[int, int] = (1240, 1754)) -> Image.Image:
    """A blank back: paper noise, a few specks, dark scanner borders on two sides."""
    rng = np.random.default_rng(1)
    arr = np.clip(rng.normal(236, 6, size[::-1]), 0, 255).astype(np.uint8)
    ys, xs = rng.integers(0, size[1], 300), rng.integers(0, size[0], 300)
    arr[ys, xs] = 20  # salt-and-pepper specks
    arr[:, -40:] = 25  # dark border right
    arr[-30:, :] = 30  # dark border bottom
    return Image.fromarray(arr)


def separator_page(payload: str = "SEP|TEST|01") -> Image.Image:
    im = Image.new("L", (1240, 1754), 255)
    qr = qrcode.make(payload, box_size=12, border=2).get_image().convert("L")
    im.paste(qr, ((1240 - qr.width) // 2, 500))
    draw = ImageDraw.Draw(im)
    draw.text((300, 300), "TRANG PHÂN TÁCH TÀI LIỆU", fill=0, font=ImageFont.truetype(str(FONT), 36))
    return im


needs_font = pytest.mark.skipif(not FONT.exists(), reason="Noto Sans not installed")


def test_blank_page_despite_noise_and_borders() -> None:
    t = triage(to_gray(noisy_blank()), DPI)
    assert t.kind == "blank"


@pytest.mark.parametrize("dpi", [150, 300])
def test_blank_page_under_heavy_sensor_noise_is_blank(dpi: int) -> None:
    rng = np.random.default_rng(5)
    h, w = (1754, 1240) if dpi == 150 else (3508, 2480)
    arr = np.clip(rng.normal(225, 22, (h, w)), 0, 255).astype(np.uint8)
    t = triage(arr, dpi)
    assert t.kind == "blank"


@needs_font
def test_faint_text_under_noise_is_content_to_rescan() -> None:
    rng = np.random.default_rng(6)
    faint = 200 + np.asarray(text_page(), dtype=np.float64) / 255 * 30  # ink 200 on paper 230
    noisy = np.clip(faint + rng.normal(0, 8, faint.shape), 0, 255).astype(np.uint8)
    t = triage(noisy, DPI)
    assert t.kind == "content" and t.rescan_reason is not None


@needs_font
def test_text_page_is_content() -> None:
    t = triage(to_gray(text_page()), DPI)
    assert t.kind == "content" and t.rescan_reason is None


@needs_font
def test_qr_separator_with_payload() -> None:
    t = triage(to_gray(separator_page("SEP|HS-42|03")), DPI)
    assert t.kind == "separator" and t.separator_payload == "SEP|HS-42|03"


@needs_font
def test_small_qr_on_a_text_page_is_content() -> None:
    im = text_page()
    qr = qrcode.make("001185012345|Nguyen", box_size=3, border=1).get_image().convert("L")
    im.paste(qr, (1000, 100))
    assert triage(to_gray(im), DPI).kind == "content"


@needs_font
def test_rescan_reasons() -> None:
    low_dpi = triage(to_gray(text_page()), 100)
    assert low_dpi.rescan_reason is not None and "dpi" in low_dpi.rescan_reason
    faint = Image.fromarray((200 + np.asarray(text_page()) // 255 * 30).astype(np.uint8))
    reason = triage(to_gray(faint), DPI).rescan_reason
    assert reason is not None and "tương phản" in reason


@needs_font
@pytest.mark.parametrize("turned", [90, 270])
def test_sideways_page_detected(turned: int) -> None:
    # Content turned `turned` degrees clockwise (PIL rotates counter-clockwise).
    page = text_page().rotate(-turned, expand=True, fillcolor=255)
    geo = analyse_geometry(to_gray(page), DPI)
    assert geo.rotation % 180 == 90
    upright = rotate_image(page, geo.rotation, geo.skew)
    assert upright.size == (1240, 1754)


@needs_font
@pytest.mark.parametrize("angle", [-3.2, *(pytest.param(a, marks=pytest.mark.slow) for a in (1.7, 6.0))])
def test_skewed_page_comes_back_level(angle: float) -> None:
    skewed = text_page().rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    geo = analyse_geometry(to_gray(skewed), DPI)
    assert geo.rotation == 0
    assert abs(geo.skew + angle) < 0.5
    level = rotate_image(skewed, 0, geo.skew)
    assert abs(analyse_geometry(to_gray(level), DPI).skew) < 0.5


def test_rotate_keeps_bilevel_pages_bilevel() -> None:
    im = Image.new("1", (400, 600), 1)
    ImageDraw.Draw(im).rectangle((50, 50, 350, 60), fill=0)
    out = rotate_image(im, 90, 2.0)
    assert out.mode == "1" and out.size == (600, 400)


@needs_font
def test_normalise_flattens_light_and_upscales() -> None:
    page = np.asarray(text_page(), dtype=np.float32)
    gradient = np.linspace(0.55, 1.0, page.shape[1], dtype=np.float32)[None, :]
    dim = Image.fromarray((page * gradient).astype(np.uint8))  # lamp falloff: left side darker
    gray, dpi = normalise_for_ocr(dim, 100)  # below UPSCALE_BELOW_DPI: brought to 300 dpi
    assert dpi == 300 and gray.shape == (1754 * 3, 1240 * 3)
    assert normalise_for_ocr(dim, DPI)[1] == DPI  # 150 dpi and up is read as it is
    # Paper on the dark left and bright right edges ends up equally white.
    left, right = np.median(gray[:, :150]), np.median(gray[:, -150:])
    assert left > 230 and right > 230


def _photo_of(page: Image.Image, corners: list[tuple[float, float]], size: tuple[int, int]) -> np.ndarray:
    """``page`` warped onto a darker desk of ``size`` with its corners at ``corners`` (tl, tr, br, bl)."""
    import cv2

    w, h = page.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, np.array(corners, dtype=np.float32))
    desk = np.full(size[::-1], 90, np.uint8)
    return cv2.warpPerspective(np.asarray(page), m, size, dst=desk, borderMode=cv2.BORDER_TRANSPARENT)


@needs_font
def test_phone_photo_page_quad_found_and_flattened_level() -> None:
    corners = [(140.0, 90.0), (1230.0, 150.0), (1300.0, 1820.0), (90.0, 1760.0)]
    photo = _photo_of(text_page(), corners, (1400, 1900))
    quad = find_page_quad(photo, DPI)
    assert quad is not None
    assert np.abs(quad - np.array(corners)).max() < 12  # within a few pixels at 50 dpi working scale
    flat, back = flatten_page(Image.fromarray(photo), quad)
    assert abs(flat.width / flat.height - 1240 / 1754) < 0.03
    geo = analyse_geometry(to_gray(flat), DPI)
    row_angle = geo.skew if geo.rotation == 0 else geo.other_skew  # text lines run across: level them
    assert abs(row_angle) < 0.6
    # The homography maps the flattened page's corners back onto the photo's.
    import cv2

    rect = np.array([[[0, 0], [flat.width, 0], [flat.width, flat.height], [0, flat.height]]], np.float64)
    centre = quad.mean(axis=0)
    inset = centre + (quad - centre) * 0.98
    assert np.abs(cv2.perspectiveTransform(rect, back)[0] - inset).max() < 2


@needs_font
def test_scan_filling_the_frame_or_with_scanner_borders_has_no_quad() -> None:
    assert find_page_quad(to_gray(text_page()), DPI) is None
    bordered = np.asarray(text_page()).copy()
    bordered[:, :60] = 30  # a dark scanner border down the left edge
    bordered[-40:, :] = 30
    assert find_page_quad(bordered, DPI) is None


@needs_font
def test_red_seal_is_removed_but_red_heading_and_black_text_stay() -> None:
    im = text_page().convert("RGB")
    draw = ImageDraw.Draw(im)
    red = (200, 30, 35)
    draw.text((120, 60), "CĂN CƯỚC CÔNG DÂN", fill=red, font=ImageFont.truetype(str(FONT), 34))  # red heading
    cx, cy, r = 500, 400, 120  # a seal over the text: ring, star, letters
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=red, width=10)
    draw.ellipse((cx - r + 25, cy - r + 25, cx + r - 25, cy + r - 25), outline=red, width=4)
    draw.regular_polygon((cx, cy, 40), 5, fill=red)
    draw.text((cx - 70, cy + 50), "UBND XÃ", fill=red, font=ImageFont.truetype(str(FONT), 26))
    gray, _ = normalise_for_ocr(im, DPI)
    rgb = np.asarray(im).astype(np.int16)
    is_red = (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])) > 60
    seal = np.zeros_like(is_red)
    seal[cy - r - 6 : cy + r + 6, cx - r - 6 : cx + r + 6] = True
    heading = np.zeros_like(is_red)
    heading[50:110, 100:700] = True
    assert (gray[is_red & seal] > 200).mean() > 0.95  # the seal's ink is paper now
    assert (gray[is_red & heading] < 150).mean() > 0.8  # the red heading is still ink
    black = (rgb.sum(axis=2) < 100) & ~seal
    assert (gray[black] < 100).mean() > 0.9  # the text is untouched
