"""Reading PDFs back in tests: text, QR codes, every decoded stream."""

from __future__ import annotations

import io
import unicodedata

import pikepdf
import pypdfium2 as pdfium
import zxingcpp


def flat_text(pdf: bytes) -> str:
    """All pages' text, NFC, whitespace collapsed (lines wrap differently than the source strings)."""
    doc = pdfium.PdfDocument(pdf)
    try:
        text = " ".join(page.get_textpage().get_text_range() for page in doc)
    finally:
        doc.close()
    return " ".join(unicodedata.normalize("NFC", text).split())


def decode_qr(pdf: bytes, page_index: int = 0) -> list[str]:
    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[page_index].render(scale=300 / 72).to_pil()
    finally:
        doc.close()
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


def stream_bytes(pdf: bytes) -> bytes:
    """Every object of the file, streams decompressed: what anyone holding the file can read."""
    out = [pdf]
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        for obj in doc.objects:
            if isinstance(obj, pikepdf.Stream):
                try:
                    out.append(obj.read_bytes())
                except pikepdf.PdfError:
                    out.append(obj.read_raw_bytes())
        out.append(str(doc.open_metadata()).encode())
    return b"\n".join(out)
