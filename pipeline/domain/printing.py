"""Pieces every printed hoso document needs: embedded Vietnamese fonts, a QR drawing, PDF/A-2b, dates.

The one-stop forms (:mod:`pipeline.domain.forms`) use them; they are written so that the e-result
(:mod:`pipeline.domain.results`, which has its own copies today) can move onto them.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import pikepdf
from PIL import ImageCms
from pydantic import BaseModel, Field
from reportlab.lib import colors
from reportlab.lib.fonts import addMapping
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable

from pipeline.core.errors import ConfigurationError
from pipeline.domain.qr import qr_modules

__all__ = [
    "BOLD",
    "PageLayout",
    "SignatureBox",
    "SignatureSlot",
    "BOLD_ITALIC",
    "ITALIC",
    "REGULAR",
    "TZ",
    "as_pdfa_2b",
    "clock_vi",
    "date_vi",
    "local_time",
    "markup",
    "draw_qr",
    "register_fonts",
]

FONT_DIR = Path("/usr/share/fonts/truetype/noto")
# Noto Serif: administrative documents are set in a serif face (Decree 30/2020 asks for Times New Roman).
REGULAR, BOLD, ITALIC, BOLD_ITALIC = "NotoSerif", "NotoSerif-Bold", "NotoSerif-Italic", "NotoSerif-BoldItalic"
_FILES = {
    REGULAR: "NotoSerif-Regular.ttf",
    BOLD: "NotoSerif-Bold.ttf",
    ITALIC: "NotoSerif-Italic.ttf",
    BOLD_ITALIC: "NotoSerif-BoldItalic.ttf",
}
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
QR_QUIET_MODULES = 4  # the quiet zone round a QR code, in modules (ISO/IEC 18004)


@lru_cache(maxsize=1)
def register_fonts() -> None:
    """Register Noto Serif (four faces, one family for ``<b>``/``<i>`` in paragraphs) with reportlab."""
    try:
        for name, file in _FILES.items():
            pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / file)))
    except (OSError, TTFError) as exc:
        raise ConfigurationError(
            f"Noto Serif fonts missing in {FONT_DIR} (install fonts-noto-core): {exc}",
            "Thiếu phông chữ tiếng Việt để in biểu mẫu.",
        ) from exc
    for bold, italic, name in ((0, 0, REGULAR), (1, 0, BOLD), (0, 1, ITALIC), (1, 1, BOLD_ITALIC)):
        addMapping(REGULAR, bold, italic, name)


def local_time(ts: dt.datetime) -> dt.datetime:
    """``ts`` in Asia/Ho_Chi_Minh; a naive time is taken as already local."""
    return ts.replace(tzinfo=TZ) if ts.tzinfo is None else ts.astimezone(TZ)


def date_vi(ts: dt.datetime | dt.date) -> str:
    """``ngày 05 tháng 03 năm 2025``."""
    day = local_time(ts).date() if isinstance(ts, dt.datetime) else ts
    return f"ngày {day:%d} tháng {day:%m} năm {day:%Y}"


def clock_vi(ts: dt.datetime) -> str:
    """``09 giờ 30 phút, ngày 05 tháng 03 năm 2025``."""
    when = local_time(ts)
    return f"{when:%H} giờ {when:%M} phút, {date_vi(when)}"


def draw_qr(canvas: Canvas, payload: str, x: float, y: float, size: float) -> None:
    """A ``size``-point square QR code (ISO/IEC 18004, level M, 4-module quiet zone) with its lower-left corner
    at (``x``, ``y``): each row's runs of dark modules filled as rectangles, as reportlab's ``QrCodeWidget``
    draws them (the same marks, the same rasterisation) at a fraction of the cost: the widget in a drawing
    encodes the payload twice (once for its bounds) and builds a shape object per run (~0.1 s CPU per code);
    the symbol is reportlab's, its mask chosen in NumPy (:mod:`pipeline.domain.qr`).
    """
    modules = qr_modules(payload)
    module = size / (len(modules) + 2 * QR_QUIET_MODULES)
    canvas.saveState()
    canvas.setFillColor(colors.black)
    for r, row in enumerate(modules):
        c = 0
        for dark, run in itertools.groupby(map(bool, row)):
            n = sum(1 for _ in run)
            if dark:
                canvas.rect(x + (c + QR_QUIET_MODULES) * module, y + size - (r + QR_QUIET_MODULES + 1) * module,
                            n * module, module, stroke=0, fill=1)
            c += n
    canvas.restoreState()


@lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def as_pdfa_2b(pdf: bytes, *, xmp_only: bool = False, dc_type: str | None = None) -> bytes:
    """Declare a reportlab PDF PDF/A-2b: XMP metadata mirroring the document info (pdfaid part 2,
    conformance B, and ``dc:type`` if given) and an sRGB output intent. reportlab embeds every TrueType
    font and writes no encryption, JavaScript or transparency; what it draws must use only registered
    Noto fonts. ``xmp_only`` drops /Info once its content is in the XMP (see ``results.py`` for why).
    """
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        profile = pikepdf.Stream(doc, _srgb_profile())
        profile.N = 3
        doc.Root.OutputIntents = pikepdf.Array([
            pikepdf.Dictionary(
                Type=pikepdf.Name.OutputIntent,
                S=pikepdf.Name.GTS_PDFA1,
                OutputConditionIdentifier="sRGB IEC61966-2.1",
                RegistryName="http://www.color.org",
                Info="sRGB IEC61966-2.1",
                DestOutputProfile=doc.make_indirect(profile),
            )
        ])
        if "/Trapped" in doc.docinfo:  # no XMP counterpart that pikepdf carries over
            del doc.docinfo["/Trapped"]
        with doc.open_metadata(set_pikepdf_as_editor=False, update_docinfo=not xmp_only) as meta:
            meta.load_from_docinfo(doc.docinfo)
            meta["pdfaid:part"] = "2"
            meta["pdfaid:conformance"] = "B"
            if dc_type is not None:
                meta["dc:type"] = {dc_type}
        if xmp_only:
            del doc.trailer["/Info"]
        out = io.BytesIO()
        doc.save(out, deterministic_id=True)
    return out.getvalue()


class PageLayout(BaseModel):
    """Sizes in points of a printed document's page (from its labels file)."""

    margin_x: float = Field(gt=0)
    margin_top: float = Field(gt=0)
    margin_bottom: float = Field(gt=0)
    header_size: float = Field(gt=0)
    title_size: float = Field(gt=0)
    body_size: float = Field(gt=0)
    small_size: float = Field(gt=0)
    footer_size: float = Field(gt=0)
    signature_height: float = Field(ge=40)


def markup(value: str) -> str:
    """Dynamic text for a reportlab paragraph: NFC, markup-escaped."""
    return escape(unicodedata.normalize("NFC", value))


@dataclass(frozen=True)
class SignatureSlot:
    """Where the visible signature goes: a 0-based page and a box (x1, y1, x2, y2) in PDF points."""

    page: int
    box: tuple[float, float, float, float]


class SignatureBox(Flowable):
    """Empty space of a fixed size that records where it was drawn, for the visible signature stamp."""

    def __init__(self, width: float, height: float, sink: list[SignatureSlot]) -> None:
        super().__init__()
        self.box_width, self.box_height, self.sink = width, height, sink

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        self.width, self.height = min(self.box_width, availWidth), self.box_height
        return self.width, self.height

    def draw(self) -> None:
        x1, y1 = self.canv.absolutePosition(0, 0)
        x2, y2 = self.canv.absolutePosition(self.width, self.height)
        self.sink.append(SignatureSlot(self.canv.getPageNumber() - 1, (x1, y1, x2, y2)))
