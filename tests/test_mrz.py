"""The CCCD back's machine-readable zone: ICAO 9303 check digits, OCR repairs, field cross-checks."""

from __future__ import annotations

from pipeline.core.mrz import check_digit, parse_mrz
from pipeline.domain.extract import extract_fields
from pipeline.training.synth import cccd_mrz


def test_icao_check_digits() -> None:
    # ICAO 9303 Part 3 worked examples: document number, birth date, expiry date.
    assert check_digit("L898902C3") == "6"
    assert check_digit("740812") == "2"
    assert check_digit("120415") == "9"
    assert check_digit("<<<<") == "0"


def test_parse_valid_mrz_of_a_chip_card() -> None:
    lines = cccd_mrz("001203012345", "05/03/2003", "Nữ", "05/03/2043", "Trần Thị Bé")
    mrz = parse_mrz("\n".join(lines))
    assert mrz is not None
    assert mrz.id_number == "001203012345" and mrz.document_number == "203012345"
    assert mrz.birth_date() == "05/03/2003" and mrz.sex == "Nữ"
    assert mrz.surname == "TRAN" and mrz.given_names == "THI BE"
    assert mrz.all_checks_pass


def test_a_changed_digit_fails_its_check() -> None:
    l1, l2, l3 = cccd_mrz("079085001122", "17/08/1985", "Nam", "17/08/2045", "Lê Văn An")
    bad = l2[:2] + ("9" if l2[2] != "9" else "8") + l2[3:]  # birth month digit misread
    mrz = parse_mrz("\n".join([l1, bad, l3]))
    assert mrz is not None and mrz.checks["birth_date"] is False and not mrz.all_checks_pass


def test_ocr_damage_is_repaired() -> None:
    l1, l2, l3 = cccd_mrz("079085001122", "17/08/1985", "Nam", "17/08/2045", "Lê Văn An")
    damaged = "\n".join([l1.replace("<", "«").replace("0", "O", 2), " ".join(l2[:15]) + l2[15:], l3])
    mrz = parse_mrz(damaged)
    assert mrz is not None and mrz.id_number == "079085001122" and mrz.birth_date() == "17/08/1985"


def test_no_mrz_in_ordinary_text() -> None:
    assert parse_mrz("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nGIẤY KHAI SINH") is None


def test_mrz_fills_and_confirms_cccd_fields() -> None:
    lines = cccd_mrz("079085001122", "17/08/1985", "Nam", "17/08/2045", "Lê Văn An")
    back_only = "Đặc điểm nhân dạng / Personal identification:\n" + "\n".join(lines)
    fields, conf = extract_fields("cccd", back_only)
    assert fields["id_number"] == "079085001122" and fields["date_of_birth"] == "17/08/1985"
    assert fields["mrz"] == "valid"
    front = "Số / No.: 079085001122\nHọ và tên / Full name:\nLÊ VĂN AN\nNgày sinh / Date of birth: 17/08/1985\n"
    fields2, conf2 = extract_fields("cccd", front + back_only)
    _, conf_front = extract_fields("cccd", front)
    assert fields2["id_number"] == "079085001122"
    assert conf2["id_number"] > conf_front["id_number"]  # two readings agree
