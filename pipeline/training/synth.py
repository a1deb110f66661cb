"""Synthetic document texts of every catalog type, and OCR-like damage of text.

The templates (``pipeline/data/synth_templates.yaml``) are filled with synthetic people, places and
numbers; :func:`ocr_noise` imitates what Tesseract does to a damaged scan (dropped or wrong diacritics,
confused letters and digits, split or merged words, lost lines). Used to train the classifier
(``pipeline/training/train.py``) and to draw sample dossiers (``pipeline/training/samples.py``). Pure functions of the
random generator passed in.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from pipeline.core.text import fold

SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Vũ", "Võ", "Phan", "Trương", "Bùi", "Đặng",
            "Đỗ", "Ngô", "Hồ", "Dương", "Đinh", "Lý", "Cao", "Hà", "Lương", "Tạ"]  # fmt: skip
MIDDLE = {
    "Nam": ["Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Thành", "Xuân", "Đình", "Ngọc", "Việt", "Hải"],
    "Nữ": ["Thị", "Thu", "Ngọc", "Thanh", "Mỹ", "Kim", "Hoài", "Bảo", "Khánh", "Tuyết", "Phương", "Minh"],
}
GIVEN = {
    "Nam": ["Sơn", "Hùng", "Dũng", "Tuấn", "Long", "Phúc", "Khang", "Toàn", "Cường", "Vinh", "Hiệp", "Lâm",
            "Thắng", "Quý", "Đạt", "Nghĩa", "Trung", "Kiên"],
    "Nữ": ["Lan", "Hương", "Mai", "Hạnh", "Trang", "Nhung", "Thảo", "Uyên", "Diệp", "Nhi", "Huyền", "Yến",
           "Thơm", "Trâm", "Ngân", "Oanh", "Vy", "Linh"],
}  # fmt: skip
# (province code, province, district, commune)
PLACES = [
    ("001", "Thành phố Hà Nội", "Quận Cầu Giấy", "Phường Dịch Vọng"),
    ("001", "Thành phố Hà Nội", "Huyện Đông Anh", "Xã Uy Nỗ"),
    ("031", "Thành phố Hải Phòng", "Huyện An Dương", "Thị trấn An Dương"),
    ("048", "Thành phố Đà Nẵng", "Quận Hải Châu", "Phường Thạch Thang"),
    ("079", "Thành phố Hồ Chí Minh", "Quận 3", "Phường Võ Thị Sáu"),
    ("040", "Tỉnh Nghệ An", "Huyện Nam Đàn", "Thị trấn Nam Đàn"),
    ("083", "Tỉnh Bến Tre", "Thành phố Bến Tre", "Phường Phú Khương"),
    ("037", "Tỉnh Ninh Bình", "Huyện Gia Viễn", "Xã Gia Hòa"),
    ("022", "Tỉnh Quảng Ninh", "Thành phố Hạ Long", "Phường Bãi Cháy"),
    ("036", "Tỉnh Nam Định", "Huyện Hải Hậu", "Xã Hải Minh"),
    ("089", "Tỉnh An Giang", "Thành phố Long Xuyên", "Phường Mỹ Bình"),
    ("049", "Tỉnh Quảng Nam", "Huyện Duy Xuyên", "Xã Duy Hòa"),
]
STREETS = ["Nguyễn Du", "Trần Phú", "Lê Lợi", "Hai Bà Trưng", "Lý Thường Kiệt", "Hùng Vương", "Bạch Đằng",
           "Quang Trung", "Phan Chu Trinh", "Điện Biên Phủ"]  # fmt: skip
BUSINESSES = [
    ("QUÁN CƠM", "Nhà hàng và các dịch vụ ăn uống phục vụ lưu động (Mã ngành: 5610)"),
    ("TIỆM MAY", "May trang phục (trừ trang phục từ da lông thú) (Mã ngành: 1410)"),
    ("TẠP HÓA", "Bán lẻ lương thực, thực phẩm trong các cửa hàng chuyên doanh (Mã ngành: 4721)"),
    ("CÀ PHÊ", "Dịch vụ phục vụ đồ uống (Mã ngành: 5630)"),
    ("SỬA XE", "Bảo dưỡng, sửa chữa mô tô, xe máy (Mã ngành: 4542)"),
]


@dataclass(frozen=True)
class SyntheticDocument:
    """One synthetic document: its type, printed text (lines in reading order) and true field values."""

    type: str
    text: str
    fields: dict[str, str]


@lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    """The bundled templates (``pipeline/data/synth_templates.yaml``)."""
    raw = resources.files("pipeline").joinpath("data/synth_templates.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(raw)
    return data


@lru_cache(maxsize=1)
def filler_sentences() -> tuple[str, ...]:
    raw = resources.files("pipeline").joinpath("data/synth_filler.txt").read_text(encoding="utf-8")
    return tuple(line for line in raw.splitlines() if line and not line.startswith("#"))


def mrz_check_digit(s: str) -> str:
    """ICAO 9303 check digit (weights 7, 3, 1; ``<`` = 0, A = 10 … Z = 35)."""
    total = 0
    for i, ch in enumerate(s):
        v = int(ch) if ch.isdigit() else (ord(ch) - 55 if "A" <= ch <= "Z" else 0)
        total += v * (7, 3, 1)[i % 3]
    return str(total % 10)


def cccd_mrz(id_number: str, dob: str, gender: str, expiry: str, name: str) -> tuple[str, str, str]:
    """The three TD1 lines of a chip CCCD's back (ICAO 9303 check digits)."""
    yymmdd = dob[8:10] + dob[3:5] + dob[0:2]
    exp6 = expiry[8:10] + expiry[3:5] + expiry[0:2]
    l1 = f"IDVNM{id_number[3:]}{mrz_check_digit(id_number[3:])}{id_number}"
    l1 = (l1 + "<" * 30)[:30]
    sex = "F" if gender == "Nữ" else "M"
    l2 = f"{yymmdd}{mrz_check_digit(yymmdd)}{sex}{exp6}{mrz_check_digit(exp6)}VNM"
    l2 = (l2 + "<" * 30)[:29]
    l2 += mrz_check_digit(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
    parts = fold(name).upper().split()
    l3 = (parts[0] + "<<" + "<".join(parts[1:]) + "<" * 30)[:30]
    return l1, l2, l3


def person(rng: random.Random, *, born_after: int = 1940, born_before: int = 2004) -> dict[str, str]:
    """A synthetic citizen whose 12-digit ID agrees with the birth year, gender and province."""
    gender = rng.choice(["Nam", "Nữ"])
    n_middle = rng.choice([1, 1, 1, 2])
    name = " ".join(
        [rng.choice(SURNAMES), *rng.sample(MIDDLE[gender], n_middle), rng.choice(GIVEN[gender])]
    )
    dob = date(born_after, 1, 1) + timedelta(days=rng.randrange(0, 365 * (born_before - born_after)))
    code, province, district, commune = rng.choice(PLACES)
    century_gender = (0 if dob.year < 2000 else 2) + (1 if gender == "Nữ" else 0)
    id_number = f"{code}{century_gender}{dob.year % 100:02d}{rng.randrange(0, 10**6):06d}"
    street = f"Số {rng.randrange(1, 300)}, đường {rng.choice(STREETS)}"
    return {
        "name": name,
        "gender": gender,
        "dob": dob.strftime("%d/%m/%Y"),
        "year": str(dob.year),
        "id": id_number,
        "address": f"{street}, {commune}, {district}, {province}",
        "origin": f"{commune}, {district}, {province}",
        "commune": commune,
        "district": district,
        "province": province,
    }


def _date_words(d: date) -> str:
    return f"ngày {d.day:02d} tháng {d.month:02d} năm {d.year}"


def values(rng: random.Random) -> dict[str, str]:
    """Placeholder values for one document: two adults (a, b), a child, land, business and dates."""
    a = person(rng)
    b = person(rng)
    child = person(rng, born_after=2015, born_before=2024)
    when = date(2016, 1, 1) + timedelta(days=rng.randrange(0, 365 * 9))
    kind, trade = rng.choice(BUSINESSES)
    letters = "ABCDEGHKLMNPRSTVX"
    serial = f"{rng.choice(letters)}{rng.choice(letters)} {rng.randrange(100000, 999999)}"
    parcel, sheet = rng.randrange(1, 999), rng.randrange(1, 99)
    v = {
        **a,
        "NAME": a["name"].upper(),
        **{f"{k}_b": val for k, val in b.items()},
        "NAME_B": b["name"].upper(),
        "child": child["name"],
        "CHILD": child["name"].upper(),
        "child_dob": child["dob"],
        "gender_b": child["gender"] if rng.random() < 0.5 else b["gender"],
        "place": a["province"].replace("Thành phố ", "").replace("Tỉnh ", ""),
        "date": when.strftime("%d/%m/%Y"),
        "date_words": _date_words(when),
        "num": str(rng.randrange(10, 99999)),
        "serial": rng.choice(["", "Số phát hành: ", "Số seri: "]) + serial,
        "serial_value": serial,
        "parcel": str(parcel),
        "sheet": str(sheet),
        "area": f"{rng.randrange(40, 900)},{rng.randrange(0, 10)}",
        "book": f"CS{rng.randrange(1000, 99999):05d}",
        "land_address": f"{a['commune']}, {a['district']}, {a['province']}",
        "biz_name": f"HỘ KINH DOANH {kind} {a['name'].split()[-1].upper()}",
        "biz_code": f"{a['id'][:2]}{rng.choice('ABCDEFGH')}{rng.randrange(10**7, 10**8)}",
        "capital": f"{rng.randrange(5, 900) * 10}.000.000",
        "trade": trade,
    }
    expiry = (date(int(a["year"]) + rng.choice([25, 40, 60]), 1, 1)).strftime("%d/%m/%Y")
    v["mrz1"], v["mrz2"], v["mrz3"] = cccd_mrz(a["id"], a["dob"], a["gender"], expiry, a["name"])
    for key in ("commune", "district", "province"):
        v[key.upper()] = a[key].upper()
    return v


_PLACEHOLDER = re.compile(r"\{([A-Za-z_0-9]+)\}")


def _fill(template: str, v: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: v.get(m.group(1), m.group(0)), template)


def synthetic_document(doc_type: str, rng: random.Random, *, title: bool = True) -> SyntheticDocument:
    """A synthetic document of ``doc_type``; ``title=False`` leaves the printed title out (a back page)."""
    spec = templates()["types"][doc_type]
    v = values(rng)
    lines: list[str] = []
    header = [_fill(h, v) for h in rng.choice(spec["header"])]
    motto = list(templates()["motto"]) if spec.get("motto") else []
    if header and rng.random() < 0.5:
        # Two-column header: agency and motto read left block first, then right.
        lines += header + motto
    else:
        lines += motto + header
    if title:
        lines += _fill(rng.choice(spec["title"]), v).split("\n")
    fillers = filler_sentences()
    n_filler = rng.randint(0, int(spec.get("filler", 0)))
    body: list[str] = []
    for tmpl in spec["lines"]:
        if tmpl.startswith("?"):
            if rng.random() < 0.5:
                continue
            tmpl = tmpl[1:]
        body += _fill(tmpl, v).split("\n")
    for _ in range(n_filler):
        body.insert(rng.randrange(len(body) + 1), rng.choice(fillers))
    fields = {
        "full_name": v["name"],
        "id_number": v["id"],
        "date_of_birth": v["dob"],
        "gender": v["gender"],
    }
    return SyntheticDocument(type=doc_type, text="\n".join(lines + body), fields=fields)


_LETTER_CONFUSIONS = {
    "đ": "d", "Đ": "D", "ơ": "o", "ư": "u", "ă": "a", "â": "a", "ê": "e", "ô": "o",
    "rn": "m", "m": "rn", "l": "1", "I": "l", "O": "0", "0": "O", "1": "l", "5": "S", "8": "B",
    "e": "c", "c": "e", "h": "b", "n": "u", "u": "n", "i": "í", "a": "á", "o": "ó",
}  # fmt: skip
_ACCENTS = ["\u0300", "\u0301", "\u0303", "\u0309", "\u0323"]


def _strip_marks(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def ocr_noise(text: str, rng: random.Random, level: float) -> str:
    """Tesseract-like damage of ``text`` at ``level`` (0 = none, ~0.05 light, ~0.15 heavy scan)."""
    if level <= 0:
        return text
    out_lines: list[str] = []
    for line in text.split("\n"):
        r = rng.random()
        if r < level * 0.5:
            continue  # a lost line (seal, fold, faint print)
        if r < level * 0.8:
            out_lines.append("".join(rng.choice("|-_.,'`~:;ilI!") for _ in range(rng.randrange(1, 6))))
        words: list[str] = []
        for w in line.split():
            x = rng.random()
            if x < level * 1.5:
                w = _strip_marks(w).replace("đ", "d").replace("Đ", "D")
            elif x < level * 2.5:
                w = unicodedata.normalize(
                    "NFC", _strip_marks(w)[:1] + rng.choice(_ACCENTS) + _strip_marks(w)[1:]
                )
            chars = list(w)
            for i, c in enumerate(chars):
                if rng.random() < level * 0.4:
                    chars[i] = _LETTER_CONFUSIONS.get(c, c) if rng.random() < 0.7 else rng.choice("aeoinhtc")
            w = "".join(chars)
            if words and rng.random() < level * 0.3:
                words[-1] += w  # merged words
            elif len(w) > 3 and rng.random() < level * 0.3:
                cut = rng.randrange(1, len(w))
                words += [w[:cut], w[cut:]]
            else:
                words.append(w)
        out_lines.append(" ".join(words))
    return unicodedata.normalize("NFC", "\n".join(out_lines))
