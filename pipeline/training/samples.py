"""A small synthetic scanned dossier (image-only PDF + truth) for demos and tests.

``render_sample_dossier`` draws, with PIL, a *Giấy đề nghị đăng ký hộ kinh doanh* and an enlarged copy of
a chip CCCD (front and back on one page) at 200 dpi, adds light scan damage (skew ≤ 2°, noise) and
writes them as JPEG-compressed pages of an image-only PDF. People are synthetic; the output is a pure
function of the seed.

    python -m pipeline.training.samples OUT.pdf [--seed N]     # also writes OUT.json (the truth)
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydantic import BaseModel, Field

from pipeline.core.errors import ConfigurationError
from pipeline.core.mrz import cccd_mrz
from pipeline.national.citizens import pools, synthetic_citizen

DPI = 200
A4 = (1654, 2339)  # 210 × 297 mm at 200 dpi
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/noto"),
    Path("/usr/share/fonts/truetype/liberation"),
    Path("/usr/share/fonts/truetype/dejavu"),
)
# Debian 12's Liberation 1.07 lacks Vietnamese glyphs (Ộ, ạ…): each candidate is checked for coverage.
FONT_FILES = {
    "regular": (
        "NotoSerif-Regular.ttf",
        "LiberationSerif-Regular.ttf",
        "DejaVuSerif.ttf",
        "NotoSans-Regular.ttf",
    ),
    "bold": ("NotoSerif-Bold.ttf", "LiberationSerif-Bold.ttf", "DejaVuSerif-Bold.ttf", "NotoSans-Bold.ttf"),
    "italic": (
        "NotoSerif-Italic.ttf",
        "LiberationSerif-Italic.ttf",
        "DejaVuSerif-Italic.ttf",
        "NotoSans-Italic.ttf",
    ),
    "mono": ("NotoSansMono-Regular.ttf", "LiberationMono-Regular.ttf", "DejaVuSansMono.ttf"),
}
SUPPORTED_PROCEDURES = ("business_household_registration",)

_BUSINESSES = [
    ("QUÁN CƠM", "Nhà hàng và các dịch vụ ăn uống phục vụ lưu động (Mã ngành: 5610)"),
    ("TIỆM MAY", "May trang phục (trừ trang phục từ da lông thú) (Mã ngành: 1410)"),
    ("TẠP HÓA", "Bán lẻ lương thực, thực phẩm trong các cửa hàng chuyên doanh (Mã ngành: 4721)"),
    ("CÀ PHÊ", "Dịch vụ phục vụ đồ uống (Mã ngành: 5630)"),
]


class SampleDocument(BaseModel):
    type: str
    pages: list[int]
    fields: dict[str, str]
    text: str = Field(description="The printed text, lines in reading order (what perfect OCR would read)")


class SampleTruth(BaseModel):
    procedure: str
    seed: int
    n_pages: int
    dpi: int = DPI
    is_complete: bool = True
    documents: list[SampleDocument]


def _covers_vietnamese(font: ImageFont.FreeTypeFont) -> bool:
    missing = bytes(font.getmask("\U0010fffd"))  # an unassigned code point renders as .notdef
    return all(bytes(font.getmask(ch)) != missing for ch in "ỘạữĐ")


@lru_cache(maxsize=32)
def _font(style: str, size: int) -> ImageFont.FreeTypeFont:
    for name in FONT_FILES[style]:
        for folder in FONT_DIRS:
            if (folder / name).is_file():
                font = ImageFont.truetype(str(folder / name), size)
                if _covers_vietnamese(font):
                    return font
    raise ConfigurationError(
        "No font with Vietnamese glyphs found (install fonts-noto-core or fonts-liberation >= 2)",
        "Thiếu phông chữ tiếng Việt để tạo hồ sơ mẫu (cài fonts-noto-core).",
    )


def _person(rng: random.Random) -> dict[str, str]:
    """The applicant (:func:`pipeline.national.citizens.synthetic_citizen`) with their chip CCCD's dates."""
    citizen = synthetic_citizen(rng, born=(1960, 2002))
    issue = min(citizen.birth + timedelta(days=365 * rng.randrange(18, 40)), date(2023, 12, 1))
    return {
        "full_name": citizen.full_name,
        "gender": citizen.gender,
        "date_of_birth": citizen.date_of_birth,
        "id_number": citizen.id_number,
        "address": citizen.address,
        "district": citizen.place.district,
        "province": citizen.place.province,
        "issue_date": issue.strftime("%d/%m/%Y"),
        "expiry": _card_expiry(citizen.birth).strftime("%d/%m/%Y"),
    }


