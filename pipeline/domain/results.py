"""The clerk's electronic result: an A4 PDF in Vietnamese, signed by the approver and sealed by the agency.

Layout follows the usual administrative form: agency on the top left, the national motto on the top
right, place and date, the title, the dossier code, procedure and applicant, the body, and at the
bottom two empty boxes where the approver's and the seal's visible signatures go, plus a QR code
that links to the public verify page, ``<HOSO_PUBLIC_URL>/xac-thuc/<dossier_code>?v=<verification_code>``
(results issued before carry ``HOSO-VERIFY:<dossier_code>:<verification_code>``; both are understood by
:func:`parse_verify_payload`).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, Field
from pyhanko.sign.fields import MDPPerm
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen import canvas

from pipeline.core.errors import ConfigurationError
from pipeline.domain.printing import as_pdfa_2b, draw_qr, local_time
from signing.changes import E_RESULT_TYPE
from signing.levels import Level
from signing.pki import ROLE_TITLES
from signing.signers import KeySource, load_stamp_image, prepare_fields, sign_pdf

__all__ = [
    "ResultContent",
    "issue_signed_result",
    "qr_payload",
    "render_result_pdf",
    "result_signature_boxes",
    "seal_result",
    "sign_as_approver",
]

FONT_DIR = Path("/usr/share/fonts/truetype/noto")
REGULAR, BOLD = "NotoSans", "NotoSans-Bold"

PAGE_W, PAGE_H = A4
MARGIN_X = 56.0
CONTENT_W = PAGE_W - 2 * MARGIN_X
# Bottom zone of the last page: signature labels + boxes + QR footer.
_SIGN_BOX_BOTTOM, _SIGN_BOX_TOP = 118.0, 198.0
_SIGN_ZONE_TOP = _SIGN_BOX_TOP + 40.0
_QR_SIZE = 78.0

APPROVER_FIELD, SEAL_FIELD = "approver", "seal"


class ResultContent(BaseModel):
    """What the e-result says."""

    dossier_code: str = Field(min_length=1)
    procedure_label: str = Field(min_length=1)
    procedure_code: str | None = None
    applicant_name: str | None = None
    applicant_id: str | None = None
    agency_name: str = Field(min_length=1)
    issued_at: dt.datetime
    verification_code: str = Field(min_length=1)
    body_lines: list[str] = Field(default_factory=list)
    place: str | None = None  # e.g. "Hà Nội"; the date line starts with it when given
    public_url: str | None = None  # HOSO_PUBLIC_URL: the QR links to the verify page under it


VERIFY_PREFIX = "HOSO-VERIFY:"
VERIFY_PATH = "/xac-thuc/"
_VERIFY_URL = re.compile(
    r"^https?://[^/?#\s]+(?:/[^?#\s]*)?/xac-thuc/([0-9A-Za-z.\-]{1,64})\?(?:[^#\s]*&)?v=([0-9A-Za-z\-]{4,40})"
    r"(?:[&#]\S*)?$"
)
_VERIFY_OLD = re.compile(r"^HOSO-VERIFY:([0-9A-Za-z.\-]{1,64}):([0-9A-Za-z\-]{4,40})$")


def verify_url(public_url: str, dossier_code: str, verification_code: str) -> str:
    """The verify page of one e-result (what its QR code carries)."""
    return f"{public_url.rstrip('/')}{VERIFY_PATH}{quote(dossier_code)}?v={quote(verification_code)}"


def parse_verify_payload(text: str) -> tuple[str, str] | None:
    """(dossier code, verification code) from a scanned result QR: the verify-page link, or the
    ``HOSO-VERIFY:<code>:<vcode>`` text of results issued before it; None for anything else."""
    text = text.strip()
    match = _VERIFY_URL.match(text) or _VERIFY_OLD.match(text)
    return (match.group(1), match.group(2).upper()) if match else None


def result_signature_boxes() -> dict[str, tuple[float, float, float, float]]:
    """Boxes (x1, y1, x2, y2) on the last page kept free for the approver's and the seal's stamps."""
    half = (CONTENT_W - 24) / 2
    return {
        APPROVER_FIELD: (MARGIN_X, _SIGN_BOX_BOTTOM, MARGIN_X + half, _SIGN_BOX_TOP),
        SEAL_FIELD: (PAGE_W - MARGIN_X - half, _SIGN_BOX_BOTTOM, PAGE_W - MARGIN_X, _SIGN_BOX_TOP),
    }


def qr_payload(content: ResultContent) -> str:
    """Text carried by the result's QR code: the verify page's link (without a public URL, the older
    ``HOSO-VERIFY:`` text)."""
    if content.public_url:
        return verify_url(content.public_url, content.dossier_code, content.verification_code)
    return f"{VERIFY_PREFIX}{content.dossier_code}:{content.verification_code}"


@lru_cache(maxsize=1)
def _register_fonts() -> None:
    try:
        pdfmetrics.registerFont(TTFont(REGULAR, str(FONT_DIR / "NotoSans-Regular.ttf")))
        pdfmetrics.registerFont(TTFont(BOLD, str(FONT_DIR / "NotoSans-Bold.ttf")))
    except (OSError, TTFError) as exc:
        raise ConfigurationError(
            f"Noto Sans fonts missing in {FONT_DIR} (install fonts-noto-core): {exc}",
            "Thiếu phông chữ tiếng Việt để in kết quả.",
        ) from exc


class _Writer:
    """A top-down text cursor over a reportlab canvas that starts new pages when needed."""

    def __init__(self, c: canvas.Canvas) -> None:
        self.c = c
        self.y = PAGE_H - 56
        self.pages = 1

    def need(self, height: float, floor: float = 56.0) -> None:
        if self.y - height < floor:
            self.c.showPage()
            self.pages += 1
            self.y = PAGE_H - 56

    def centered(self, text: str, font: str, size: float, x_mid: float, width: float) -> None:
        for line in simpleSplit(text, font, size, width):
            self.need(size * 1.35)
            self.c.setFont(font, size)
            self.c.drawCentredString(x_mid, self.y - size, line)
            self.y -= size * 1.35

    def paragraph(self, text: str, size: float = 12, label: str | None = None) -> None:
        """Left-aligned wrapped text; ``label`` in bold before it on the first line."""
        c = self.c
        indent = pdfmetrics.stringWidth(label, BOLD, size) if label else 0.0
        first, *rest = simpleSplit(text, REGULAR, size, CONTENT_W - indent) or [""]
        lines = [first, *simpleSplit(" ".join(rest), REGULAR, size, CONTENT_W)] if rest else [first]
        for i, line in enumerate(lines):
            self.need(size * 1.45)
            x = MARGIN_X
            if i == 0 and label:
                c.setFont(BOLD, size)
                c.drawString(x, self.y - size, label)
                x += indent
            c.setFont(REGULAR, size)
            c.drawString(x, self.y - size, line)
            self.y -= size * 1.45


def _header(w: _Writer, content: ResultContent) -> None:
    c = w.c
    top = w.y
    left_mid, right_mid = MARGIN_X + 110, PAGE_W - MARGIN_X - 130
    w.centered(content.agency_name.upper(), BOLD, 10.5, left_mid, 220)
    c.line(left_mid - 40, w.y - 2, left_mid + 40, w.y - 2)
    left_bottom = w.y
    w.y = top
    w.centered("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", BOLD, 10.5, right_mid, 260)
    w.centered("Độc lập - Tự do - Hạnh phúc", BOLD, 11.5, right_mid, 260)
    half = pdfmetrics.stringWidth("Độc lập - Tự do - Hạnh phúc", BOLD, 11.5) / 2
    c.line(right_mid - half, w.y - 2, right_mid + half, w.y - 2)
    w.y = min(w.y, left_bottom) - 14
    when = local_time(content.issued_at)
    date_line = f"ngày {when:%d} tháng {when:%m} năm {when:%Y}"
    date_line = f"{content.place}, {date_line}" if content.place else date_line[0].upper() + date_line[1:]
    w.centered(date_line, REGULAR, 11.5, right_mid, 260)
    w.y -= 22


def _signature_zone(w: _Writer, content: ResultContent) -> None:
    c = w.c
    boxes = result_signature_boxes()
    labels = {APPROVER_FIELD: ROLE_TITLES["approver"].upper(), SEAL_FIELD: "XÁC NHẬN CỦA CƠ QUAN"}
    for field, (x1, _y1, x2, y2) in boxes.items():
        c.setFont(BOLD, 11)
        c.drawCentredString((x1 + x2) / 2, y2 + 22, labels[field])
        c.setFont(REGULAR, 9.5)
        c.drawCentredString((x1 + x2) / 2, y2 + 9, "(Ký số)")
    payload = qr_payload(content)
    qr_y = 28.0
    draw_qr(c, payload, MARGIN_X, qr_y, _QR_SIZE)
    text_x = MARGIN_X + _QR_SIZE + 10
    c.setFont(REGULAR, 9)
    c.drawString(text_x, qr_y + 52, "Quét mã QR để xác thực kết quả điện tử này.")
    c.drawString(text_x, qr_y + 38, f"Mã hồ sơ: {content.dossier_code}")
    c.drawString(text_x, qr_y + 24, f"Mã xác thực: {content.verification_code}")
    c.drawString(text_x, qr_y + 10, f"Cơ quan: {content.agency_name}")


def _render(content: ResultContent) -> tuple[bytes, int]:
    _register_fonts()
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, pageCompression=1, initialFontName=REGULAR)
    c.setTitle(f"Kết quả giải quyết thủ tục hành chính - {content.dossier_code}")
    c.setAuthor(content.agency_name)
    c.setSubject(content.procedure_label)
    c.setCreator("hoso")
    c.setLineWidth(0.8)
    w = _Writer(c)
    _header(w, content)
    w.centered("KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH", BOLD, 15, PAGE_W / 2, CONTENT_W)
    w.y -= 4
    w.centered(f"Mã hồ sơ: {content.dossier_code}", BOLD, 12.5, PAGE_W / 2, CONTENT_W)
    w.y -= 14
    procedure = content.procedure_label
    if content.procedure_code:
        procedure += f" (mã thủ tục: {content.procedure_code})"
    w.paragraph(procedure, label="Thủ tục: ")
    if content.applicant_name:
        w.paragraph(content.applicant_name, label="Người nộp hồ sơ: ")
    if content.applicant_id:
        w.paragraph(content.applicant_id, label="Số định danh cá nhân: ")
    w.y -= 8
    for line in content.body_lines:
        if line.strip():
            w.paragraph(line)
        else:
            w.y -= 10
    if w.y < _SIGN_ZONE_TOP:  # the signature zone goes on a page of its own
        w.need(PAGE_H)
    _signature_zone(w, content)
    c.showPage()
    c.save()
    return _as_pdfa_2b(buf.getvalue()), w.pages - 1


def _as_pdfa_2b(pdf: bytes) -> bytes:
    """Declare the rendered result PDF/A-2b: XMP metadata (pdfaid part 2, conformance B, what reportlab
    put in the document info, and ``dc:type`` :data:`~signing.changes.E_RESULT_TYPE`, which makes
    ``hoso verify`` apply the e-result profile) and an sRGB output intent.

    The metadata lives in the XMP only: pyHanko rewrites the producer and modification date of both
    /Info and the XMP on every revision, not always alike, and PDF/A wants the two to agree. reportlab
    already embeds every font (Noto Sans subsets) and writes no encryption, JavaScript or transparency;
    pyHanko's signatures add only widgets with embedded-font appearances and keep the file at PDF 1.7.
    Tests check each revision against what PDF/A-2b asks that can be checked here (version, structure,
    XMP, fonts, output intent, annotations); there is no full PDF/A validator.
    """
    return as_pdfa_2b(pdf, xmp_only=True, dc_type=E_RESULT_TYPE)


def render_result_pdf(content: ResultContent) -> bytes:
    """Render the unsigned e-result (A4, PDF/A-2b, Noto Sans embedded); the signature boxes are on the last page."""
    return _render(content)[0]


def issue_signed_result(
    content: ResultContent,
    keys: KeySource,
    *,
    approver_name: str,
    agency_name: str,
    timestamp_url: str | None = None,
    level: Level = Level.B_LTA,
    trust_roots: list | None = None,
    seal_image: Path | None = None,
) -> bytes:
    """Render the e-result, have the approver sign it and the agency seal it last (two PAdES signatures):
    :func:`sign_as_approver`, then :func:`seal_result`. An unreadable ``seal_image`` fails
    (:class:`pipeline.core.errors.SigningFailed`) before anything is signed.
    """
    if seal_image is not None:
        load_stamp_image(seal_image)
    signed = sign_as_approver(
        content, keys, approver_name=approver_name, agency_name=agency_name, timestamp_url=timestamp_url,
        level=level, trust_roots=trust_roots,
    )
    return seal_result(
        signed, keys, dossier_code=content.dossier_code, agency_name=agency_name, place=content.place,
        timestamp_url=timestamp_url, level=level, trust_roots=trust_roots, seal_image=seal_image,
    )


def sign_as_approver(
    content: ResultContent,
    keys: KeySource,
    *,
    approver_name: str,
    agency_name: str,
    timestamp_url: str | None = None,
    level: Level = Level.B_LTA,
    trust_roots: list | None = None,
) -> bytes:
    """Render the e-result and sign it as the approver: the first of its two signatures.

    Both signature fields exist before the approver's certification signature (DocMDP: form filling,
    i.e. only the prepared fields may be signed later). The approver signs at most at B-LT, so that
    the approver's validation data is embedded before the seal's signature and the final document
    timestamp (``level`` B-LTA) cover it; ``level`` is lowered when the TSA or certificates cannot
    support it (see :mod:`signing.levels`).
    """
    pdf, last_page = _render(content)
    boxes = result_signature_boxes()
    pdf = prepare_fields(pdf, [(name, last_page, box) for name, box in boxes.items()])
    return sign_pdf(
        pdf,
        keys.signer("approver"),
        field_name=APPROVER_FIELD,
        reason=f"Phê duyệt kết quả hồ sơ {content.dossier_code}",
        location=content.place or agency_name,
        signer_name=approver_name,
        role_label=ROLE_TITLES["approver"],
        timestamp_url=timestamp_url,
        existing_fields_only=True,
        level=Level.B_LT if level == Level.B_LTA else level,
        certify=MDPPerm.FILL_FORMS,
        trust_roots=trust_roots,
    )


def seal_result(
    approved: bytes,
    keys: KeySource,
    *,
    dossier_code: str,
    agency_name: str,
    place: str | None = None,
    timestamp_url: str | None = None,
    level: Level = Level.B_LTA,
    trust_roots: list | None = None,
    seal_image: Path | None = None,
) -> bytes:
    """The agency's seal on an e-result the approver signed (:func:`sign_as_approver`), at ``level``;
    ``seal_image`` (a PNG of the seal) is drawn in its visible stamp."""
    return sign_pdf(
        approved,
        keys.signer("seal"),
        field_name=SEAL_FIELD,
        reason=f"Đóng dấu xác nhận kết quả hồ sơ {dossier_code}",
        location=place or agency_name,
        signer_name=agency_name,
        role_label=ROLE_TITLES["seal"],
        timestamp_url=timestamp_url,
        existing_fields_only=True,
        level=level,
        trust_roots=trust_roots,
        stamp_image=seal_image,
    )
