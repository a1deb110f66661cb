"""The CCCD back's machine-readable zone: ICAO 9303 check digits, the card's layout, OCR repairs, field cross-checks."""

from __future__ import annotations

import pytest

from pipeline.core.mrz import cccd_mrz, check_digit, parse_mrz
from pipeline.domain.extract import extract_fields


def test_icao_check_digits() -> None:
    # ICAO 9303 Part 3 worked examples: document number, birth date, expiry date.
    assert check_digit("L898902C3") == "6"
    assert check_digit("740812") == "2"
    assert check_digit("120415") == "9"
    assert check_digit("<<<<") == "0"


def test_icao_td1_specimen_every_check_digit() -> None:
    # ICAO 9303 Part 5's TD1 specimen: document number, both dates and the composite over lines 1 and 2.
    line1, line2 = "I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6"
    assert check_digit(line1[5:14]) == line1[14] == "7"
    assert check_digit(line2[0:6]) == line2[6] and check_digit(line2[8:14]) == line2[14]
    assert check_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29]) == line2[29] == "6"


@pytest.mark.parametrize("text", ["a", "l898902c3", "Đ", "D23 145890", "٣"])
def test_check_digit_refuses_what_an_mrz_cannot_hold(text: str) -> None:
    # The MRZ alphabet is 0-9, A-Z and <. A former copy in samples.py valued any letter as ord(c) - 55
    # ("a" → "4") while the others took it for a filler ("a" → "0"): both silently wrong.
    with pytest.raises(ValueError, match="not an MRZ character"):
        check_digit(text)


def test_cccd_mrz_is_laid_out_like_an_issued_card() -> None:
    lines = cccd_mrz("001203012345", "05/03/2003", "Nữ", "05/03/2043", "Trần Thị Bé")
    assert lines == (
        "IDVNM2030123450001203012345<<1",  # last 9 digits + check, the 12-digit ID + << + the ID's check
        "0303055F4303053VNM<<<<<<<<<<<2",  # birth + check, sex, expiry + check, nationality, composite
        "TRAN<<THI<BE<<<<<<<<<<<<<<<<<<",
    )
    line1, line2, _ = lines
    assert line1[29] == check_digit("001203012345")
    assert line2[29] == check_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29])
    long_name = cccd_mrz("079085001122", "17/08/1985", "Nam", "17/08/2045", "Tôn Nữ Thị Hoàng Phương Khánh Ngọc")[2]
    assert long_name == "TON<<NU<THI<HOANG<PHUONG<KHANH" and len(long_name) == 30


@pytest.mark.parametrize(
    "args",
    [
        ("07908500112", "17/08/1985", "Nam", "17/08/2045", "Lê Văn An"),  # 11 digits
        ("079085001122", "31/02/1985", "Nam", "17/08/2045", "Lê Văn An"),  # no such date
        ("079085001122", "17/08/1985", "M", "17/08/2045", "Lê Văn An"),  # gender is Nam or Nữ
        ("079085001122", "17/08/1985", "Nam", "17/08/2045", "  "),  # no name
    ],
)
def test_cccd_mrz_refuses_what_a_card_cannot_say(args: tuple[str, str, str, str, str]) -> None:
    with pytest.raises(ValueError):
        cccd_mrz(*args)


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
