"""Completeness decisions against the pilot procedures."""

from __future__ import annotations

from pipeline.core.models import DocumentInfo
from pipeline.domain.catalog import load_catalog
from pipeline.domain.validate import validate


def docs(*types: str) -> list[DocumentInfo]:
    return [DocumentInfo(type=t, pages=[i + 1], confidence=0.9) for i, t in enumerate(types)]


def test_complete_dossier_is_accepted() -> None:
    cat = load_catalog()
    v = validate(
        cat.procedure("business_household_registration"),
        docs("giay_de_nghi_dang_ky_ho_kinh_doanh", "cccd", "giay_uy_quyen"),
        cat,
    )
    assert v.status == "accepted"
    assert v.missing == [] and v.unexpected == [] and v.reasons_vi == []


def test_missing_slots_in_catalog_order_with_vietnamese_reason() -> None:
    cat = load_catalog()
    v = validate(cat.procedure("land_transfer_registration"), docs("hop_dong_chuyen_nhuong_qsdd"), cat)
    assert v.status == "needs_supplement"
    assert v.missing == [["don_dang_ky_bien_dong"], ["gcn_qsdd"], ["cccd"]]
    assert v.reasons_vi[0].startswith("Thiếu thành phần hồ sơ: Đơn đăng ký biến động đất đai")
    assert "Căn cước công dân" in v.reasons_vi[0]


def test_unexpected_documents_are_reported_but_do_not_block() -> None:
    cat = load_catalog()
    v = validate(
        cat.procedure("construction_permit"),
        docs("don_de_nghi_cap_gpxd", "gcn_qsdd", "cccd", "giay_bao_tu", "unknown", "giay_bao_tu"),
        cat,
    )
    assert v.status == "accepted"
    assert v.unexpected == ["giay_bao_tu", "unknown"]
    assert "Giấy báo tử" in v.reasons_vi[-1]


def test_wrong_paper_in_a_slot_is_both_missing_and_unexpected() -> None:
    cat = load_catalog()
    v = validate(
        cat.procedure("land_transfer_registration"),
        docs("don_de_nghi_cap_gpxd", "hop_dong_chuyen_nhuong_qsdd", "gcn_qsdd", "cccd"),
        cat,
    )
    assert v.status == "needs_supplement"
    assert v.missing == [["don_dang_ky_bien_dong"]] and v.unexpected == ["don_de_nghi_cap_gpxd"]


def test_certified_copy_needs_one_paper_of_any_listed_type() -> None:
    cat = load_catalog()
    proc = cat.procedure("certified_copy")
    v = validate(proc, docs("gcn_dang_ky_ho_kinh_doanh"), cat)
    assert v.status == "accepted" and v.unexpected == []
    v = validate(proc, docs("giay_khai_sinh", "so_ho_khau", "gcn_qsdd"), cat)
    assert v.status == "accepted" and v.unexpected == []
    v = validate(proc, docs("giay_uy_quyen"), cat)
    assert v.status == "rejected"
    assert v.missing == [proc.required[0]] and v.unexpected == ["giay_uy_quyen"]


def test_rejected_when_nothing_belongs_to_the_procedure() -> None:
    cat = load_catalog()
    proc = cat.procedure("birth_registration")
    empty = validate(proc, [], cat)
    assert empty.status == "rejected" and empty.reasons_vi == ["Hồ sơ không có giấy tờ nào."]
    assert len(empty.missing) == 3
    unreadable = validate(proc, docs("unknown", "unknown"), cat)
    assert unreadable.status == "rejected" and "Không nhận dạng được" in unreadable.reasons_vi[0]
    other = validate(proc, docs("hop_dong_chuyen_nhuong_qsdd"), cat)
    assert other.status == "rejected" and "Đăng ký khai sinh" in other.reasons_vi[0]
    # One relevant paper is enough to make it a supplement request rather than a refusal.
    assert validate(proc, docs("hop_dong_chuyen_nhuong_qsdd", "cccd"), cat).status == "needs_supplement"


def person_doc(t: str, page: int, **fields: str) -> DocumentInfo:
    conf = {k: 0.95 for k in fields}
    return DocumentInfo(type=t, pages=[page], confidence=0.9, fields=fields, field_confidence=conf)


def test_needs_supplement_notice_lists_missing_slots() -> None:
    cat = load_catalog()
    v = validate(cat.procedure("marriage_registration"), docs("to_khai_dang_ky_ket_hon"), cat)
    assert v.status == "needs_supplement"
    lines = v.notice_vi.splitlines()
    assert lines[0] == "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ"
    assert "Đăng ký kết hôn" in lines[1]
    assert lines[3].startswith("1. Bổ sung Căn cước công dân") and "còn thiếu" in lines[3]
    assert lines[4].startswith("2. Bổ sung Giấy xác nhận tình trạng hôn nhân")


def test_same_person_tolerates_ocr_noise() -> None:
    cat = load_catalog()
    v = validate(
        cat.procedure("business_household_registration"),
        [
            person_doc("giay_de_nghi_dang_ky_ho_kinh_doanh", 1, id_number="001085012345",
                       full_name="Nguyễn Văn Sơn", date_of_birth="01/02/1985"),
            # One digit of the ID, the diacritics of the name and one digit of the date misread.
            person_doc("cccd", 2, id_number="001085012346", full_name="Nguyen Van Son",
                       date_of_birth="01/02/1986"),
        ],
        cat,
    )  # fmt: skip
    assert v.status == "accepted" and v.inconsistencies == [] and v.notice_vi == ""


def test_inconsistent_person_needs_supplement_with_reasons() -> None:
    cat = load_catalog()
    v = validate(
        cat.procedure("business_household_registration"),
        [
            person_doc("giay_de_nghi_dang_ky_ho_kinh_doanh", 1, id_number="001085012345",
                       full_name="Nguyễn Văn Sơn", date_of_birth="01/02/1985"),
            person_doc("cccd", 2, id_number="001085012345", full_name="Trần Thị Mai",
                       date_of_birth="17/09/1979"),
        ],
        cat,
    )  # fmt: skip
    assert v.status == "needs_supplement" and v.missing == []
    assert len(v.inconsistencies) == 2
    assert v.inconsistencies[0].startswith("Họ tên không thống nhất") and "001085012345" in v.inconsistencies[0]
    assert v.inconsistencies[1].startswith("Ngày sinh không thống nhất")
    assert "1. Kiểm tra, nộp lại giấy tờ đúng thông tin — lý do: Họ tên" in v.notice_vi


def test_low_confidence_fields_do_not_raise_inconsistencies() -> None:
    cat = load_catalog()
    a = person_doc("giay_de_nghi_dang_ky_ho_kinh_doanh", 1, id_number="001085012345", full_name="Nguyễn Văn Sơn")
    b = person_doc("cccd", 2, id_number="001085012345", full_name="Xx Yy Zz")
    b.field_confidence["full_name"] = 0.3
    v = validate(cat.procedure("business_household_registration"), [a, b], cat)
    assert v.status == "accepted"


def test_rejected_notice_is_a_refusal() -> None:
    cat = load_catalog()
    v = validate(cat.procedure("death_registration"), docs("unknown"), cat)
    assert v.status == "rejected"
    assert v.notice_vi.startswith("PHIẾU TỪ CHỐI TIẾP NHẬN") and "Không nhận dạng được" in v.notice_vi
