"""Page text in Vietnamese (the default) and English (the toggle): ``t(key)`` in the templates.

The language comes from ``?lang=`` (remembered in a cookie), else the cookie, else Vietnamese. Data from the
catalog and the lifecycle (procedure names, document labels, state labels) is Vietnamese only, as published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Lang = Literal["vi", "en"]
LANG_COOKIE = "hoso_lang"

TEXT: dict[str, tuple[str, str]] = {
    "site": ("Cổng dịch vụ hành chính công", "Public service portal"),
    "home": ("Trang chủ", "Home"),
    "lookup": ("Tra cứu hồ sơ", "Look up a dossier"),
    "verify": ("Kiểm tra kết quả điện tử", "Check an e-result"),
    "handbook": ("Cẩm nang thủ tục", "Procedure handbook"),
    "kiosk": ("Ki-ốt", "Kiosk"),
    "staff": ("Cán bộ", "Staff"),
    "lang_other": ("English", "Tiếng Việt"),
    "lang_other_code": ("en", "vi"),
    "dossier_code": ("Mã hồ sơ", "Dossier code"),
    "secret": ("Mã tra cứu (in trên phiếu hẹn)", "Lookup code (printed on the receipt)"),
    "search": ("Tra cứu", "Look up"),
    "find": ("Tìm", "Search"),
    "lookup_intro": (
        "Nhập mã hồ sơ và mã tra cứu in trên phiếu tiếp nhận, hoặc quét mã QR trên phiếu.",
        "Enter the dossier code and the lookup code printed on your receipt, or scan the receipt's QR code.",
    ),
    "not_found": (
        "Không có hồ sơ với mã và mã tra cứu này. Vui lòng kiểm tra lại phiếu hẹn hoặc hỏi tại quầy tiếp nhận.",
        "No such dossier with this code and lookup code. Please check your receipt or ask at the desk.",
    ),
    "rate_limited_title": ("Quá nhiều lượt tra cứu", "Too many lookups"),
    "rate_limited": (
        "Bạn đã tra cứu quá nhiều lần trong thời gian ngắn. Vui lòng thử lại sau {seconds} giây.",
        "You have looked up too many times in a short while. Please try again in {seconds} seconds.",
    ),
    "procedure": ("Thủ tục", "Procedure"),
    "state": ("Trạng thái", "Status"),
    "received_at": ("Ngày tiếp nhận", "Received"),
    "due": ("Ngày hẹn trả kết quả", "Result due"),
    "returned_at": ("Ngày trả kết quả", "Returned"),
    "missing": ("Giấy tờ cần bổ sung", "Documents to supplement"),
    "or": ("hoặc", "or"),
    "delivery": ("Hình thức nhận kết quả", "Delivery"),
    "tracking": ("Mã bưu gửi", "Postal tracking number"),
    "verify_intro": (
        "Quét mã QR trên kết quả điện tử, hoặc tải tệp PDF lên để kiểm tra chữ ký số. Tệp không được lưu lại.",
        "Scan the QR code on an e-result, or upload a PDF to check its digital signatures. The file is not kept.",
    ),
    "upload_pdf": ("Tệp PDF (tối đa {mb} MB)", "PDF file (up to {mb} MB)"),
    "check": ("Kiểm tra", "Check"),
    "valid": ("Hợp lệ", "Valid"),
    "invalid": ("Không hợp lệ", "Not valid"),
    "result_of": ("Kết quả điện tử của hồ sơ", "E-result of dossier"),
    "result_unknown": (
        "Không tìm thấy kết quả điện tử với mã này. Vui lòng kiểm tra lại hoặc hỏi tại quầy.",
        "No e-result with this code. Please check again or ask at the desk.",
    ),
    "issued_at": ("Ngày ký", "Signed"),
    "signatures": ("Chữ ký số", "Digital signatures"),
    "signer": ("Người ký", "Signer"),
    "role": ("Vai trò", "Role"),
    "signing_time": ("Thời điểm ký", "Signing time"),
    "problems": ("Vấn đề", "Problems"),
    "handbook_intro": (
        "Tra cứu thủ tục: giấy tờ cần nộp, thời hạn giải quyết, phí, lệ phí.",
        "Find a procedure: documents to bring, processing time, fees.",
    ),
    "search_procedure": ("Tên thủ tục, mã hoặc giấy tờ", "Procedure name, code or document"),
    "national_code": ("Mã thủ tục quốc gia", "National procedure code"),
    "processing_time": ("Thời hạn giải quyết", "Processing time"),
    "working_days": ("{n} ngày làm việc", "{n} working days"),
    "same_day": ("Trong ngày làm việc", "Within the working day"),
    "required_docs": ("Giấy tờ phải nộp", "Documents required"),
    "optional_docs": ("Giấy tờ có thể cần", "Documents that may be needed"),
    "fee": ("Phí, lệ phí", "Fee"),
    "fee_verified": ("đã xác minh", "verified"),
    "fee_conditional": ("tùy trường hợp", "depends on the case"),
    "fee_unverified": ("chưa xác minh — hỏi tại quầy", "not verified — ask at the desk"),
    "steps": ("Các bước giải quyết", "Steps"),
    "no_results": ("Không tìm thấy thủ tục phù hợp.", "No procedure matches."),
    "n_results": ("{n} thủ tục", "{n} procedures"),
    "back": ("Quay lại", "Back"),
    "error": ("Lỗi", "Error"),
    "sign_in": ("Đăng nhập", "Sign in"),
    "sign_out": ("Đăng xuất", "Sign out"),
    "username": ("Tên đăng nhập", "Username"),
    "password": ("Mật khẩu", "Password"),
    "worklists": ("Việc cần làm", "Work queues"),
    "desk_upload": ("Tiếp nhận hồ sơ", "Receive a dossier"),
    "statistics": ("Thống kê", "Statistics"),
    "touch_lookup": ("Tra cứu hồ sơ", "Look up my dossier"),
    "touch_handbook": ("Thủ tục cần giấy tờ gì?", "What do I need to bring?"),
}


def translator(lang: Lang) -> Callable[..., str]:
    index = 0 if lang == "vi" else 1

    def t(key: str, **values: object) -> str:
        text = TEXT[key][index] if key in TEXT else key
        return text.format(**values) if values else text

    return t
