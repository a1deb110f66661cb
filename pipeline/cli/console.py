"""How hoso shows receipts, verifications and dossier status to a person (Vietnamese first).

Rich and the standard library only at import: the desk hand-off prints its receipt from here without loading
the receipt model, the catalog or the settings (``pipeline/cli/entry.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:  # only annotations: `hoso status` need not load pyHanko
    from signing.verify import SignatureReport, VerificationReport
    from storage.registry import DossierRecord

TITLES = {
    "accepted": "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    "needs_supplement": "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ",
    "rejected": "PHIẾU TỪ CHỐI TIẾP NHẬN GIẢI QUYẾT HỒ SƠ",
}
REUSED_VI = "sử dụng lại từ kho dữ liệu điện tử"
CHECK_VI = {
    "verified": "đã xác thực",
    "mismatch": "không khớp",
    "not_found": "không tìm thấy số định danh",
    "unverified": "chưa xác thực được",
}


def _local(dt: datetime | str, tz: str) -> str:
    when = datetime.fromisoformat(dt) if isinstance(dt, str) else dt
    return when.astimezone(ZoneInfo(tz)).strftime("%H:%M %d/%m/%Y")


def receipt_panel(receipt: Mapping[str, Any], labels: Mapping[str, str], tz: str) -> Panel:
    """The desk's receipt (or request to supplement / refusal) as a readable table, from the receipt JSON
    (the contract: ``Receipt.model_dump(mode="json")``); ``labels``: each document type's label (the catalog's)."""
    head = Table.grid(padding=(0, 2))
    head.add_row("Mã hồ sơ:", f"[bold]{receipt['dossier_code']}[/]")
    head.add_row("Thủ tục:", f"{receipt.get('procedure_label', '')} "
                             f"({receipt.get('procedure_code') or receipt['procedure']})")
    if receipt.get("applicant_id"):
        head.add_row("Số định danh người nộp:", receipt["applicant_id"])
    head.add_row("Thời gian nhận hồ sơ:", _local(receipt["received_at"], tz))
    if receipt["status"] == "accepted":
        head.add_row("Thời gian hẹn trả kết quả:", f"[bold]{_local(receipt['due_at'], tz)}[/]")
    docs = Table(title="Thành phần hồ sơ", show_lines=False)
    for col in ("STT", "Tên giấy tờ", "Trang", "Độ tin cậy", "Thông tin trích xuất"):
        docs.add_column(col)
    for i, doc in enumerate(receipt["documents"], start=1):
        fields = ", ".join(f"{k}={v}" for k, v in (doc.get("fields") or {}).items())
        where = ",".join(map(str, doc["pages"]))
        if doc.get("source") == "reused":
            where = "—"
            reference = doc.get("reference")
            origin = f" (hồ sơ {reference['dossier_code']})" if reference else ""
            fields = f"{REUSED_VI}{origin}"
        docs.add_row(str(i), labels.get(doc["type"], doc["type"]), where, f"{doc['confidence']:.2f}", fields)
    parts: list = [head, docs]
    check = receipt.get("applicant_check")
    if check is not None:
        parts.append(f"Xác thực với CSDL quốc gia về dân cư: {CHECK_VI[check['outcome']]}")
        parts.extend(f"  {note}" for note in check.get("notes_vi") or [])
    if receipt.get("reasons_vi"):
        parts.append("\n".join(f"• {r}" for r in receipt["reasons_vi"]))
    rescans = [p for p in receipt["pages"] if p.get("rescan_reason")]
    if rescans:
        parts.append("\n".join(f"• Trang {p['index']}: {p['rescan_reason']}" for p in rescans))
    return Panel(Group(*parts), title=TITLES[receipt["status"]])


def print_receipt(receipt: Mapping[str, Any], lookup_url: str | None, already_done: bool, labels: Mapping[str, str],
                  tz: str) -> None:
    """``hoso ingest``'s printout for a person: the receipt, the citizen's lookup link, whether it was a re-run."""
    con = console()
    con.print(receipt_panel(receipt, labels, tz))
    if lookup_url:
        con.print(f"Tra cứu hồ sơ (bản của công dân): {lookup_url}", soft_wrap=True)
    if already_done:
        con.print("Hồ sơ này đã được tiếp nhận trước đó; không xử lý lại.")


ROLE_VI = {"officer": "cán bộ tiếp nhận", "approver": "lãnh đạo phê duyệt", "seal": "con dấu cơ quan",
           "timestamp_authority": "dấu thời gian"}
TIME_SOURCE_VI = {"signature_timestamp": "dấu thời gian", "document_timestamp": "dấu thời gian tài liệu",
                  "signer_claimed": "máy người ký (không kiểm chứng)", "none": "-"}
PROFILE_VI = {"result": "kết quả điện tử: lãnh đạo phê duyệt rồi con dấu cơ quan",
              "basic": "mọi chữ ký hợp lệ"}
REVOCATION_VI = {"good": "✔ còn hiệu lực", "revoked": "✘ đã thu hồi", "unknown": "? không rõ",
                 "not_checked": "chưa kiểm tra"}


def _role_cell(sig: SignatureReport) -> str:
    shown = ROLE_VI.get(sig.role, sig.role or "-")
    if sig.role_ok:
        return shown
    return f"✘ ghi là {ROLE_VI.get(sig.claimed_role, sig.claimed_role)}; chứng thư: {shown}"


def verification_panel(name: str, report: VerificationReport) -> Panel:
    """Each signature: who (and in which role, as its certificate proves), when (and on whose clock),
    intact, trusted, revocation; then what is wrong with the document as a whole."""
    table = Table()
    for col in ("Chữ ký", "Người ký", "Vai trò", "Thời gian ký", "Nguồn thời gian", "Toàn vẹn", "Tin cậy",
                "Thu hồi", "Sửa đổi sau ký"):
        table.add_column(col)
    for sig in report.signatures:
        table.add_row(
            sig.field,
            sig.signer,
            _role_cell(sig),
            sig.signing_time.isoformat() if sig.signing_time else "-",
            TIME_SOURCE_VI.get(sig.signing_time_source, sig.signing_time_source),
            "✔" if sig.intact else "✘",
            "✔" if sig.trusted else "✘",
            "-" if sig.kind == "document_timestamp" else REVOCATION_VI.get(sig.revocation, sig.revocation),
            sig.modification_level,
        )
    problems = [f"• {vi} — {en}" for vi, en in zip(report.problems_vi, report.problems, strict=False)]
    problems += [f"• {s.field}: {p}" for s in report.signatures for p in s.problems]
    when = report.validation_time.isoformat(timespec="seconds") if report.validation_time else "-"
    profile = PROFILE_VI.get(report.profile, report.profile)
    lines = [report.summary_vi, report.summary_en, f"Thời điểm kiểm tra / validation time: {when}",
             f"Yêu cầu / profile: {profile} ({report.profile})", *problems]
    style = "green" if report.ok else "red"
    return Panel(Group(table, "\n".join(lines)), title=f"Kiểm tra chữ ký: {name}", border_style=style)


def status_panel(record: DossierRecord, tz: str) -> Panel:
    """State, history (audit trail) and artifacts of one dossier."""
    head = Table.grid(padding=(0, 2))
    head.add_row("Mã hồ sơ:", f"[bold]{record.code}[/]")
    head.add_row("Thủ tục:", record.procedure)
    head.add_row("Trạng thái:", f"[bold]{record.state}[/]")
    head.add_row("Nhận lúc:", _local(record.received_at, tz))
    head.add_row("Hẹn trả:", _local(record.due_at, tz))
    if record.handed_over_from:
        where = f"{record.agency_code} (bàn giao từ {record.handed_over_from}, đợt {record.handover_batch})"
        head.add_row("Đơn vị:", where)
    history = Table(title="Lịch sử xử lý")
    for col in ("Thời gian", "Người thực hiện", "Thao tác", "Từ", "Sang", "Ghi chú"):
        history.add_column(col)
    for ev in record.events:
        who = f"{ev.actor} ({ev.role})" if ev.role else ev.actor
        history.add_row(_local(ev.at, tz), who, ev.action, ev.from_state or "-", ev.to_state, ev.note or "")
    artifacts = Table(title="Tệp lưu trữ")
    for col in ("Tên", "Khóa đối tượng", "SHA-256", "Kích thước"):
        artifacts.add_column(col)
    for name, art in record.artifacts.items():
        artifacts.add_row(name, art.object_key, art.sha256[:16] + "…", f"{art.size:,}")
    return Panel(Group(head, history, artifacts), title="Tình trạng hồ sơ")


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, width=None if sys.stdout.isatty() else 120)
