"""One exception hierarchy with a stable exit code per cause, and a Vietnamese message for people."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Stable process exit codes of the ``hoso`` command (never renumber; append only)."""

    ok = 0
    failed = 1  # a check ran and said no (e.g. verification failed)
    usage = 2
    input_missing = 3
    input_empty = 4
    input_corrupt = 5
    input_encrypted = 6
    input_unsupported = 7
    input_too_large = 8
    input_invalid_page = 9
    unknown_procedure = 10
    ocr_failed = 11
    signing_failed = 12
    storage_failed = 13
    dossier_not_found = 14
    invalid_state = 15
    integrity_error = 16
    configuration = 17
    input_not_regular = 18  # a symlink, FIFO, device, socket or subfolder where a file was expected
    input_bad_name = 19  # a file name with control characters, bytes that are not UTF-8, or too long
    in_progress = 20  # another process holds the work (a live lease on the reservation): try again later
    forbidden = 21  # the user is unknown, inactive, not authenticated, or lacks the role for this action
    internal = 99


class HosoError(Exception):
    """Base of every error hoso reports to a person.

    ``str(err)`` is the English message for logs; ``message_vi`` is for citizens and clerks.
    ``transient``: whether the same work may succeed if tried again later (a server down or overloaded):
    True or False decides; None (most engine errors) leaves it to the error's cause — see
    :func:`pipeline.core.retry.is_transient`.
    """

    exit_code: ExitCode = ExitCode.internal
    default_vi: str = "Lỗi hệ thống không mong đợi."
    transient: bool | None = None

    def __init__(self, message: str, message_vi: str | None = None, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.message_vi = message_vi or self.default_vi
        if transient is not None:
            self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (process pools, Prefect results) drops the cause chain that may decide `transient`: keep the verdict.
        from pipeline.core.retry import is_transient

        return (type(self), self.args, self.__dict__ | {"transient": is_transient(self)})

    @property
    def reason(self) -> str:
        """Short machine-readable cause, e.g. ``input_encrypted``."""
        return self.exit_code.name


class InputError(HosoError):
    """The citizen's input cannot be processed."""

    transient = False


class InputMissing(InputError):
    exit_code = ExitCode.input_missing
    default_vi = "Không tìm thấy tệp đầu vào."


class InputEmpty(InputError):
    exit_code = ExitCode.input_empty
    default_vi = "Tệp đầu vào rỗng (0 byte); vui lòng quét lại."


class InputCorrupt(InputError):
    exit_code = ExitCode.input_corrupt
    default_vi = "Tệp bị hỏng hoặc không đầy đủ; vui lòng quét hoặc xuất lại tệp."


class InputEncrypted(InputError):
    exit_code = ExitCode.input_encrypted
    default_vi = "Tệp PDF được đặt mật khẩu; vui lòng cung cấp bản không khóa."


class InputUnsupported(InputError):
    exit_code = ExitCode.input_unsupported
    default_vi = "Định dạng tệp không được hỗ trợ (chỉ nhận PDF, PNG, JPEG, TIFF)."


class InputNotRegular(InputError):
    exit_code = ExitCode.input_not_regular
    default_vi = "Đầu vào không phải là tệp thông thường; vui lòng nộp tệp PDF/ảnh hoặc thư mục ảnh trang."


class InputBadName(InputError):
    exit_code = ExitCode.input_bad_name
    default_vi = (
        "Tên tệp chứa ký tự không hợp lệ hoặc quá dài; vui lòng đổi tên tệp (chữ, số, dấu cách, '-', '_', '.') "
        "rồi nộp lại."
    )


class InputTooLarge(InputError):
    exit_code = ExitCode.input_too_large
    default_vi = "Ảnh trang quá lớn; vui lòng quét lại ở độ phân giải 200–600 dpi."


class InputInvalidPage(InputError):
    exit_code = ExitCode.input_invalid_page
    default_vi = "Tệp có trang không hợp lệ (kích thước bằng 0 hoặc quá nhỏ); vui lòng quét lại."


class UnknownProcedure(HosoError):
    exit_code = ExitCode.unknown_procedure
    default_vi = "Không tìm thấy thủ tục hành chính đã chọn."
    transient = False


class OcrFailed(HosoError):
    exit_code = ExitCode.ocr_failed
    default_vi = "Không nhận dạng được văn bản trên trang quét."


class SigningFailed(HosoError):
    exit_code = ExitCode.signing_failed
    default_vi = "Không ký số được tài liệu."


class StorageFailed(HosoError):
    exit_code = ExitCode.storage_failed
    default_vi = "Không lưu trữ được dữ liệu; hồ sơ chưa được ghi nhận."


class IntegrityError(HosoError):
    exit_code = ExitCode.integrity_error
    default_vi = "Dữ liệu lưu trữ không toàn vẹn (sai mã băm)."
    transient = False


class DossierNotFound(HosoError):
    exit_code = ExitCode.dossier_not_found
    default_vi = "Không tìm thấy hồ sơ với mã đã nhập."
    transient = False


class InvalidState(HosoError):
    exit_code = ExitCode.invalid_state
    default_vi = "Hồ sơ không ở trạng thái cho phép thao tác này."
    transient = False


class DossierCodeTaken(InvalidState):
    """A dossier code asked for (a handed-over dossier's own code) that another input's dossier holds."""

    default_vi = "Mã hồ sơ đã có trong hệ thống (một hồ sơ khác)."


class InProgressElsewhere(HosoError):
    """Another process is working on this (it holds a live lease), or took the work over from this one."""

    exit_code = ExitCode.in_progress
    default_vi = "Hồ sơ này đang được xử lý ở nơi khác (quầy hoặc tiến trình khác); vui lòng thử lại sau."
    transient = True  # later the holder has finished (already done) or its lease has run out (taken over)


class InvalidRequest(HosoError):
    """A request that lacks what it needs or gives something malformed (a reason, a tracking number…)."""

    exit_code = ExitCode.usage
    transient = False
    default_vi = "Yêu cầu thiếu hoặc sai thông tin."


class DossierBusy(InvalidState):
    """Another step on the dossier is in progress (its claim is held by someone else)."""

    default_vi = "Hồ sơ đang được xử lý ở một bước khác; vui lòng thử lại sau."


class Forbidden(HosoError):
    """The user may not do this: unknown or inactive, wrong credentials, or without the role it needs."""

    exit_code = ExitCode.forbidden
    default_vi = "Người dùng không có quyền thực hiện thao tác này."
    transient = False


class ConfigurationError(HosoError):
    exit_code = ExitCode.configuration
    default_vi = "Cấu hình hệ thống không hợp lệ."
    transient = False
