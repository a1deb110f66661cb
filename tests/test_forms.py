"""The one-stop forms (Mẫu 01–06): rendered, signed, verified, read back, their QR codes decoded."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pikepdf
import pypdfium2 as pdfium
import pytest
import yaml
from pydantic import ValidationError
from support.pdfs import decode_qr, flat_text, stream_bytes

from pipeline.core.errors import ConfigurationError, InvalidState
from pipeline.core.models import DocumentInfo, PageInfo, Receipt
from pipeline.core.settings import Settings
from pipeline.domain.catalog import load_catalog
from pipeline.domain.forms import (
    FORM_ADAPTER,
    ApologyForm,
    Applicant,
    ControlSlipForm,
    FormBase,
    LookupLink,
    ProcessingStep,
    ReceiptForm,
    ReceivedDocument,
    RefusalForm,
    StopNoticeForm,
    SupplementForm,
    desk_form,
    document_slug,
    form_object_key,
    load_forms,
    load_forms_file,
    lookup_link,
    receipt_form,
    refusal_form,
    render_form,
    sign_form,
    supplement_form,
)
from pipeline.usecases.forms import issue_form
from pipeline.usecases.services import Services
from signing.identities import SignerIdentities
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys
from signing.verify import verify_pdf

PASS = b"forms-test"
AGENCY = "Ủy ban nhân dân phường Dịch Vọng"
PUBLIC = "https://dichvucong.example.vn/hoso"
SECRET = "K7QX-2M9D-PL4A-88ZT"
CODE = "000.00.00.H00-250305-0042"
ICT = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2025, 3, 5, 9, 30, tzinfo=ICT)
CATALOG = load_catalog()
APPLICANT = Applicant(
    name="Trần Thị Bích Ngọc",
    id_number="001189012345",
    address="Số 12 ngõ 34 phố Trần Thái Tông, Cầu Giấy, Hà Nội",
    phone="0912 345 678",
    email="ngoc.tran@example.vn",
)
A5_POINTS = (419.53, 595.28)


def common(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dossier_code": CODE,
        "procedure_label": "Đăng ký thành lập hộ kinh doanh",
        "procedure_code": "1.001612",
        "applicant": APPLICANT,
        "agency_name": AGENCY,
        "place": "Hà Nội",
        "issued_at": T0,
        "signer_name": "Nguyễn Văn Minh",
        "lookup_secret": SECRET,
    }
    data.update(overrides)
    return data


def steps() -> list[ProcessingStep]:
    return [
        ProcessingStep(
            action="Giao",
            unit="Bộ phận tiếp nhận và trả kết quả",
            actor="Nguyễn Văn Minh",
            role="Cán bộ tiếp nhận",
            at=T0 + dt.timedelta(minutes=20),
            outcome="on_time",
        ),
        ProcessingStep(
            action="Nhận",
            unit="Phòng Kinh tế",
            actor="Lê Thị Thu",
            role="Chuyên viên thụ lý",
            at=T0 + dt.timedelta(hours=2),
            outcome="early",
            note="Đã thẩm định",
        ),
        ProcessingStep(
            action="Trả kết quả",
            unit="Bộ phận tiếp nhận và trả kết quả",
            actor="Nguyễn Văn Minh",
            role="Cán bộ tiếp nhận",
            at=T0 + dt.timedelta(days=5),
            outcome="late",
        ),
    ]


def make_form(kind: str) -> FormBase:
    proc = CATALOG.procedure("business_household_registration")
    due = T0 + dt.timedelta(days=3, hours=7, minutes=30)
    forms: dict[str, FormBase] = {
        "receipt": ReceiptForm(
            **common(),
            documents=[
                ReceivedDocument(label="Giấy đề nghị đăng ký hộ kinh doanh", pages=2),
                ReceivedDocument(label="Căn cước công dân (bản sao mặt trước/sau)", pages=1),
                ReceivedDocument(label="Giấy ủy quyền", reused=True),
            ],
            processing_days=3,
            received_at=T0,
            due_at=due,
            fee_line=proc.fee_line_vi(),
        ),
        "supplement": SupplementForm(
            **common(),
            missing=[["Giấy đề nghị đăng ký hộ kinh doanh"]],
            inconsistencies=[
                "Ngày sinh không thống nhất giữa Căn cước công dân và Giấy ủy quyền: 01/02/1989 và 01/02/1998."
            ],
            reasons=["Thiếu thành phần hồ sơ: Giấy đề nghị đăng ký hộ kinh doanh."],
        ),
        "refusal": RefusalForm(
            **common(), reasons=["Hồ sơ không có giấy tờ nào thuộc thủ tục “Đăng ký thành lập hộ kinh doanh”."]
        ),
        "apology": ApologyForm(
            **common(signer_name="Phạm Thị Hoa"),
            received_at=T0,
            due_at=due,
            new_due_at=due + dt.timedelta(days=4),
            reason="Cần xác minh thêm địa điểm kinh doanh với cơ quan thuế.",
            signer_title="KT. CHỦ TỊCH\nPHÓ CHỦ TỊCH",
        ),
        "stop": StopNoticeForm(
            **common(signer_name="Phạm Thị Hoa"),
            received_at=T0,
            reason="Người nộp hồ sơ có văn bản đề nghị rút hồ sơ ngày 06/03/2025.",
        ),
        "control": ControlSlipForm(
            **common(lookup_secret=None),
            received_at=T0,
            due_at=due,
            cooperating_units=["Chi cục Thuế khu vực"],
            steps=steps(),
        ),
    }
    return forms[kind]


KINDS = ["receipt", "supplement", "refusal", "apology", "stop", "control"]
# What each form must say (besides the header, the dossier code and the footer).
EXPECTED_TEXT = {
    "receipt": [
        "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
        "(Liên 2: Giao khách hàng)",
        "Tiếp nhận hồ sơ của: Trần Thị Bích Ngọc",
        "1. Thành phần hồ sơ nộp gồm:",
        "Giấy đề nghị đăng ký hộ kinh doanh",
        "Sử dụng lại từ kho dữ liệu điện tử",
        "2. Số lượng hồ sơ: 01 (bộ)",
        "3. Thời gian giải quyết hồ sơ theo quy định là: 03 ngày làm việc",
        "4. Thời gian nhận hồ sơ: 09 giờ 30 phút, ngày 05 tháng 03 năm 2025",
        "5. Thời gian trả kết quả giải quyết hồ sơ: 17 giờ 00 phút, ngày 08 tháng 03 năm 2025",
        "7. Lệ phí: Theo mức do HĐND cấp tỉnh quy định; 100.000 đồng/lần",
        "(mức phí chưa được xác minh — hỏi tại quầy)",
        "NGƯỜI NỘP HỒ SƠ",
        "NGƯỜI TIẾP NHẬN HỒ SƠ",
        "Ghi chú:",
    ],
    "supplement": [
        "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ",
        "Số: ",
        "/HDHS",
        "Yêu cầu Ông/Bà hoàn thiện hồ sơ gồm những nội dung như sau:",
        "NGƯỜI TIẾP NHẬN HỒ SƠ",
    ],
    "refusal": [
        "PHIẾU TỪ CHỐI TIẾP NHẬN, GIẢI QUYẾT HỒ SƠ",
        "thông báo không tiếp nhận, giải quyết hồ sơ này",
        "“Đăng ký thành lập hộ kinh doanh”",
        "Xin thông báo cho Ông/Bà được biết và thực hiện./.",
    ],
    "apology": [
        "VĂN BẢN XIN LỖI VÀ ĐỀ NGHỊ GIA HẠN THỜI GIAN GIẢI QUYẾT",
        "Kính gửi: Ông/Bà Trần Thị Bích Ngọc",
        "Lý do: Cần xác minh thêm địa điểm kinh doanh với cơ quan thuế.",
        "Thời gian hẹn trả kết quả lại: 17 giờ 00 phút, ngày 12 tháng 03 năm 2025",
        "KT. CHỦ TỊCH PHÓ CHỦ TỊCH",
        "Nơi nhận:",
        "Phạm Thị Hoa",
    ],
    "stop": [
        "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ",
        "thông báo dừng giải quyết hồ sơ nêu trên",
        "Lý do: Người nộp hồ sơ có văn bản đề nghị rút hồ sơ ngày 06/03/2025.",
        "THỦ TRƯỞNG CƠ QUAN",
    ],
    "control": [
        "PHIẾU KIỂM SOÁT QUÁ TRÌNH GIẢI QUYẾT HỒ SƠ",
        "Kèm theo hồ sơ của: Trần Thị Bích Ngọc",
        "TÊN CƠ QUAN",
        "THỜI GIAN GIAO, NHẬN HỒ SƠ",
        "Giao: Bộ phận tiếp nhận và trả kết quả",
        "Lê Thị Thu (Chuyên viên thụ lý)",
        "Trước hạn",
        "Đúng hạn",
        "Quá hạn",
        "Đã thẩm định",
        "Cơ quan phối hợp giải quyết hồ sơ: Chi cục Thuế khu vực",
    ],
}
SIGNER_ROLE = {
    "receipt": "officer",
    "supplement": "officer",
    "refusal": "officer",
    "apology": "approver",
    "stop": "approver",
    "control": "officer",
}


def copy_of(kind: str) -> str:
    return "stored" if kind == "control" else "citizen"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"), PASS, agency_name=AGENCY)


@pytest.fixture(scope="module")
def keys(pki: DevPki) -> SigningKeys:
    return SigningKeys(pki, PASS)


@pytest.fixture(scope="module")
def signed(keys: SigningKeys) -> dict[str, bytes]:
    return {kind: sign_form(make_form(kind), keys, public_url=PUBLIC, copy=copy_of(kind)) for kind in KINDS}  # type: ignore[arg-type]


def ids(pki: DevPki) -> SignerIdentities:
    return SignerIdentities.from_config(pki.identity_files())


@pytest.mark.parametrize("kind", KINDS)
def test_each_form_is_signed_by_its_role_and_verifies(kind: str, signed: dict[str, bytes], pki: DevPki) -> None:
    report = verify_pdf(signed[kind], [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    (sig,) = report.signatures
    assert sig.field == SIGNER_ROLE[kind] and sig.role == SIGNER_ROLE[kind]
    assert sig.certification == "NO_CHANGES" and sig.coverage == "ENTIRE_FILE"
    assert sig.signer == ("Lãnh đạo phê duyệt" if SIGNER_ROLE[kind] == "approver" else "Cán bộ tiếp nhận")


@pytest.mark.parametrize("kind", KINDS)
def test_each_form_reads_back_with_its_labels(kind: str, signed: dict[str, bytes]) -> None:
    text = flat_text(signed[kind])
    for expected in [
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Hà Nội, ngày 05 tháng 03 năm 2025",
        f"Mã hồ sơ: {CODE}",
        AGENCY.upper(),
        load_forms().forms[kind].title,  # type: ignore[index]
        f"Mẫu số {load_forms().forms[kind].number} — biểu mẫu dựng lại từ các mẫu công khai",  # type: ignore[index]
        "không phải văn bản mẫu chính thức",
        *EXPECTED_TEXT[kind],
    ]:
        assert expected in text, (kind, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_qr_code_is_a_lookup_link_with_the_required_fields(kind: str, signed: dict[str, bytes]) -> None:
    form = make_form(kind)
    (url,) = decode_qr(signed[kind])
    assert url.startswith(f"{PUBLIC}/tra-cuu/{CODE}?")
    link = LookupLink.parse(url, PUBLIC)
    spec = load_forms().forms[form.kind]
    assert link.dossier_code == CODE
    assert link.procedure_code == "1.001612"
    assert link.applicant_id == "001189012345"
    assert link.document == document_slug(spec.document_name)
    assert link.document.startswith(
        {
            "receipt": "giay-tiep-nhan",
            "supplement": "phieu-yeu-cau-bo-sung",
            "refusal": "phieu-tu-choi",
            "apology": "van-ban-xin-loi",
            "stop": "thong-bao-dung",
            "control": "phieu-kiem-soat",
        }[kind]
    )
    assert link.issuing_system == "hoso"
    assert link.issued_at == T0
    assert link.appointment_at == form.appointment()
    if kind in ("receipt", "apology"):  # an appointment carries its date
        assert link.appointment_at is not None and link.appointment_at > T0
    has_secret = copy_of(kind) == "citizen"
    assert (link.secret is not None and link.secret.get_secret_value() == SECRET) == has_secret


def test_qr_symbols_are_reportlabs_own_mask_for_mask() -> None:
    """pipeline.domain.qr chooses the mask in NumPy: the symbol must be the one reportlab's encoder makes, for
    URLs, digits and upper-case text over versions 1 to 20 (with and without version information)."""
    import random
    import string

    from reportlab.graphics.barcode import qrencoder

    from pipeline.domain.qr import qr_modules

    rng = random.Random(7)
    url_chars = string.ascii_letters + string.digits + "-_.~:/?&=%"
    versions, masks = set(), set()
    for n in [5, 17, 40, 90, 150, 220, 320, 520] * 6:
        kind = rng.choice(("url", "url", "digits", "alnum"))
        payload = (
            "".join(rng.choice(string.digits) for _ in range(n)) if kind == "digits"
            else "".join(rng.choice(string.ascii_uppercase + string.digits + " $%*+-./:") for _ in range(n))
            if kind == "alnum" else f"{PUBLIC}/tra-cuu/" + "".join(rng.choice(url_chars) for _ in range(n))
        )
        reference = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
        reference.addData(payload)
        reference.make()
        expected = [[bool(m) for m in row] for row in reference.modules]
        assert qr_modules(payload) == expected, (kind, n)
        versions.add(reference.version)
        masks.add(reference.getBestMaskPattern())  # (builds test symbols over reference.modules)
    assert min(versions) <= 2 and max(versions) >= 7 and len(masks) >= 4, (versions, masks)


def test_qr_modules_are_big_enough_to_scan_from_print() -> None:
    """ISO/IEC 18004 at level M; 0.33 mm per module is the usual floor for phone cameras on paper."""
    import secrets

    import qrcode

    for kind in KINDS:
        form = make_form(kind).model_copy(update={"lookup_secret": secrets.token_urlsafe(16)})
        url = lookup_link(form, copy_of(kind)).url(PUBLIC)  # type: ignore[arg-type]
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
        qr.add_data(url)
        qr.make(fit=True)
        size = load_forms().layout[load_forms().forms[kind].page].qr_size  # type: ignore[index]
        module_mm = size / (17 + 4 * qr.version + 8) * 25.4 / 72
        assert module_mm >= 0.33, (kind, qr.version, module_mm, len(url))


def test_the_stored_copy_never_carries_the_secret(keys: SigningKeys, signed: dict[str, bytes]) -> None:
    form = make_form("receipt")
    stored = sign_form(form, keys, public_url=PUBLIC, copy="stored")
    (url,) = decode_qr(stored)
    assert "?s=" not in url and "&s=" not in url and LookupLink.parse(url, PUBLIC).secret is None
    text = flat_text(stored)
    assert "(Liên 1: Lưu)" in text and "Mã tra cứu" not in text
    assert SECRET.encode() not in stream_bytes(stored)
    # ...while the citizen's copy shows it under the QR code and in it (and the byte search finds it).
    assert f"Mã tra cứu: {SECRET}" in flat_text(signed["receipt"])
    assert f"s={SECRET}" in decode_qr(signed["receipt"])[0]
    assert SECRET.encode() in stream_bytes(signed["receipt"])
    for kind in ("supplement", "refusal", "apology", "stop"):
        pdf = render_form(make_form(kind), public_url=PUBLIC, copy="stored").pdf
        assert SECRET.encode() not in stream_bytes(pdf), kind
        assert LookupLink.parse(decode_qr(pdf)[0], PUBLIC).secret is None, kind


def test_citizen_copy_needs_a_secret_and_the_control_slip_has_none() -> None:
    with pytest.raises(ValueError, match="lookup secret"):
        render_form(make_form("receipt").model_copy(update={"lookup_secret": None}), public_url=PUBLIC, copy="citizen")
    with pytest.raises(ValueError, match="no citizen copy"):
        render_form(make_form("control"), public_url=PUBLIC, copy="citizen")


def test_supplement_lists_exactly_what_the_desk_found(keys: SigningKeys, pki: DevPki) -> None:
    receipt = desk_receipt(
        "needs_supplement",
        missing=[["giay_de_nghi_dang_ky_ho_kinh_doanh"], ["cccd", "so_ho_khau"]],
        inconsistencies=["Họ tên không thống nhất giữa Giấy ủy quyền và Căn cước công dân: “A” và “B”."],
        reasons=[
            "Thiếu thành phần hồ sơ: Giấy đề nghị đăng ký hộ kinh doanh; Căn cước công dân hoặc Sổ hộ khẩu.",
            "Họ tên không thống nhất giữa Giấy ủy quyền và Căn cước công dân: “A” và “B”.",
            "Thông tin người nộp (ngày sinh) không khớp với Cơ sở dữ liệu quốc gia về dân cư.",
        ],
    )
    form = supplement_form(receipt, CATALOG, agency_name=AGENCY, lookup_secret=SECRET, contact_phone="024 3791 1234")
    assert form.missing == [
        ["Giấy đề nghị đăng ký hộ kinh doanh"],
        ["Căn cước công dân (bản sao mặt trước/sau)", "Sổ hộ khẩu"],
    ]
    pdf = sign_form(form, keys, public_url=PUBLIC, copy="citizen")
    assert verify_pdf(pdf, [pki.root_cert], identities=ids(pki)).ok
    text = flat_text(pdf)
    items = re.search(r"như sau: (.*) Trong quá trình hoàn thiện", text)
    assert items is not None
    assert items.group(1) == (
        "1. Bổ sung thêm các giấy tờ sau: - Giấy đề nghị đăng ký hộ kinh doanh "
        "- Căn cước công dân (bản sao mặt trước/sau) hoặc Sổ hộ khẩu "
        "2. Kiểm tra, kê khai lại cho thống nhất các nội dung sau: "
        "- Họ tên không thống nhất giữa Giấy ủy quyền và Căn cước công dân: “A” và “B”. "
        "Lý do: - Thiếu thành phần hồ sơ: Giấy đề nghị đăng ký hộ kinh doanh; Căn cước công dân hoặc Sổ hộ khẩu. "
        "- Thông tin người nộp (ngày sinh) không khớp với Cơ sở dữ liệu quốc gia về dân cư."
    )
    assert "số điện thoại 024 3791 1234" in text
    assert "Giấy ủy quyền hoặc" not in text  # nothing beyond what the desk found


def test_receipt_from_the_desk_receipt_carries_documents_due_date_and_fee(keys: SigningKeys, pki: DevPki) -> None:
    receipt = desk_receipt("accepted", procedure="certified_copy")
    form = receipt_form(receipt, CATALOG, agency_name=AGENCY, lookup_secret=SECRET, place="Hà Nội")
    assert form.applicant.name == "Trần Thị Bích Ngọc" and form.applicant.id_number == "001189012345"
    assert [d.label for d in form.documents] == ["Căn cước công dân (bản sao mặt trước/sau)", "Giấy khai sinh"]
    assert [d.reused for d in form.documents] == [False, True]
    pdf = sign_form(form, keys, public_url=PUBLIC, copy="citizen")
    assert verify_pdf(pdf, [pki.root_cert], identities=ids(pki)).ok
    text = flat_text(pdf)
    assert "Chứng thực bản sao từ bản chính (mã thủ tục: 2.000815)" in text
    assert "3. Thời gian giải quyết hồ sơ theo quy định là: trong ngày làm việc" in text
    assert (
        "7. Phí: 2.000 đồng/trang (trang thứ nhất và thứ hai); 1.000 đồng/trang (từ trang thứ ba trở lên); "
        "tối đa 200.000 đồng/bản."
    ) in text
    assert "chưa được xác minh" not in text  # a verified fee is not flagged
    link = LookupLink.parse(decode_qr(pdf)[0], PUBLIC)
    assert link.appointment_at == receipt.due_at and link.procedure_code == "2.000815"


@pytest.mark.parametrize(
    "procedure, note",
    [
        ("construction_permit", "mức phí chưa được xác minh — hỏi tại quầy"),
        ("business_household_change", "Phí, lệ phí: Chưa có thông tin (mức phí chưa được xác minh — hỏi tại quầy)"),
        ("birth_registration", "Lệ phí: Không thu phí khi đăng ký khai sinh đúng hạn"),
    ],
)
def test_receipt_says_when_a_fee_is_unverified_or_conditional(procedure: str, note: str) -> None:
    form = receipt_form(desk_receipt("accepted", procedure=procedure), CATALOG, agency_name=AGENCY)
    text = flat_text(render_form(form, public_url=PUBLIC).pdf)
    assert note in text


def test_desk_form_follows_the_status() -> None:
    kw = {"agency_name": AGENCY, "lookup_secret": SECRET, "contact_phone": "024"}
    assert isinstance(desk_form(desk_receipt("accepted"), CATALOG, **kw), ReceiptForm)
    assert isinstance(desk_form(desk_receipt("needs_supplement", missing=[["cccd"]]), CATALOG, **kw), SupplementForm)
    refusal = desk_form(desk_receipt("rejected", reasons=["Hồ sơ không có giấy tờ nào."]), CATALOG, **kw)
    assert isinstance(refusal, RefusalForm) and refusal.reasons == ["Hồ sơ không có giấy tờ nào."]
    with pytest.raises(InvalidState) as info:
        supplement_form(desk_receipt("accepted"), CATALOG, agency_name=AGENCY)
    assert "không thuộc trường hợp yêu cầu bổ sung" in info.value.message_vi
    with pytest.raises(InvalidState):
        refusal_form(desk_receipt("accepted"), CATALOG, agency_name=AGENCY)
    with pytest.raises(InvalidState):
        receipt_form(desk_receipt("rejected", reasons=["x"]), CATALOG, agency_name=AGENCY)


@pytest.mark.parametrize("kind", [KINDS[0], *(pytest.param(k, marks=pytest.mark.slow) for k in KINDS[1:])])
def test_stamp_box_is_on_the_page_and_covers_no_text(kind: str) -> None:
    rendered = render_form(make_form(kind), public_url=PUBLIC, copy=copy_of(kind))  # type: ignore[arg-type]
    doc = pdfium.PdfDocument(rendered.pdf)
    try:
        for page in doc:
            assert page.get_size() == pytest.approx(A5_POINTS, abs=0.1)  # forms.md: 01–05 (and the slip) on A5
        if rendered.signature is None:
            assert kind == "control"  # no signature block on the slip: signed invisibly
            return
        page = doc[rendered.signature.page]
        x1, y1, x2, y2 = rendered.signature.box
        w, h = page.get_size()
        assert 0 < x1 < x2 < w and 0 < y1 < y2 < h and x2 - x1 > 150 and y2 - y1 >= 50
        textpage = page.get_textpage()
        for i in range(textpage.count_chars()):
            left, bottom, right, top = textpage.get_charbox(i)
            if right - left > 0.1:
                assert right <= x1 or left >= x2 or top <= y1 or bottom >= y2, textpage.get_text_range(i, 1)
    finally:
        doc.close()


@pytest.mark.slow
def test_long_receipt_runs_on_and_signs_on_the_last_page(keys: SigningKeys, pki: DevPki) -> None:
    docs = [ReceivedDocument(label=f"Giấy tờ kèm theo số {i}", pages=1) for i in range(1, 31)]
    form = make_form("receipt").model_copy(update={"documents": docs})
    rendered = render_form(form, public_url=PUBLIC, copy="citizen")
    assert rendered.pages >= 2 and rendered.signature is not None and rendered.signature.page == rendered.pages - 1
    pdf = sign_form(form, keys, public_url=PUBLIC, copy="citizen")
    assert verify_pdf(pdf, [pki.root_cert], identities=ids(pki)).ok
    assert decode_qr(pdf, 0) and not decode_qr(pdf, rendered.pages - 1)  # the QR code is on the first page
    assert "Giấy tờ kèm theo số 30" in flat_text(pdf)


def test_unsigned_forms_are_pdfa_2b_with_fonts_embedded() -> None:
    for kind in KINDS:
        pdf = render_form(make_form(kind), public_url=PUBLIC, copy=copy_of(kind)).pdf  # type: ignore[arg-type]
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            meta = doc.open_metadata()
            assert (meta["pdfaid:part"], meta["pdfaid:conformance"]) == ("2", "B")
            assert meta["pdf:Keywords"] == f"hoso-form-{load_forms().forms[kind].number}"  # type: ignore[index]
            assert doc.Root.OutputIntents[0].S == "/GTS_PDFA1"
            for page in doc.pages:
                for font in page.Resources.Font.values():
                    descriptor = font.get("/FontDescriptor") or font.DescendantFonts[0].FontDescriptor
                    assert "/FontFile2" in descriptor, (kind, font.BaseFont)
                    assert str(font.BaseFont).split("+")[-1].startswith("NotoSerif")


def test_forms_round_trip_through_json_without_the_secret() -> None:
    for kind in KINDS:
        form = make_form(kind)
        again = FORM_ADAPTER.validate_json(form.model_dump_json())
        assert type(again) is type(form) and again.kind == kind
        assert again == form.model_copy(update={"lookup_secret": None})
    # Not even masked: a "**********" read back would be printed as the secret.
    assert "lookup_secret" not in make_form("receipt").model_dump_json()


def test_bad_form_input_is_refused() -> None:
    with pytest.raises(ValidationError, match="due_at is before received_at"):
        ReceiptForm(**common(), processing_days=1, received_at=T0, due_at=T0 - dt.timedelta(days=1), fee_line="x")
    with pytest.raises(ValidationError, match="at least one missing item"):
        SupplementForm(**common())
    with pytest.raises(ValidationError):
        RefusalForm(**common(), reasons=[])
    with pytest.raises(ValidationError, match="new_due_at must be after"):
        ApologyForm(**common(), received_at=T0, due_at=T0, new_due_at=T0, reason="x")
    with pytest.raises(ValidationError):
        ControlSlipForm(**common(), received_at=T0, due_at=T0, steps=[])
    with pytest.raises(ValidationError):
        ReceiptForm(**common(dossier_code=""), processing_days=1, received_at=T0, due_at=T0, fee_line="x")
    with pytest.raises(ValidationError):  # the QR code would get too dense to scan
        RefusalForm(**common(lookup_secret="x" * 33), reasons=["x"])
    with pytest.raises(ValidationError):  # a table row must fit on a page
        ProcessingStep(action="Giao", unit="u", actor="a", role="r", at=T0, note="x" * 201)
    with pytest.raises(ValidationError):
        RefusalForm(**common(), reasons=["   "])


@pytest.mark.slow
def test_long_reasons_run_over_pages_and_the_signature_follows(keys: SigningKeys, pki: DevPki) -> None:
    reasons = [f"Lý do thứ {i}: " + "giấy tờ không hợp lệ theo quy định hiện hành; " * 40 for i in range(1, 9)]
    form = RefusalForm(**common(), reasons=reasons)
    rendered = render_form(form, public_url=PUBLIC, copy="citizen")
    assert rendered.pages >= 3 and rendered.signature is not None
    assert rendered.signature.page == rendered.pages - 1
    pdf = sign_form(form, keys, public_url=PUBLIC, copy="citizen")
    assert verify_pdf(pdf, [pki.root_cert], identities=ids(pki)).ok
    assert "Lý do thứ 8:" in flat_text(pdf)


def test_lookup_link_refuses_foreign_or_incomplete_urls() -> None:
    with pytest.raises(ValueError, match="not a lookup link"):
        LookupLink.parse("https://evil.example/tra-cuu/X?vb=a", PUBLIC)
    with pytest.raises(ValueError, match="incomplete"):
        LookupLink.parse(f"{PUBLIC}/tra-cuu/{CODE}?vb=a&ht=hoso", PUBLIC)
    with pytest.raises(ValueError, match="incomplete"):
        LookupLink.parse(f"{PUBLIC}/tra-cuu/{CODE}?vb=a&ht=hoso&tg=yesterday", PUBLIC)


def test_object_keys_come_from_one_place() -> None:
    assert form_object_key(CODE, "receipt") == f"dossiers/{CODE}/forms/01-tiep-nhan-1.pdf"
    assert form_object_key(CODE, "supplement", 2) == f"dossiers/{CODE}/forms/02-yeu-cau-bo-sung-2.pdf"
    keys = {form_object_key(CODE, kind) for kind in KINDS}  # type: ignore[arg-type]
    assert len(keys) == len(KINDS)
    with pytest.raises(ValueError):
        form_object_key(CODE, "receipt", 0)
    with pytest.raises(ValueError):
        form_object_key("../etc", "receipt")


def test_public_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSO_PUBLIC_URL", raising=False)
    assert Settings().public_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("HOSO_PUBLIC_URL", "https://dvc.example.vn/mot-cua/")
    assert Settings().public_url == "https://dvc.example.vn/mot-cua"
    for bad in ("ftp://x", "dvc.example.vn", "http://", "http://a b"):
        monkeypatch.setenv("HOSO_PUBLIC_URL", bad)
        with pytest.raises(ValidationError, match="HOSO_PUBLIC_URL"):
            Settings()


def test_broken_forms_file_is_a_configuration_error(tmp_path: Path) -> None:
    import pipeline

    raw = yaml.safe_load((Path(pipeline.__file__).parent / "data" / "forms.yaml").read_text(encoding="utf-8"))
    del raw["forms"]["supplement"]["labels"]["missing"]
    raw["forms"]["stop"]["copies"] = ["citizen"]
    path = tmp_path / "forms.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_forms_file(path)
    assert "form supplement: labels missing: missing" in str(info.value)
    assert "form stop: every form has a stored copy" in str(info.value)
    assert info.value.message_vi


def test_a_site_may_print_a_form_on_a4(tmp_path: Path) -> None:
    import pipeline

    raw = yaml.safe_load((Path(pipeline.__file__).parent / "data" / "forms.yaml").read_text(encoding="utf-8"))
    raw["forms"]["control"]["page"] = "A4"
    path = tmp_path / "forms.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    rendered = render_form(make_form("control"), public_url=PUBLIC, book=load_forms_file(path))
    doc = pdfium.PdfDocument(rendered.pdf)
    try:
        assert doc[0].get_size() == pytest.approx((595.28, 841.89), abs=0.1)
    finally:
        doc.close()


def test_issue_form_signs_both_copies_with_the_settings(tmp_path: Path, pki: DevPki) -> None:
    services = Services(Settings(data_dir=tmp_path, public_url=PUBLIC, officer_name="Đỗ Thị Lan"))
    issued = issue_form(make_form("receipt").model_copy(update={"signer_name": None}), services)
    assert issued.object_key == f"dossiers/{CODE}/forms/01-tiep-nhan-1.pdf"
    assert issued.citizen is not None
    roots = [services.pki.root_cert]
    for pdf in (issued.stored, issued.citizen):
        report = verify_pdf(pdf, roots, identities=services.signer_identities)
        assert report.ok and report.signatures[0].role == "officer"
    assert "Đỗ Thị Lan" in flat_text(issued.stored)  # the configured officer, under the signature block
    assert SECRET.encode() not in stream_bytes(issued.stored)
    assert LookupLink.parse(decode_qr(issued.citizen)[0], PUBLIC).secret is not None
    slip = issue_form(make_form("control"), services)
    assert slip.citizen is None and verify_pdf(slip.stored, roots, identities=services.signer_identities).ok


def desk_receipt(
    status: str,
    *,
    procedure: str = "business_household_registration",
    missing: list[list[str]] | None = None,
    inconsistencies: list[str] | None = None,
    reasons: list[str] | None = None,
) -> Receipt:
    """A receipt as the desk writes it (pipeline/usecases/desk.py)."""
    return Receipt(
        dossier_code=CODE,
        procedure=procedure,
        status=status,  # type: ignore[arg-type]
        received_at=T0,
        due_at=T0.replace(hour=17, minute=0),
        applicant_id="001189012345",
        pages=[PageInfo(index=1, kind="document"), PageInfo(index=2, kind="document")],
        documents=[
            DocumentInfo(
                type="cccd",
                pages=[1, 2],
                confidence=0.97,
                fields={"id_number": "001189012345", "full_name": "Trần Thị Bích Ngọc"},
            ),
            DocumentInfo(type="giay_khai_sinh", pages=[], confidence=1.0, source="reused"),
        ],
        missing=missing or [],
        unexpected=[],
        reasons_vi=reasons or [],
        inconsistencies=inconsistencies or [],
    )
