"""Synthetic document texts of every catalog type, and OCR-like damage of text.

The templates (``pipeline/data/synth_templates.yaml``) are filled with synthetic people
(:mod:`pipeline.national.citizens`), places and numbers; :func:`ocr_noise` imitates what Tesseract does to
a damaged scan (dropped or wrong diacritics, confused letters and digits, split or merged words, lost
lines). Used to train the classifier (``pipeline/training/train.py``). Pure functions of the random
generator passed in.
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

from pipeline.core.mrz import cccd_mrz
from pipeline.national.citizens import synthetic_citizen

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


def person(rng: random.Random, *, born_after: int = 1940, born_before: int = 2004) -> dict[str, str]:
    """Template values of a synthetic citizen (:func:`pipeline.national.citizens.synthetic_citizen`)."""
    citizen = synthetic_citizen(rng, born=(born_after, born_before))
    return {
        "name": citizen.full_name,
        "gender": citizen.gender,
        "dob": citizen.date_of_birth,
        "year": str(citizen.birth.year),
        "id": citizen.id_number,
        "address": citizen.address,
        "origin": citizen.origin,
        "commune": citizen.place.commune,
        "district": citizen.place.district,
        "province": citizen.place.province,
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
