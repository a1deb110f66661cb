"""The machine-readable zone (ICAO 9303 TD1, 3 × 30 characters) on the back of a chip CCCD.

Line 1 ``IDVNM`` + the last 9 digits of the personal ID + check digit + the full 12-digit ID + ``<<`` +
the ID's check digit; line 2 birth date YYMMDD + check, sex, expiry YYMMDD + check, ``VNM``, composite
check (over line 1 from position 6, and the dates with their checks); line 3 the folded name
(``SURNAME<<GIVEN<NAMES``). :func:`cccd_mrz` writes the three lines for synthetic cards.

OCR reads ``<`` as ``«``, ``K``, ``(`` or spaces, and confuses O/0, I/1: lines are repaired before
parsing, and the check digits of the document number and the dates are reported (a failed check lowers
confidence; it does not discard a value that other evidence on the card confirms). The ID's check digit
and the composite are written but not checked on reading: some card images carry other values there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.core.text import fold

_TO_FILLER = str.maketrans({"«": "<", "‹": "<", "(": "<", "{": "<", "[": "<", "≤": "<", "£": "<"})
_DIGITS = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "B": "8", "G": "6"})
_LINE1 = re.compile(r"[I1l|][D0O]VNM([0-9OQDILZSBG<]{9,30})")
_LINE2 = re.compile(
    r"([0-9OQDILZSBG]{6})([0-9OQDILZSBG<])([MF<])([0-9OQDILZSBG]{6})([0-9OQDILZSBG<])VNM[<K]*([0-9OQDILZSBG])?"
)
_LINE3 = re.compile(r"^([A-Z]+)<<([A-Z<]+?)<*$")
_VALUES = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")} | {"<": 0}
_WEIGHTS = (7, 3, 1)


def check_digit(s: str) -> str:
    """ICAO 9303 check digit of ``s``: weights 7, 3, 1 over 0–9, A = 10 … Z = 35, ``<`` = 0.

    Raises ValueError for any other character (lower case, Vietnamese letters, spaces): the MRZ has none,
    and a silent value for them would hide a caller's mistake.
    """
    total = 0
    for i, ch in enumerate(s):
        value = _VALUES.get(ch)
        if value is None:
            raise ValueError(f"{ch!r} is not an MRZ character (0-9, A-Z, <) in {s!r}")
        total += value * _WEIGHTS[i % 3]
    return str(total % 10)


def _yymmdd(dd_mm_yyyy: str) -> str:
    return datetime.strptime(dd_mm_yyyy, "%d/%m/%Y").strftime("%y%m%d")


def mrz_name(full_name: str) -> str:
    """``SURNAME<<GIVEN<NAMES`` of a Vietnamese name, folded to A–Z and cut to one 30-character line."""
    words = ["".join(c if "A" <= c <= "Z" else "<" for c in w) for w in fold(full_name).upper().split()]
    if not words:
        raise ValueError("an MRZ name needs at least one word")
    return (words[0] + "<<" + "<".join(words[1:])).ljust(30, "<")[:30]


def cccd_mrz(id_number: str, date_of_birth: str, gender: str, expiry: str, full_name: str) -> tuple[str, str, str]:
    """The three TD1 lines of a chip CCCD's back; dates are ``dd/mm/yyyy``, gender ``Nam`` or ``Nữ``."""
    if len(id_number) != 12 or not id_number.isascii() or not id_number.isdigit():
        raise ValueError(f"a personal ID has 12 digits, not {id_number!r}")
    if gender not in ("Nam", "Nữ"):
        raise ValueError(f"gender is Nam or Nữ, not {gender!r}")
    document = id_number[3:]
    optional = id_number + "<<"  # positions 16-29, then their check digit
    line1 = f"IDVNM{document}{check_digit(document)}{optional}{check_digit(optional)}"
    birth, until = _yymmdd(date_of_birth), _yymmdd(expiry)
    dates = f"{birth}{check_digit(birth)}{'F' if gender == 'Nữ' else 'M'}{until}{check_digit(until)}"
    line2 = f"{dates}VNM".ljust(29, "<")
    composite = line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29]
    return line1, line2 + check_digit(composite), mrz_name(full_name)


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
