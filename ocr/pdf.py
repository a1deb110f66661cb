"""Stage 5: the searchable PDF: each page the upright scan image with Tesseract's invisible text on top.

Pages are written one by one as single-page PDFs on disk and joined at the end, so memory stays bounded.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import pikepdf
from PIL import Image

JPEG_QUALITY = 70


def _image_stream(pdf: pikepdf.Pdf, image: Image.Image) -> pikepdf.Stream:
    """Encode a page image: CCITT G4 for 1-bit, JPEG for grey and colour."""
    w, h = image.size
    if image.mode == "1":
        g4 = _ccitt_g4(image)
        if g4 is not None:
            return pikepdf.Stream(
                pdf,
                g4,
                Type=pikepdf.Name.XObject,
                Subtype=pikepdf.Name.Image,
                Width=w,
                Height=h,
                ColorSpace=pikepdf.Name.DeviceGray,
                BitsPerComponent=1,
                Filter=pikepdf.Name.CCITTFaxDecode,
                DecodeParms=pikepdf.Dictionary(K=-1, Columns=w, Rows=h, BlackIs1=False),
            )
        # PIL packs mode "1" with 1 = white, which is what DeviceGray 1-bit means too.
        return pikepdf.Stream(
            pdf,
            zlib.compress(image.tobytes(), 6),
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=w,
            Height=h,
            ColorSpace=pikepdf.Name.DeviceGray,
            BitsPerComponent=1,
            Filter=pikepdf.Name.FlateDecode,
        )
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=False)
    return pikepdf.Stream(
        pdf,
        buf.getvalue(),
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=w,
        Height=h,
        ColorSpace=pikepdf.Name.DeviceGray if image.mode == "L" else pikepdf.Name.DeviceRGB,
        BitsPerComponent=8,
        Filter=pikepdf.Name.DCTDecode,
    )


def _ccitt_g4(image: Image.Image) -> bytes | None:
    """The raw G4 data of a 1-bit image (one TIFF strip), or None if libtiff is unavailable."""
    buf = io.BytesIO()
    try:
        image.save(buf, "TIFF", compression="group4", tiffinfo={278: image.height})  # 278: RowsPerStrip
    except (OSError, ValueError):
        return None
    buf.seek(0)
    with Image.open(buf) as tif:
        tags = tif.tag_v2  # type: ignore[attr-defined]
        offsets, counts = tags.get(273), tags.get(279)  # StripOffsets, StripByteCounts
        if tags.get(262) != 0 or offsets is None or counts is None or len(offsets) != 1:
            return None  # only WhiteIsZero single-strip data maps to BlackIs1=false as is
    data = buf.getvalue()
    return data[offsets[0] : offsets[0] + counts[0]]


def write_page_pdf(image: Image.Image, dpi: int, text_pdf: bytes | None, out: Path) -> Path:
    """Write a one-page PDF: ``image`` filling a page of its physical size, ``text_pdf`` laid over it."""
    w_pt, h_pt = image.width * 72 / dpi, image.height * 72 / dpi
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(w_pt, h_pt))
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=_image_stream(pdf, image)))
    page.Contents = pikepdf.Stream(pdf, f"q {w_pt:.4f} 0 0 {h_pt:.4f} 0 0 cm /Im0 Do Q\n".encode())
    if text_pdf:
        with pikepdf.open(io.BytesIO(text_pdf)) as text_doc:
            # Tesseract sizes its page from the OCR image's dpi; the overlay is scaled onto our page.
            page.add_overlay(text_doc.pages[0], pikepdf.Rectangle(0, 0, w_pt, h_pt))
            pdf.save(out)
    else:
        pdf.save(out)
    return out


def assemble(pages: Sequence[Path], out: Path) -> Path:
    """Join single-page PDFs in order into ``out``."""
    result = pikepdf.new()
    sources: list[pikepdf.Pdf] = []
    try:
        for p in pages:
            src = pikepdf.open(p)
            sources.append(src)
            result.pages.extend(src.pages)
        result.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    finally:
        for src in sources:
            src.close()
        result.close()
    return out
