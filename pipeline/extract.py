"""Field extraction (first version): ID number, full name, date of birth and gender from labelled lines.

Labels are matched on diacritic/case-folded text, which keeps character offsets, so values are cut from
the original text. The 12-digit personal ID is repaired for common OCR confusions and checked against
its structure (province code, century/gender digit, birth year) — Decree 137/2015 Art. 13 (S58, S59).
"""

from __future__ import annotations

import re
from datetime import date

from pipeline.classify import fold

# Province / centrally-run city codes of the personal ID (Circular 07/2016/TT-BCA Annex 1, S60).
PROVINCE_CODES = frozenset(
    [
        "001",
        "002",
        "004",
        "006",
        "008",
        "010",
        "011",
        "012",
        "014",
        "015",
        "017",
        "019",
        "020",
        "022",
        "024",
        "025",
        "026",
        "027",
        "030",
        "031",
        "033",
        "034",
        "035",
        "036",
        "037",
        "038",
        "040",
        "042",
        "044",
        "045",
        "046",
        "048",
        "049",
        "051",
        "052",
        "054",
        "056",
        "058",
        "060",
        "062",
        "064",
        "066",
        "067",
        "068",
        "070",
        "072",
        "074",
        "075",
        "077",
        "079",
        "080",
        "082",
        "083",
        "084",
        "086",
        "087",
        "089",
        "091",
        "092",
        "093",
        "094",
        "095",
        "096",
    ]
)
_CONFUSABLE = str.maketrans(
    {
        "O": "0",
        "o": "0",
        "D": "0",
        "Q": "0",
        "I": "1",
        "l": "1",
        "|": "1",
        "i": "1",
        "!": "1",
        "S": "5",
        "B": "8",
        "Z": "2",
        "G": "6",
    }
)
_ID_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9OoDQIl|i!SBZG]{12}(?![0-9A-Za-z])")
_DATE = re.compile(r"(?<!\d)(\d{1,2})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*(\d{4})(?!\d)")

# Folded labels, best first. An ID after the first group is preferred over one after the second
# (a tờ khai carries the requester's ID card and, further down, the subject's personal ID number).
_ID_LABELS: tuple[tuple[str, ...], ...] = (
    (
        "so dinh danh ca nhan",
        "so / no",
        "so/no",
        "so giay to phap ly cua ca nhan",
        "personal identification number",
    ),
    (
        "cccd so",
        "so cccd",
        "can cuoc cong dan so",
        "can cuoc so",
        "cmnd so",
        "giay to tuy than",
        "so can cuoc",
    ),
)
_NAME_LABELS: dict[str, tuple[str, ...]] = {
    "giay_chung_sinh": ("du dinh dat ten con",),
    "gcn_qsdd": ("ong", "ba", "ong/ba"),
    "hop_dong_chuyen_nhuong_qsdd": ("ong/ba", "ong", "ba"),
    "don_dang_ky_bien_dong": ("1.1. ten (viet chu in hoa)", "ten (viet chu in hoa)", "ten"),
    "don_de_nghi_cap_gpxd": ("- ten chu dau tu", "ten chu dau tu"),
}
_DEFAULT_NAME_LABELS = (
    "ho va ten / full name",
    "ho, chu dem va ten khai sinh / full name",
    "ho va ten",
    "ho, chu dem va ten",
    "ho, chu dem, ten",
    "ho ten",
    "toi la (ghi ho ten bang chu in hoa)",
    "toi la",
    "ho va ten chu ho",
)
_DOB_LABELS = ("ngay, thang, nam sinh", "ngay sinh", "sinh ngay", "date of birth", "da sinh con vao luc")
_WORD_DATE = re.compile(r"ngay\s+(\d{1,2})\s+thang\s+(\d{1,2})\s+nam\s+(\d{4})")
_GENDER_LABELS = ("gioi tinh / sex", "gioi tinh")


def _label_value(text: str, labels: tuple[str, ...], *, next_line: bool = False) -> tuple[str, int] | None:
    """The value after the first line-leading ``label:`` (in label order) and its offset, or None."""
    folded = fold(text)
    for label in labels:
        pattern = re.compile(
            r"(?m)^[ \t\-•*]*(?:[0-9IVX]+(?:\.[0-9]+)*[.)]\s*)?"
            + re.escape(label)
            + r"\s*(?:\([^)\n]*\))?\s*(?:/[^:\n]*)?:[ \t]*([^\n]*)"
        )
        for m in pattern.finditer(folded):
            value = text[m.start(1) : m.end(1)].strip()
            if not value and next_line:
                rest = text[m.end(1) :].lstrip("\n").split("\n", 1)[0].strip()
                value = rest
            if value:
                return value, m.start(1)
    return None