def _card_expiry(birth: date) -> date:
    """The holder's 40th birthday (born 1985 or later) or 60th; 1 March for a 29 February birthday."""
    year = birth.year + (40 if birth.year >= 1985 else 60)
    try:
        return birth.replace(year=year)
    except ValueError:
        return date(year, 3, 1)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


class _Page:
    """A page being drawn, recording the text lines it prints."""

    def __init__(self, size: tuple[int, int], colour: bool = False) -> None:
        self.image = Image.new("RGB" if colour else "L", size, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.lines: list[str] = []

    def text(
        self,
        xy: tuple[float, float],
        s: str,
        font: ImageFont.FreeTypeFont,
        *,
        centre: bool = False,
        fill: str | tuple[int, int, int] = "black",
        record: bool = True,
    ) -> float:
        x, y = xy
        if centre:
            x -= font.getlength(s) / 2
        self.draw.text((x, y), s, font=font, fill=fill)
        if record:
            self.lines.append(s)
        return y + font.size * 1.45

    def paragraph(self, x: float, y: float, s: str, font: ImageFont.FreeTypeFont, width: int) -> float:
        for line in _wrap(s, font, width):
            y = self.text((x, y), line, font)
        return y


def _request_form(p: dict[str, str], biz: dict[str, str], filed: date) -> _Page:
    page = _Page(A4)
    reg, bold, ital = _font("regular", 36), _font("bold", 36), _font("italic", 34)
    cx, left, width = A4[0] / 2, 190, A4[0] - 190 - 150
    y = 170.0
    y = page.text((cx, y), "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", _font("bold", 38), centre=True)
    motto = "Độc lập - Tự do - Hạnh phúc"
    y2 = page.text((cx, y), motto, bold, centre=True)
    half = bold.getlength(motto) / 2
    page.draw.line((cx - half, y + 46, cx + half, y + 46), fill="black", width=3)
    y = y2 + 70
    y = page.text((cx, y), "GIẤY ĐỀ NGHỊ ĐĂNG KÝ HỘ KINH DOANH", _font("bold", 44), centre=True) + 30
    y = page.text((cx, y), f"Kính gửi: Phòng Tài chính - Kế hoạch {p['district']}", reg, centre=True) + 20
    y = page.text((left, y), f"Tôi là (ghi họ tên bằng chữ in hoa): {p['full_name'].upper()}", reg)
    y = page.text((left, y), f"Giới tính: {p['gender']}    Sinh ngày: {p['date_of_birth']}", reg)
    y = page.text((left, y), "Dân tộc: Kinh    Quốc tịch: Việt Nam", reg)
    y = page.text((left, y), f"Số định danh cá nhân: {p['id_number']}", reg)
    y = page.paragraph(left, y, f"Địa chỉ thường trú: {p['address']}", reg, width)
    y = page.text((left, y), f"Điện thoại: {biz['phone']}", reg)
    y = page.text((left, y), "Đăng ký hộ kinh doanh do tôi là chủ hộ với các nội dung sau:", reg)
    y = page.text((left, y), f"1. Tên hộ kinh doanh: {biz['business_name']}", reg)
    y = page.paragraph(left, y, f"2. Địa chỉ trụ sở hộ kinh doanh: {biz['business_address']}", reg, width)
    y = page.paragraph(left, y, f"3. Ngành, nghề kinh doanh: {biz['trade']}", reg, width)
    y = page.text((left, y), f"4. Vốn kinh doanh: {biz['capital']} đồng", reg)
    y = page.text((left, y), f"5. Số lượng lao động (dự kiến): {biz['workers']}", reg)
    y = page.paragraph(
        left,
        y + 10,
        "Tôi cam kết: Bản thân không thuộc diện pháp luật cấm kinh doanh; chịu trách nhiệm trước pháp luật "
        "về tính hợp pháp, chính xác và trung thực của nội dung đăng ký hộ kinh doanh.",
        reg,
        width,
    )
    sx = A4[0] - 560.0
    place = p["province"].replace("Thành phố ", "").replace("Tỉnh ", "")
    dated = f"Làm tại {place}, ngày {filed:%d} tháng {filed:%m} năm {filed:%Y}"
    y = page.text((A4[0] - 150 - ital.getlength(dated), y + 40), dated, ital)
    y = page.text((sx + 40, y + 10), "CHỦ HỘ KINH DOANH", bold)
    y = page.text((sx + 10, y), "(Ký, ghi rõ họ, chữ đệm, tên)", ital)
    # A blue-ink signature scribble (not text).
    rng = random.Random(p["id_number"])
    pts = [(sx + 60 + i * 22, y + 60 + rng.randrange(-25, 25)) for i in range(14)]
    page.draw.line(pts, fill=40, width=4)
    page.text((sx + 40, y + 140), p["full_name"], reg)
    return page


def _cccd_copy(p: dict[str, str], rng: random.Random) -> _Page:
    page = _Page(A4, colour=True)
    scale = 1.6  # enlarged copy: 85.6 × 54 mm card → ~1080 × 680 px at 200 dpi
    cw, ch = int(85.6 / 25.4 * DPI * scale), int(54 / 25.4 * DPI * scale)
    x0, y0 = (A4[0] - cw) // 2, 180
    card = (232, 240, 247)
    page.draw.rounded_rectangle(
        (x0, y0, x0 + cw, y0 + ch), radius=40, fill=card, outline=(90, 90, 90), width=3
    )
    small, bold = _font("regular", 25), _font("bold", 27)
    cx = x0 + cw / 2 + 90
    y = page.text((cx, y0 + 30), "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", _font("bold", 25), centre=True)
    y = page.text((cx, y), "Độc lập - Tự do - Hạnh phúc", _font("bold", 24), centre=True)
    y = page.text((cx, y + 6), "CĂN CƯỚC CÔNG DÂN", _font("bold", 36), centre=True, fill=(170, 20, 20))
    y = page.text((cx, y - 6), "Citizen Identity Card", _font("regular", 24), centre=True)
    page.draw.rectangle((x0 + 40, y0 + 190, x0 + 280, y0 + 500), fill=(175, 180, 190))
    tx = x0 + 310
    y = page.text((tx, y + 6), f"Số / No.: {p['id_number']}", _font("bold", 32))
    y = page.text((tx, y), "Họ và tên / Full name:", small)
    y = page.text((tx, y), p["full_name"].upper(), bold)
    y = page.text((tx, y), f"Ngày sinh / Date of birth: {p['date_of_birth']}", small)
    y = page.text((tx, y), f"Giới tính / Sex: {p['gender']}   Quốc tịch / Nationality: Việt Nam", small)
    y = page.text((tx, y), "Quê quán / Place of origin:", small)
    origin = ", ".join(p["address"].split(", ")[-3:])
    y = page.text((tx, y), origin, small)
    y = page.text((tx, y), "Nơi thường trú / Place of residence:", small)
    for line in _wrap(p["address"], small, cw - 340):
        y = page.text((tx, y), line, small)
    page.text((x0 + 40, y0 + ch - 50), f"Có giá trị đến: {p['expiry']}", _font("regular", 22))

    # Back side, below the front.
    y0 = y0 + ch + 120
    page.draw.rounded_rectangle(
        (x0, y0, x0 + cw, y0 + ch), radius=40, fill=card, outline=(90, 90, 90), width=3
    )
    y = page.text((x0 + 40, y0 + 40), "Đặc điểm nhân dạng / Personal identification:", small)
    mark = rng.choice(["Nốt ruồi C: 1cm trên trước đuôi mắt phải", "Sẹo chấm C: 1cm dưới sau mép trái"])
    y = page.text((x0 + 40, y), mark, small)
    y = page.text((x0 + 40, y + 10), f"Ngày, tháng, năm / Date, month, year: {p['issue_date']}", small)
    y = page.text((x0 + 400, y + 10), "CỤC TRƯỞNG CỤC CẢNH SÁT", _font("bold", 24))
    y = page.text((x0 + 330, y), "QUẢN LÝ HÀNH CHÍNH VỀ TRẬT TỰ XÃ HỘI", _font("bold", 24))
    page.draw.ellipse((x0 + 520, y + 5, x0 + 680, y + 95), outline=(200, 40, 40), width=4)  # seal
    y = page.text((x0 + 480, y + 100), "Nguyễn Đức Đông", small)
    for fx in (x0 + 40, x0 + 190):  # fingerprint boxes
        page.draw.rectangle((fx, y0 + 260, fx + 120, y0 + 400), outline=(120, 120, 120), width=2)
    mono = _font("mono", 30)
    lines = cccd_mrz(p["id_number"], p["date_of_birth"], p["gender"], p["expiry"], p["full_name"])
    my = float(y0 + ch - 170)
    for line in lines:
        my = page.text((x0 + 60, my), line, mono)
    return page


def _damage(img: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Light scan damage: skew ≤ 2°, sensor noise, a touch of blur."""
    angle = rng.uniform(-2.0, 2.0)
    fill: int | tuple[int, int, int] = 255 if img.mode == "L" else (255, 255, 255)
    img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    arr = np.asarray(img).astype(np.int16)
    noise = np.random.default_rng(seed).normal(0, 9, arr.shape).astype(np.int16)
    return Image.fromarray(np.clip(arr + noise - 6, 0, 255).astype(np.uint8), mode=img.mode)


def render_sample_dossier(
    out_pdf: Path, *, seed: int = 0, procedure: str = "business_household_registration"
) -> SampleTruth:
    """Write a synthetic scanned dossier to ``out_pdf`` (image-only, JPEG pages) and return its truth."""
    if procedure not in SUPPORTED_PROCEDURES:
        raise ConfigurationError(
            f"No sample generator for procedure {procedure!r}; supported: {', '.join(SUPPORTED_PROCEDURES)}",
            f"Chưa có hồ sơ mẫu cho thủ tục {procedure!r}.",
        )
    rng = random.Random(seed)
    person = _person(rng)
    kind, trade = rng.choice(_BUSINESSES)
    street = f"Số {rng.randrange(1, 300)}, đường {rng.choice(pools().streets)}"
    biz = {
        "business_name": f"HỘ KINH DOANH {kind} {person['full_name'].split()[-1].upper()}",
        "business_address": f"{street}, " + ", ".join(person["address"].split(", ")[-3:]),
        "trade": trade,
        "capital": f"{rng.randrange(5, 50) * 10}.000.000",
        "workers": str(rng.randrange(1, 6)),
        "phone": "0" + "".join(str(rng.randrange(10)) for _ in range(9)),
    }
    filed = date(2025, 1, 2) + timedelta(days=rng.randrange(0, 300))
    form = _request_form(person, biz, filed)
    card = _cccd_copy(person, rng)

    images = [_damage(pg.image, rng, seed * 10 + i) for i, pg in enumerate((form, card))]
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="PDF",
        save_all=True,
        append_images=images[1:],
        resolution=DPI,
        quality=72,
        # Fixed dates so the file is a pure function of the seed.
        creationDate=datetime(filed.year, filed.month, filed.day, 8, 0, 0).timetuple(),
        modDate=datetime(filed.year, filed.month, filed.day, 8, 0, 0).timetuple(),
        title="Hồ sơ mẫu (tổng hợp)",
        producer="hoso pipeline.training.samples",
    )
    out_pdf.write_bytes(buf.getvalue())

    base = {k: person[k] for k in ("full_name", "id_number", "date_of_birth", "gender")}
    docs = [
        SampleDocument(
            type="giay_de_nghi_dang_ky_ho_kinh_doanh",
            pages=[1],
            text="\n".join(form.lines),
            fields={
                **base,
                "business_name": biz["business_name"],
                "address": person["address"],
                "business_address": biz["business_address"],
            },
        ),
        SampleDocument(
            type="cccd",
            pages=[2],
            text="\n".join(card.lines),
            fields={**base, "place_of_residence": person["address"]},
        ),
    ]
    return SampleTruth(procedure=procedure, seed=seed, n_pages=len(images), documents=docs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.training.samples", description="Write a synthetic scanned dossier."
    )
    ap.add_argument("out_pdf", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--procedure", default="business_household_registration")
    args = ap.parse_args(argv)
    try:
        truth = render_sample_dossier(args.out_pdf, seed=args.seed, procedure=args.procedure)
    except ConfigurationError as exc:
        print(f"error: {exc}\n{exc.message_vi}", file=sys.stderr)
        return int(exc.exit_code)
    truth_path = args.out_pdf.with_suffix(".json")
    truth_path.write_text(truth.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"{args.out_pdf} ({args.out_pdf.stat().st_size} bytes), truth {truth_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
