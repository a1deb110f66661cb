"""The machine-readable zone (ICAO 9303 TD1, 3 × 30 characters) on the back of a chip CCCD.

Line 1 ``IDVNM`` + the last 9 digits of the personal ID + check digit + the full 12-digit ID; line 2 birth
date YYMMDD + check, sex, expiry YYMMDD + check, ``VNM``, composite check; line 3 the folded name
(``SURNAME<<GIVEN<NAMES``). OCR reads ``<`` as ``«``, ``K``, ``(`` or spaces, and confuses O/0, I/1:
lines are repaired before parsing, and every check digit is reported (a failed check lowers confidence; it
does not discard a value that other evidence on the card confirms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TO_FILLER = str.maketrans({"«": "<", "‹": "<", "(": "<", "{": "<", "[": "<", "≤": "<", "£": "<"})
_DIGITS = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "B": "8", "G": "6"})
_LINE1 = re.compile(r"[I1l|][D0O]VNM([0-9OQDILZSBG<]{9,30})")
_LINE2 = re.compile(
    r"([0-9OQDILZSBG]{6})([0-9OQDILZSBG<])([MF<])([0-9OQDILZSBG]{6})([0-9OQDILZSBG<])VNM[<K]*([0-9OQDILZSBG])?"
)
_LINE3 = re.compile(r"^([A-Z]+)<<([A-Z<]+?)<*$")


def check_digit(s: str) -> str:
    """ICAO 9303 check digit of ``s`` (weights 7, 3, 1; ``<`` = 0, A = 10 … Z = 35)."""
    total = 0
    for i, ch in enumerate(s):
        v = int(ch) if ch.isdigit() else (ord(ch) - 55 if "A" <= ch <= "Z" else 0)
        total += v * (7, 3, 1)[i % 3]
    return str(total % 10)


@dataclass
class Mrz:
    """What the MRZ says, with the outcome of each check digit (None when it could not be read)."""

    id_number: str | None = None
    document_number: str | None = None
    birth_yymmdd: str | None = None
    sex: str | None = None
    expiry_yymmdd: str | None = None
    surname: str | None = None
    given_names: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def all_checks_pass(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def birth_date(self) -> str | None:
        """``dd/mm/yyyy``; the century from the ID's century digit (0/1 → 1900s, 2/3 → 2000s)."""
        if not self.birth_yymmdd:
            return None
        yy, mm, dd = self.birth_yymmdd[:2], self.birth_yymmdd[2:4], self.birth_yymmdd[4:]
        if self.id_number and self.id_number[3].isdigit():
            century = 1900 + 100 * (int(self.id_number[3]) // 2)
        else:
            century = 1900 if int(yy) > 30 else 2000
        return f"{dd}/{mm}/{century + int(yy)}"


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        s = line.translate(_TO_FILLER).replace(" ", "").upper()
        # Tesseract often reads a run of fillers as K or C characters: "<<<<" → "KKKK".
        s = re.sub(r"(?<=[<K])K|K(?=[<K]{2})", "<", s)
        if len(s) >= 20 and s.count("<") + sum(c.isdigit() for c in s) >= len(s) * 0.3:
            out.append(s)
    return out


def parse_mrz(text: str) -> Mrz | None:
    """The MRZ of a CCCD back found in ``text`` (any lines of it), or None when there is none."""
    lines = _lines(text)
    if not lines:
        return None
    mrz = Mrz()
    found = False
    for line in lines:
        m1 = _LINE1.search(line)
        if m1 and mrz.id_number is None:
            rest = m1.group(1).translate(_DIGITS)
            doc = rest[:9]
            if doc.isdigit():
                mrz.document_number = doc
                # The 12-digit ID ends with the 9-digit document number; it follows the check digit.
                tail = rest[9:]
                pos = tail.find(doc)
                if pos >= 3 and tail[pos - 3 : pos].isdigit():
                    mrz.id_number = tail[pos - 3 : pos + 9]
                cd = rest[9:10]
                if cd.isdigit():
                    mrz.checks["document_number"] = check_digit(doc) == cd
                found = True
            continue
        m2 = _LINE2.search(line)
        if m2 and mrz.birth_yymmdd is None:
            birth, bcd, sex, expiry, ecd, composite = (
                g.translate(_DIGITS) if g else g for g in m2.groups()
            )
            if birth.isdigit():
                mrz.birth_yymmdd = birth
                if bcd.isdigit():
                    mrz.checks["birth_date"] = check_digit(birth) == bcd
            mrz.sex = {"M": "Nam", "F": "Nữ"}.get(sex)
            if expiry.isdigit():
                mrz.expiry_yymmdd = expiry
                if ecd.isdigit():
                    mrz.checks["expiry_date"] = check_digit(expiry) == ecd
            found = True
            continue
        m3 = _LINE3.match(line)
        if m3 and mrz.surname is None and found:
            mrz.surname = m3.group(1)
            mrz.given_names = " ".join(p for p in m3.group(2).split("<") if p)
    return mrz if found else None