def _inline_value(text: str, labels: tuple[str, ...], *, colon: bool = True) -> str | None:
    """The text after ``label:`` anywhere on a line (labels may share a line).

    With ``colon=False`` the colon is optional (two-column tables: ``Ngày, tháng, năm sinh 04/11/1965 …``).
    """
    folded = fold(text)
    sep = ":" if colon else ":?"
    for label in labels:
        m = re.search(
            r"(?<![a-z])" + re.escape(label) + r"\s*(?:/[^:\n]*)?" + sep + r"[ \t]*([^\n]*)", folded
        )
        if m:
            return text[m.start(1) : m.end(1)].strip()
    return None


def title_case_name(value: str) -> str:
    """``NGUYỄN VĂN A`` → ``Nguyễn Văn A`` (Vietnamese names are one capital per syllable)."""
    return " ".join(w[:1].upper() + w[1:].lower() for w in value.split())


def _clean_name(value: str) -> str | None:
    # Stop at the next label on the same line (``NGUYỄN A Giới tính: Nam``) or at digits.
    value = re.split(r"\s{2,}|[0-9:;,(]|\b(?:Giới|Sinh|Ngày|Năm|Số|Dân)\b", value)[0].strip(" .-")
    words = value.split()
    if not 2 <= len(words) <= 6 or not all(w[:1].isalpha() for w in words):
        return None
    return title_case_name(value)


def parse_date(value: str) -> str | None:
    """The first valid ``dd/mm/yyyy`` (or ``ngày d tháng m năm yyyy``) date in ``value``, normalised."""
    for m in [*_DATE.finditer(value), *_WORD_DATE.finditer(fold(value))]:
        d, mth, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        try:
            date(y, mth, d)
        except ValueError:
            continue
        if 1880 <= y <= 2100:
            return f"{d:02d}/{mth:02d}/{y}"
    return None


def check_id(number: str, date_of_birth: str | None = None, gender: str | None = None) -> float:
    """Plausibility of a 12-digit personal ID in 0..1 (0 = impossible structure)."""
    if len(number) != 12 or not number.isdigit() or number[:3] not in PROVINCE_CODES:
        return 0.0
    century_gender = int(number[3])
    score = 0.8
    if date_of_birth:
        year = int(date_of_birth[-4:])
        century = 1900 + 100 * (century_gender // 2)
        if year - year % 100 == century and f"{year % 100:02d}" == number[4:6]:
            score += 0.15
        else:
            score -= 0.2  # the date may belong to someone else on the form (a child, a deceased person)
    if gender:
        female = century_gender % 2 == 1
        g = fold(gender)
        if (g.startswith("nu") and female) or (g.startswith("nam") and not female):
            score += 0.05
    return round(min(score, 1.0), 3)


def find_id_numbers(text: str) -> list[tuple[str, int, int, bool]]:
    """Candidate IDs as (digits, offset, label rank, repaired); rank 0/1 = after a label group, 9 = none."""
    folded = fold(text)
    out: list[tuple[str, int, int, bool]] = []
    for m in _ID_TOKEN.finditer(text):
        raw = m.group(0)
        if sum(c.isdigit() for c in raw) < 9:
            continue
        digits = raw.translate(_CONFUSABLE)
        line_start = folded.rfind("\n", 0, m.start()) + 1
        before = folded[max(line_start, m.start() - 60) : m.start()]
        rank = 9
        for i, group in enumerate(_ID_LABELS):
            if any(label in before for label in group):
                rank = i
                break
        out.append((digits, m.start(), rank, digits != raw))
    return out


def extract_fields(doc_type: str, text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Fields of a document's text with a confidence per field (only fields that were found)."""
    fields: dict[str, str] = {}
    conf: dict[str, float] = {}

    name_labels = _NAME_LABELS.get(doc_type, ()) + _DEFAULT_NAME_LABELS
    hit = _label_value(text, name_labels, next_line=True)
    if hit:
        name = _clean_name(hit[0])
        if name:
            fields["full_name"] = name
            conf["full_name"] = 0.9 if hit[0].isupper() else 0.75

    dob_raw = _inline_value(text, _DOB_LABELS, colon=False)
    dob = parse_date(dob_raw) if dob_raw else None
    if dob:
        fields["date_of_birth"] = dob
        conf["date_of_birth"] = 0.9

    gender_raw = _inline_value(text, _GENDER_LABELS)
    if gender_raw:
        g = fold(gender_raw.split()[0]) if gender_raw.split() else ""
        if g in ("nam", "male", "m"):
            fields["gender"], conf["gender"] = "Nam", 0.9
        elif g in ("nu", "female", "f"):
            fields["gender"], conf["gender"] = "Nữ", 0.9

    candidates = find_id_numbers(text)
    if candidates:
        # Best label group first, then reading order; structurally impossible numbers last.
        scored = [
            (check_id(d, dob, fields.get("gender")) == 0.0, rank, off, d, repaired)
            for d, off, rank, repaired in candidates
        ]
        impossible, rank, _, digits, repaired = min(scored)
        c = check_id(digits, dob, fields.get("gender"))
        if not impossible:
            c = c if rank < 9 else c * 0.8
            fields["id_number"] = digits
            conf["id_number"] = round(c * (0.85 if repaired else 1.0), 3)
    return fields, conf
