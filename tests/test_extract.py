"""Field extraction: ID-number rules, names in two-column rows, land and business fields."""

from __future__ import annotations

from pipeline.domain.extract import check_id, extract_fields, split_two_names


def test_id_number_rules() -> None:
    # Province 001, century/gender digit 0 (male, 1900s), year 85.
    assert check_id("001085012345", "01/02/1985", "Nam") == 1.0
    assert check_id("001185012345", "01/02/1985", "Nữ") == 1.0  # 1 = female, 1900s
    assert check_id("001285012345", "01/02/1985") < 0.8  # 2 = 2000s: the birth year disagrees
    assert check_id("001085012345", "01/02/1986") < 0.8  # year digits disagree
    assert check_id("001085012345", None, "Nữ") < check_id("001085012345", None, "Nam")
    assert check_id("003085012345") == 0.0  # 003 is no province code
    assert check_id("00108501234") == 0.0 and check_id("00108501234X") == 0.0


def test_id_number_with_ocr_confusions_is_repaired_and_checked() -> None:
    fields, conf = extract_fields("cccd", "Số / No.: O790850O1122\nNgày sinh / Date of birth: 17/08/1985")
    assert fields["id_number"] == "079085001122" and conf["id_number"] < 1.0
    fields, _ = extract_fields("cccd", "Số / No.: 003085001122")
    assert "id_number" not in fields  # no such province


def test_two_column_names_split_at_the_second_surname() -> None:
    assert split_two_names("LÊ TUYẾT LAN TRẦN NGỌC CƯỜNG") == ["LÊ TUYẾT LAN", "TRẦN NGỌC CƯỜNG"]
    # Diệp is a surname too, but rarer than Vũ: it is the first person's given name here.
    assert split_two_names("PHẠM HẢI DIỆP VŨ HỒNG AN") == ["PHẠM HẢI DIỆP", "VŨ HỒNG AN"]
    text = "TỜ KHAI ĐĂNG KÝ KẾT HÔN\nHọ, chữ đệm, tên LÊ TUYẾT LAN TRẦN NGỌC CƯỜNG\n"
    assert extract_fields("to_khai_dang_ky_ket_hon", text)[0]["full_name"] == "Lê Tuyết Lan"


def test_surname_diacritics_restored_after_ocr() -> None:
    fields, _ = extract_fields("gcn_qsdd", "Ông: NGUYÊN ĐÌNH VƯƠNG\n")
    assert fields["full_name"] == "Nguyễn Đình Vương"


def test_land_certificate_fields() -> None:
    text = (
        "GIẤY CHỨNG NHẬN\nQUYỀN SỬ DỤNG ĐẤT\nÔng: NGUYỄN ĐÌNH VƯƠNG\nCK 108337\n"
        "a) Thửa đất số: 835 tờ bản đồ số: 55\nc) Diện tích: 297,5 m² (Bằng chữ: …)\n"
    )
    fields, conf = extract_fields("gcn_qsdd", text)
    assert (fields["parcel_number"], fields["map_sheet"]) == ("835", "55")
    assert fields["certificate_serial"] == "CK 108337" and fields["area_m2"] == "297.5"
    assert all(0 < conf[k] <= 1 for k in fields)


def test_serial_after_so_phat_hanh_is_preferred() -> None:
    text = "Mã AB 123456 khác\n2.1. Số vào sổ cấp GCN: CT 62319 2.2. Số phát hành GCN: CK 1O8337\n"
    fields, conf = extract_fields("don_dang_ky_bien_dong", text)
    assert fields["certificate_serial"] == "CK 108337" and conf["certificate_serial"] == 0.9


def test_business_fields_and_table_row_birth_date() -> None:
    text = (
        "GIẤY CHỨNG NHẬN ĐĂNG KÝ HỘ KINH DOANH\nSố: 22G20813299\n"
        "1. Tên hộ kinh doanh: HỘ KINH DOANH TIỆM MAY NHUNG\n"
    )
    fields, _ = extract_fields("gcn_dang_ky_ho_kinh_doanh", text)
    assert fields["business_name"] == "HỘ KINH DOANH TIỆM MAY NHUNG" and fields["business_code"] == "22G20813299"
    row = "NHỮNG NGƯỜI TRONG HỘ\nTrần Thu Trâm Chủ hộ 05/11/1974 Nữ 048174557423\n"
    fields, _ = extract_fields("so_ho_khau", row)
    assert fields["id_number"] == "048174557423" and fields["date_of_birth"] == "05/11/1974"
