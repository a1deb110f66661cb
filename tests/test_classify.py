"""Segmentation, classification and field extraction on small realistic page texts (with OCR-like damage)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ocr.models import RecognizedPage
from pipeline.core.text import fold
from pipeline.domain.catalog import load_catalog
from pipeline.domain.classify import classify
from pipeline.domain.extract import check_id, extract_fields
from pipeline.domain.segment import page_kind, segment

MOTTO = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc\n"
TEXTS = {
    "to_khai_dang_ky_khai_sinh": MOTTO + "TỜ KHAI ĐĂNG KÝ KHAI SINH\nKính gửi: Ủy ban nhân dân Xã Đại Hiệp\n"
    "Họ, chữ đệm, tên người yêu cầu: CAO THU HIỀN\nGiấy tờ tùy thân: Căn cước công dân số 049174041086\n"
    "Quan hệ với người được khai sinh: Mẹ\nĐề nghị cơ quan đăng ký khai sinh cho người dưới đây:\n"
    "Họ, chữ đệm, tên: HÀ ĐÌNH HIỆP\nNgày, tháng, năm sinh: 30/07/2020\nGiới tính: Nam",
    "giay_khai_sinh": "ỦY BAN NHÂN DÂN\nXÃ UY NỖ\nSố: 78\n" + MOTTO + "GIẤY KHAI SINH\n"
    "Họ, chữ đệm, tên: TRẦN THU TRÂM\nNgày, tháng, năm sinh: 05/11/1974 ghi bằng chữ: Ngày năm\n"
    "Giới tính: Nữ Dân tộc: Kinh\nSố định danh cá nhân: 048174557423\n"
    "Họ, chữ đệm, tên người mẹ: NGUYỄN BẢO NHI\n"
    "Nơi đăng ký khai sinh: Ủy ban nhân dân Xã Uy Nỗ\nNGƯỜI KÝ GIẤY KHAI SINH",
    "giay_chung_sinh": "SỞ Y TẾ NGHỆ AN\nBỆNH VIỆN SẢN - NHI NGHỆ AN\nSố: 2770/GCS\n"
    + MOTTO
    + "GIẤY CHỨNG SINH\n"
    "Họ và tên mẹ/Người nuôi dưỡng: TRẦN HOÀI KIM HUYỀN\nSố CCCD: 037163769841\n"
    "Đã sinh con vào lúc: 18 giờ 34 phút, ngày 17 tháng 11 năm 2021\nSố con trong lần sinh này: 01\n"
    "Giới tính của con: Nữ Cân nặng: 2807 gram\nDự định đặt tên con: Nguyễn Hải Lan",
    "to_khai_dang_ky_ket_hon": MOTTO + "TỜ KHAI ĐĂNG KÝ KẾT HÔN\nKính gửi: Ủy ban nhân dân Xã An Thạnh\n"
    "Thông tin Bên nữ Bên nam\nHọ, chữ đệm, tên LÊ TUYẾT LAN TRẦN NGỌC CƯỜNG\n"
    "Kết hôn lần thứ mấy Lần thứ nhất",
    "to_khai_dang_ky_khai_tu": MOTTO + "TỜ KHAI ĐĂNG KÝ KHAI TỬ\nKính gửi: Ủy ban nhân dân Xã Kiến An\n"
    "Họ, chữ đệm, tên người yêu cầu: PHẠM PHƯƠNG THƠM\nGiấy tờ tùy thân: Căn cước công dân số 022189549972\n"
    "Quan hệ với người đã chết: Con\nHọ, chữ đệm, tên: TRẦN THÀNH LÂM\nNgày, tháng, năm sinh: 11/04/1946\n"
    "Số định danh cá nhân: 089046562874\nNguyên nhân chết: Bệnh lý tim mạch",
    "gcn_qsdd": MOTTO
    + "GIẤY CHỨNG NHẬN\nQUYỀN SỬ DỤNG ĐẤT\nQUYỀN SỞ HỮU NHÀ Ở VÀ TÀI SẢN KHÁC GẮN LIỀN VỚI ĐẤT\n"
    "I. Người sử dụng đất, chủ sở hữu nhà ở và tài sản khác gắn liền với đất\nÔng: NGUYỄN ĐÌNH VƯƠNG\n"
    "Sinh năm: 1986 CCCD số: 037086257289",
    "don_dang_ky_bien_dong": MOTTO + "ĐƠN ĐĂNG KÝ BIẾN ĐỘNG ĐẤT ĐAI,\nTÀI SẢN GẮN LIỀN VỚI ĐẤT\n"
    "Kính gửi: Chi nhánh Văn phòng đăng ký đất đai\nI. PHẦN KÊ KHAI CỦA NGƯỜI ĐĂNG KÝ\n"
    "1.1. Tên (viết chữ in hoa): PHẠM HỮU CÔNG\n1.2. Giấy tờ nhân thân: Căn cước công dân số 036075480569\n"
    "4. Lý do biến động: Nhận chuyển nhượng quyền sử dụng đất theo Hợp đồng chuyển nhượng số 9804",
    "hop_dong_chuyen_nhuong_qsdd": MOTTO + "HỢP ĐỒNG CHUYỂN NHƯỢNG QUYỀN SỬ DỤNG ĐẤT\n"
    "BÊN CHUYỂN NHƯỢNG (BÊN A):\nÔng/Bà: NGUYỄN ĐÌNH VƯƠNG\nSinh ngày: 15/02/1986 CCCD số: 037086257289\n"
    "BÊN NHẬN CHUYỂN NHƯỢNG (BÊN B):\nĐIỀU 1. QUYỀN SỬ DỤNG ĐẤT CHUYỂN NHƯỢNG\n"
    "Quyền sử dụng đất theo Giấy chứng "
    "nhận quyền sử dụng đất số phát hành CK 108337",
    "gcn_dang_ky_ho_kinh_doanh": "ỦY BAN NHÂN DÂN QUẬN CẦU GIẤY\nPHÒNG TÀI CHÍNH - KẾ HOẠCH\n"
    + MOTTO
    + "GIẤY CHỨNG NHẬN ĐĂNG KÝ HỘ KINH DOANH\nSố: 01H8001234\nĐăng ký lần đầu: ngày 09 tháng 09 năm 2016\n"
    "1. Tên hộ kinh doanh: HỘ KINH DOANH TIỆM MAY NHUNG\nHọ và tên: TRẦN BẢO NHUNG\n"
    "Số giấy tờ pháp lý của cá nhân: 022174792638",
    "giay_de_nghi_dang_ky_ho_kinh_doanh": MOTTO + "GIẤY ĐỀ NGHỊ ĐĂNG KÝ HỘ KINH DOANH\n"
    "Kính gửi: Phòng Tài chính - Kế hoạch Huyện An Dương\n"
    "Tôi là (ghi họ tên bằng chữ in hoa): NGUYỄN TRỌNG SƠN\n"
    "Giới tính: Nam Sinh ngày: 15/04/1990\nSố định danh cá nhân: 031090784461\n"
    "Đăng ký hộ kinh doanh do tôi là chủ hộ với các nội dung sau:\n"
    "1. Tên hộ kinh doanh: HỘ KINH DOANH QUÁN CƠM SƠN",
    "cccd": MOTTO
    + "CĂN CƯỚC CÔNG DÂN\nCitizen Identity Card\nSố / No.: 083080523712\nHọ và tên / Full name:\n"
    "ĐẶNG CÔNG MẠNH\nNgày sinh / Date of birth: 19/08/1980\n"
    "Giới tính / Sex: Nam Quốc tịch / Nationality: Việt Nam",
    "giay_uy_quyen": MOTTO
    + "GIẤY ỦY QUYỀN\n(Dành cho cá nhân)\nI. BÊN ỦY QUYỀN:\nHọ và tên: NGUYỄN TRỌNG SƠN\n"
    "II. BÊN NHẬN ỦY QUYỀN:\nIII. NỘI DUNG ỦY QUYỀN:",
    "giay_xac_nhan_tinh_trang_hon_nhan": "ỦY BAN NHÂN DÂN\nXÃ AN THẠNH\n"
    + MOTTO
    + "GIẤY XÁC NHẬN TÌNH TRẠNG HÔN NHÂN\nHọ, chữ đệm, tên: TRẦN NGỌC CƯỜNG\n"
    "Tình trạng hôn nhân: Hiện tại chưa "
    "đăng ký kết hôn với ai\nGiấy này được cấp để: làm thủ tục đăng ký kết hôn",
    "giay_bao_tu": "SỞ Y TẾ HÀ NỘI\n" + MOTTO + "GIẤY BÁO TỬ\nHọ, chữ đệm, tên: NGUYỄN DIỆU HẠNH\n"
    "Đã chết vào lúc: 14 giờ 53 phút\nNơi chết: Trung tâm Y tế\nNguyên nhân chết: Tai biến",
    "so_ho_khau": "BỘ CÔNG AN\nCÔNG AN HUYỆN ĐÔNG ANH\n"
    + MOTTO
    + "SỔ HỘ KHẨU\nHọ và tên chủ hộ: TRẦN THU TRÂM\n"
    "Tỉnh, thành phố trực thuộc trung ương: Thành phố Hà Nội\nTRƯỞNG CÔNG AN",
}


def ocr_damage(text: str, seed: int, rate: float = 0.04) -> str:
    """Drop diacritics on some words and swap some letters, like a poor scan."""
    rng = random.Random(seed)
    words = []
    for w in text.split(" "):
        if rng.random() < 0.3:
            w = "".join(c if c == "\n" else fold(c) if c.islower() else fold(c).upper() for c in w)
        chars = [rng.choice("aeiocnm") if c.isalpha() and rng.random() < rate else c for c in w]
        words.append("".join(chars))
    return " ".join(words)


@pytest.mark.parametrize("expected", sorted(TEXTS))
def test_classifies_clean_text(expected: str) -> None:
    got, conf = classify(TEXTS[expected], load_catalog())
    assert got == expected
    assert 0.5 <= conf <= 1.0


@pytest.mark.parametrize("expected", sorted(TEXTS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classifies_damaged_text(expected: str, seed: int) -> None:
    got, _ = classify(ocr_damage(TEXTS[expected], seed), load_catalog())
    assert got == expected


def test_unknown_for_unrelated_text() -> None:
    cat = load_catalog()
    assert classify("", cat) == ("unknown", 0.0)
    got, conf = classify("Biên bản họp tổ dân phố về vệ sinh môi trường\nNội dung: quét dọn đường làng", cat)
    assert got == "unknown" and conf < 0.45
    # The motto alone does not identify a type.
    assert classify(MOTTO + "BIÊN BẢN HỌP GIA ĐÌNH\nHôm nay các thành viên", cat)[0] == "unknown"


def page(index: int, text: str, kind: str = "content") -> RecognizedPage:
    return RecognizedPage.model_validate(
        {"index": index, "kind": kind, "dpi": 200, "width_px": 10, "height_px": 10, "text": text}
    )


def test_segment_separators_blanks_and_continuations() -> None:
    cat = load_catalog()
    pages = [
        page(1, "TRANG PHÂN TÁCH TÀI LIỆU\nMã hồ sơ: X\nTài liệu số: 01", kind="separator"),
        page(2, TEXTS["gcn_qsdd"]),
        page(3, ""),  # blank back between the two pages of the certificate
        page(4, "II. Thửa đất, nhà ở và tài sản khác gắn liền với đất\n1. Thửa đất:\na) Thửa đất số: 835"),
        page(5, TEXTS["cccd"]),
        page(6, TEXTS["cccd"].replace("083080523712", "001187141334")),  # a second card: a new document
        page(7, "TRANG PHÂN TÁCH TÀI LIỆU\nMã hồ sơ: X\nTài liệu số: 03"),  # separator found from its text
        page(
            8,
            "ĐIỀU 4. CĂN CỨ VÀ CAM KẾT\n- Hợp đồng chuyển nhượng quyền sử dụng đất được giao kết giữa bên A",
        ),
        page(9, "LỜI CHỨNG CỦA CÔNG CHỨNG VIÊN\nHợp đồng chuyển nhượng quyền sử dụng đất được giao kết"),
    ]
    assert [page_kind(p, cat) for p in pages] == [
        "separator",
        "document",
        "blank",
        "document",
        "document",
        "document",
        "separator",
        "document",
        "document",
    ]
    groups = segment(pages, cat)
    assert [g.pages for g in groups] == [[2, 4], [5], [6], [8, 9]]
    assert groups[0].text.startswith("CỘNG HÒA") and "Thửa đất số" in groups[0].text


def test_extract_cccd_fields() -> None:
    fields, conf = extract_fields("cccd", TEXTS["cccd"])
    assert fields == {
        "full_name": "Đặng Công Mạnh",
        "date_of_birth": "19/08/1980",
        "gender": "Nam",
        "id_number": "083080523712",
    }
    assert conf["id_number"] == 1.0


def test_extract_repairs_ocr_confusions_in_the_id() -> None:
    text = TEXTS["giay_de_nghi_dang_ky_ho_kinh_doanh"].replace("031090784461", "O3lO90784461")
    fields, conf = extract_fields("giay_de_nghi_dang_ky_ho_kinh_doanh", text)
    assert fields["id_number"] == "031090784461"
    assert fields["full_name"] == "Nguyễn Trọng Sơn"
    assert fields["date_of_birth"] == "15/04/1990" and fields["gender"] == "Nam"
    assert 0.5 < conf["id_number"] < 1.0  # repaired: less sure than a clean read


def test_extract_prefers_the_subjects_personal_number_on_a_to_khai() -> None:
    fields, _ = extract_fields("to_khai_dang_ky_khai_tu", TEXTS["to_khai_dang_ky_khai_tu"])
    assert fields["id_number"] == "089046562874"
    assert fields["full_name"] == "Trần Thành Lâm"
    fields, _ = extract_fields("giay_chung_sinh", TEXTS["giay_chung_sinh"])
    assert fields["full_name"] == "Nguyễn Hải Lan" and fields["date_of_birth"] == "17/11/2021"


def test_id_structure_checks() -> None:
    assert check_id("083080523712", "19/08/1980", "Nam") == 1.0
    assert check_id("083080523712", "19/08/1981") < 0.8  # birth year digits disagree
    assert check_id("999080523712") == 0.0  # no such province
    assert check_id("08308052371") == 0.0
    text = "Số định danh cá nhân: 999080523712"
    assert "id_number" not in extract_fields("cccd", text)[0]


CORPUS_GT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "public" / "gt"


@pytest.mark.skipif(not CORPUS_GT.is_dir(), reason="needs ../shared/corpus (not on user machines)")
def test_corpus_ground_truth_text_is_understood() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from collections import Counter

    from bench.understanding_bench import gt_pages, run_dossier

    counts: Counter[str] = Counter()
    for f in sorted(CORPUS_GT.glob("*.json")):
        gt = json.loads(f.read_text(encoding="utf-8"))
        run_dossier(gt, gt_pages(gt, noise=0.0, seed=0), counts, verbose=False)
    assert counts["group_ok"] / counts["docs"] >= 0.95
    assert counts["type_ok"] / counts["docs"] >= 0.95
    assert counts["id_number_ok"] / counts["id_number_n"] >= 0.9
    assert counts["status_ok"] == counts["missing_ok"] == counts["dossiers"]
