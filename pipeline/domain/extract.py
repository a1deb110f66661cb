"""Field extraction (first version): ID number, full name, date of birth and gender from labelled lines.

Labels are matched on diacritic/case-folded text, which keeps character offsets, so values are cut from
the original text. The 12-digit personal ID is repaired for common OCR confusions and checked against
its structure (province code, century/gender digit, birth year) — Decree 137/2015 Art. 13 (S58, S59).
"""

from __future__ import annotations

import re

from pipeline.core.mrz import parse_mrz
from pipeline.core.text import fold, parse_date

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
_GENDER_LABELS = ("gioi tinh / sex", "gioi tinh")


def _label_value(text: str, labels: tuple[str, ...], *, next_line: bool = False) -> tuple[str, int] | None:
    """The value after the first line-leading ``label:`` (in label order) and its offset, or None."""
    folded = fold(text)
    for label in labels:
        pattern = re.compile(
            # Card borders and table rules read as junk before the label: "| ¡_ Họ và tên".
            r"(?m)^[^0-9A-Za-z\n]*(?:[0-9IVX]+(?:\.[0-9]+)*[.)]\s*)?"
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


def _canonical_surname(name: str) -> str:
    """Restore the surname's diacritics when OCR misread them (``Nguyên`` → ``Nguyễn``)."""
    first, _, rest = name.partition(" ")
    canonical = _SURNAME_FORMS.get(fold(first))
    return f"{canonical} {rest}" if canonical and rest else name


def _clean_name(value: str) -> str | None:
    value = re.sub(r"^[^A-Za-zÀ-ỹĐđ]+", "", value)
    # Stop at the next label on the same line (``NGUYỄN A Giới tính: Nam``) or at digits.
    value = re.split(r"\s{2,}|[0-9:;,(]|\b(?:Giới|Sinh|Ngày|Năm|Số|Dân)\b", value)[0].strip(" .-")
    words = value.split()
    if not 2 <= len(words) <= 6 or not all(w[:1].isalpha() for w in words):
        return None
    return _canonical_surname(title_case_name(value))


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


# Common Vietnamese surnames: where a second name starts in a two-column row ("LÊ LAN TRẦN CƯỜNG").
_SURNAME_LIST = (
        "Nguyễn Trần Lê Phạm Hoàng Huỳnh Vũ Võ Phan Trương Bùi Đặng Đỗ Ngô Hồ Dương Đinh Lý Cao Hà Lương "
        "Tạ Mai Trịnh Đoàn Lâm Tô Quách Kiều Châu Thái Lưu Tăng Văn Hứa Triệu Chu Mạc Khúc Đàm Thân Giang "
        "Lại Nghiêm Phùng Tống Vương Âu Diệp La Đào Từ Quan Nông Lò Lục"
)
_SURNAME_RANK: dict[str, int] = {}
for _rank, _w in enumerate(_SURNAME_LIST.split()):
    _SURNAME_RANK.setdefault(fold(_w), _rank)
_SURNAME_FORMS = {fold(w): w for w in reversed(_SURNAME_LIST.split())}
# Two-column forms whose first column is the document's subject (wife on the tờ khai, husband on the GCN).
_TWO_COLUMN_NAME = {"to_khai_dang_ky_ket_hon", "giay_chung_nhan_ket_hon"}
_TWO_COLUMN_LABELS = ("ho, chu dem, ten", "ho va ten")
_SERIAL = re.compile(r"(?<![0-9A-Za-z])([A-Z]{2})\s?([0-9OIlSB]{6})(?![0-9A-Za-z])")
_BUSINESS_CODE = re.compile(r"(?<![0-9A-Za-z])([0-9]{2}[A-Z])([0-9OIlSB]{8})(?![0-9A-Za-z])")
_NUMBER_AFTER = r"\s*[:.,]?\s*([0-9OIlSB]{1,5})(?![0-9])"


def split_two_names(value: str) -> list[str]:
    """``LÊ TUYẾT LAN TRẦN NGỌC CƯỜNG`` → both names: the second starts at a surname, 2..5 words each."""
    words = value.split()
    # Surnames are listed most common first; a rarer one (Diệp, La) is also a given name.
    splits = [
        (_SURNAME_RANK[fold(words[i])], -i, i)
        for i in range(2, len(words) - 1)
        if fold(words[i]) in _SURNAME_RANK and i <= 5 and 2 <= len(words) - i <= 5
    ]
    if not splits:
        return [value]
    i = min(splits)[2]
    return [" ".join(words[:i]), " ".join(words[i:])]


def _digits(value: str) -> str:
    return value.translate(_CONFUSABLE)


def _land_and_business(text: str, fields: dict[str, str], conf: dict[str, float]) -> None:
    folded = fold(text)
    for name, labels in (
        ("parcel_number", ("thua dat so", "lo dat so")),
        ("map_sheet", ("to ban do so",)),
    ):
        for label in labels:
            m = re.search(re.escape(label) + _NUMBER_AFTER, folded)
            if m:
                raw = text[m.start(1) : m.end(1)]
                fields[name] = str(int(_digits(raw))) if _digits(raw).isdigit() else raw
                conf[name] = 0.9 if raw.isdigit() else 0.7
                break
    # The serial: two capitals and six digits, best after "số phát hành"; the GCN prints it alone.
    serials = [(m.start(), m.group(1), _digits(m.group(2))) for m in _SERIAL.finditer(text)]
    serials = [s for s in serials if s[2].isdigit()]
    if serials:
        labelled = [s for s in serials if "phat hanh" in folded[max(0, s[0] - 40) : s[0]]]
        _, letters, number = (labelled or serials)[0]
        fields["certificate_serial"] = f"{letters} {number}"
        conf["certificate_serial"] = 0.9 if labelled else 0.7
    m = re.search(r"dien tich\s*[:.]?\s*([0-9][0-9.,]*)\s*m", folded)
    if m:
        raw = text[m.start(1) : m.end(1)].rstrip(".,")
        value = raw.replace(".", "").replace(",", ".") if "," in raw else raw
        try:
            fields["area_m2"] = str(float(value))
            conf["area_m2"] = 0.85
        except ValueError:
            pass
    hit = _label_value(text, ("1. ten ho kinh doanh", "ten ho kinh doanh"))
    if hit:
        fields["business_name"] = re.sub(r"\s+", " ", hit[0]).strip(" .")
        conf["business_name"] = 0.85 if hit[0].isupper() else 0.7
    m2 = _BUSINESS_CODE.search(text)
    if m2:
        fields["business_code"] = m2.group(1) + _digits(m2.group(2))
        conf["business_code"] = 0.85


def _mrz_fields(text: str, fields: dict[str, str], conf: dict[str, float]) -> None:
    """Cross-check (or fill) the CCCD front's ID, birth date and sex with the back's MRZ."""
    mrz = parse_mrz(text)
    if mrz is None:
        return
    fields["mrz"] = "valid" if mrz.all_checks_pass else ("checks_failed" if mrz.checks else "unchecked")
    conf["mrz"] = 0.95 if mrz.all_checks_pass else 0.5
    pairs = (("id_number", mrz.id_number), ("date_of_birth", mrz.birth_date()), ("gender", mrz.sex))
    for name, value in pairs:
        if not value:
            continue
        if name == "id_number" and check_id(value) == 0.0:
            continue
        if fields.get(name) == value:
            conf[name] = round(min(1.0, conf.get(name, 0.8) + 0.1), 3)  # two readings agree
        elif name not in fields:
            fields[name] = value
            conf[name] = 0.8 if mrz.all_checks_pass else 0.6


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
    if doc_type in _TWO_COLUMN_NAME:
        row = _inline_value(text, _TWO_COLUMN_LABELS, colon=False)
        if row:
            first = _clean_name(split_two_names(re.sub(r"^[^A-ZÀ-Ỹ]*", "", row))[0])
            if first:
                fields["full_name"] = first
                conf["full_name"] = 0.8

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
            if "date_of_birth" not in fields:
                # A table row (sổ hộ khẩu members): the birth date sits on the ID's line.
                start = text.rfind("\n", 0, min(o for d, o, _, _ in candidates if d == digits)) + 1
                end = text.find("\n", start)
                dob_row = parse_date(text[start : end if end >= 0 else None])
                if dob_row and check_id(digits, dob_row) > 0.8:
                    fields["date_of_birth"], conf["date_of_birth"] = dob_row, 0.75
    if doc_type == "cccd":
        _mrz_fields(text, fields, conf)
    _land_and_business(text, fields, conf)
    return fields, conf
