"""Stage 5: the searchable PDF: each page the upright scan image with Tesseract's invisible text on top.

Pages are written one by one as single-page PDFs on disk and joined at the end, so memory stays bounded.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pikepdf
from PIL import Image

from ocr.models import Word
from ocr.recognize import tessdata_file

JPEG_QUALITY = 85  # only for pages that must be re-encoded (PNG/TIFF inputs, turned PDF pages)


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


_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end
"""
CHAR_WIDTH = 500  # every glyph of the glyphless font is this wide (1/1000 em)


@lru_cache(maxsize=1)
def _glyphless_font_streams() -> tuple[bytes, int, bytes, bytes]:
    """Flate-compressed (font program, its length, CIDToGIDMap, ToUnicode) of the glyphless font, made
    once per process: every page's text layer embeds the same ones.

    The font is Tesseract's ``pdf.ttf`` (one empty glyph): text that is there to be found, not seen.
    """
    path = tessdata_file("pdf.ttf")
    if path is None:
        raise FileNotFoundError("pdf.ttf (Tesseract's glyphless font) not found in any tessdata directory")
    program = path.read_bytes()
    cid_to_gid = b"\x00\x01" * 65536  # every code drawn by glyph 1
    return zlib.compress(program, 9), len(program), zlib.compress(cid_to_gid, 9), zlib.compress(_TO_UNICODE, 9)


def _flate_stream(pdf: pikepdf.Pdf, compressed: bytes) -> pikepdf.Stream:
    stream = pikepdf.Stream(pdf, compressed)
    stream.Filter = pikepdf.Name.FlateDecode
    return stream


def _glyphless_font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    """A Type0 font whose codes are UTF-16 code units, every one drawn by the empty glyph 1."""
    program, program_length, cid_to_gid, to_unicode = _glyphless_font_streams()
    font_file = _flate_stream(pdf, program)
    font_file.Length1 = program_length
    descriptor = pikepdf.Dictionary(
        Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name.GlyphLessFont, Flags=5,
        FontBBox=[0, 0, CHAR_WIDTH, 1000], ItalicAngle=0, Ascent=1000, Descent=0, CapHeight=1000,
        StemV=80, FontFile2=pdf.make_indirect(font_file),
    )
    cid_font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.CIDFontType2, BaseFont=pikepdf.Name.GlyphLessFont,
        CIDSystemInfo=pikepdf.Dictionary(
            Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
        ),
        FontDescriptor=pdf.make_indirect(descriptor), DW=CHAR_WIDTH,
        CIDToGIDMap=pdf.make_indirect(_flate_stream(pdf, cid_to_gid)),
    )
    return pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type0, BaseFont=pikepdf.Name.GlyphLessFont,
            Encoding=pikepdf.Name("/Identity-H"), DescendantFonts=[pdf.make_indirect(cid_font)],
            ToUnicode=pdf.make_indirect(_flate_stream(pdf, to_unicode)),
        )
    )


def text_layer_pdf(lines: Sequence[Sequence[Word]], width_px: int, height_px: int, dpi: int) -> bytes:
    """A one-page PDF (the OCR image's size at ``dpi``) of invisible text: each line's words in order,
    each word stretched over its box, a space between words. Lines are drawn in the order given, which
    is the order text extraction returns them in."""
    s = 72 / dpi
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(width_px * s, height_px * s))
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F0=_glyphless_font(pdf)))
    ops = ["BT", "3 Tr"]
    for line in lines:
        words = sorted(line, key=lambda w: w.left)
        if not words:
            continue
        top = min(w.top for w in words)
        bottom = max(w.top + w.height for w in words)
        size = max(bottom - top, 1) * s
        baseline = (height_px - bottom) * s
        ops.append(f"/F0 {size:.2f} Tf")
        for i, word in enumerate(words):
            text = word.text if i == len(words) - 1 else word.text + " "
            span = (words[i + 1].left - word.left) if i < len(words) - 1 else word.width
            natural = len(text) * size * CHAR_WIDTH / 1000
            stretch = 100 * max(span, 1) * s / natural
            codes = text.encode("utf-16-be").hex()
            ops.append(f"{stretch:.2f} Tz 1 0 0 1 {word.left * s:.2f} {baseline:.2f} Tm <{codes}> Tj")
    ops.append("ET")
    page.Contents = pikepdf.Stream(pdf, "\n".join(ops).encode())
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def text_to_original(
    original_size: tuple[int, int],
    upright_size: tuple[int, int],
    dpi: int,
    rotation: int,
    skew: float,
    flattened: tuple[np.ndarray, tuple[int, int]] | None = None,
) -> np.ndarray:
    """3x3 matrix from the upright, levelled page's PDF space to the original image's PDF space (points).

    The OCR ran on the original turned by ``rotation`` (PIL transpose) then levelled by ``skew`` (OpenCV,
    about the centre); the text layer is mapped back so that it lies on the original, unchanged image.
    """
    wo, ho = original_size
    wu, hu = upright_size
    back = np.eye(3)
    if flattened is not None:
        # A photo's page was flattened by a homography; the text layer takes its closest affine map.
        homography, (wf, hf) = flattened
        rect = np.array([[0, 0], [wf, 0], [wf, hf], [0, hf]], dtype=np.float64)
        photo = cv2.perspectiveTransform(rect[None], homography)[0]
        design = np.hstack([rect, np.ones((4, 1))])
        affine, *_ = np.linalg.lstsq(design, photo, rcond=None)
        back = np.vstack([affine.T, [0, 0, 1]])
        wo, ho = wf, hf  # the quarter turn below applies to the flattened page
    s = 72 / dpi
    turn = {  # original pixel -> turned pixel (continuous coordinates)
        0: [[1, 0, 0], [0, 1, 0]],
        90: [[0, 1, 0], [-1, 0, wo]],
        180: [[-1, 0, wo], [0, -1, ho]],
        270: [[0, -1, ho], [1, 0, 0]],
    }[rotation % 360]
    t = np.vstack([np.array(turn, dtype=np.float64), [0, 0, 1]])
    a = np.vstack([cv2.getRotationMatrix2D((wu / 2, hu / 2), skew, 1.0), [0, 0, 1]])
    to_pdf_o = np.array([[s, 0, 0], [0, -s, original_size[1] * s], [0, 0, 1]])
    to_pdf_u = np.array([[s, 0, 0], [0, -s, hu * s], [0, 0, 1]])
    return to_pdf_o @ back @ np.linalg.inv(t) @ np.linalg.inv(a) @ np.linalg.inv(to_pdf_u)


def write_page_pdf(
    image: Image.Image,
    dpi: int,
    text_pdf: bytes | None,
    out: Path,
    *,
    rotation: int = 0,
    skew: float = 0.0,
    jpeg: bytes | None = None,
    placeholder: bool = False,
    flattened: tuple[np.ndarray, tuple[int, int]] | None = None,
) -> Path:
    """Write a one-page PDF: the original ``image`` filling a page of its physical size, shown upright
    through /Rotate, with ``text_pdf`` (Tesseract's text-only page of the turned and levelled image)
    mapped onto it word for word.

    ``flattened``: (homography from the flattened page to the photo, flattened size) for phone photos.
    ``jpeg``: the image's own JPEG bytes, embedded as they are. ``placeholder``: draw a 1x1 stand-in that
    :func:`assemble` replaces with the source PDF's image stream (no re-encoding).
    """
    w_pt, h_pt = image.width * 72 / dpi, image.height * 72 / dpi
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(w_pt, h_pt))
    if placeholder:
        stream = _image_stream(pdf, Image.new("L", (1, 1), 255))
    elif jpeg is not None and image.mode in ("L", "RGB"):
        stream = _jpeg_stream(pdf, jpeg, image)
    else:
        stream = _image_stream(pdf, image)
    xobjects = pikepdf.Dictionary(Im0=stream)
    page.Resources = pikepdf.Dictionary(XObject=xobjects)
    content = f"q {w_pt:.4f} 0 0 {h_pt:.4f} 0 0 cm /Im0 Do Q\n"
    if rotation % 360:
        page.Rotate = (360 - rotation) % 360  # /Rotate turns clockwise for display; the content was turned cw
    if text_pdf:
        with pikepdf.open(io.BytesIO(text_pdf)) as text_doc:
            text_page = text_doc.pages[0]
            tw, th = (float(v) for v in text_page.mediabox[2:])
            form = pdf.copy_foreign(text_page.as_form_xobject())
            xobjects.Txt0 = form
            w, h = flattened[1] if flattened is not None else image.size
            turned = (h, w) if rotation % 180 else (w, h)
            m = text_to_original(image.size, turned, dpi, rotation, skew, flattened)
            # Tesseract sizes its page from the OCR image; scale it onto the upright page first.
            m = m @ np.diag([turned[0] * 72 / dpi / tw, turned[1] * 72 / dpi / th, 1.0])
            cm = " ".join(f"{v:.6f}" for v in (m[0, 0], m[1, 0], m[0, 1], m[1, 1], m[0, 2], m[1, 2]))
            content += f"q {cm} cm /Txt0 Do Q\n"
            page.Contents = pikepdf.Stream(pdf, content.encode())
            pdf.save(out)
    else:
        page.Contents = pikepdf.Stream(pdf, content.encode())
        pdf.save(out)
    return out


def _jpeg_stream(pdf: pikepdf.Pdf, data: bytes, image: Image.Image) -> pikepdf.Stream:
    return pikepdf.Stream(
        pdf,
        data,
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=image.width,
        Height=image.height,
        ColorSpace=pikepdf.Name.DeviceGray if image.mode == "L" else pikepdf.Name.DeviceRGB,
        BitsPerComponent=8,
        Filter=pikepdf.Name.DCTDecode,
    )


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_pdfa(pdf: pikepdf.Pdf, title: str = "") -> None:
    """Declare PDF/A-2b: XMP pdfaid metadata and an sRGB output intent (fonts and images already comply)."""
    icc = pikepdf.Stream(pdf, _srgb_profile())
    icc.N = 3
    pdf.Root.OutputIntents = pikepdf.Array(
        [
            pdf.make_indirect(
                pikepdf.Dictionary(
                    Type=pikepdf.Name.OutputIntent,
                    S=pikepdf.Name.GTS_PDFA1,
                    OutputConditionIdentifier=pikepdf.String("sRGB"),
                    Info=pikepdf.String("sRGB IEC61966-2.1"),
                    DestOutputProfile=pdf.make_indirect(icc),
                )
            )
        ]
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["pdfaid:part"] = "2"
        meta["pdfaid:conformance"] = "B"
        meta["pdf:Producer"] = "hoso"
        meta["xmp:CreatorTool"] = "hoso (Tesseract OCR)"
        meta["xmp:CreateDate"] = now
        meta["xmp:ModifyDate"] = now
        meta["xmp:MetadataDate"] = now
        if title:
            meta["dc:title"] = title


def assemble(pages: Sequence[Path], out: Path, sources: Sequence[tuple[Path, int] | None] = ()) -> Path:
    """Join single-page PDFs in order into a PDF/A-2b ``out``.

    ``sources[i]``, when given, names the input PDF and page whose image stream replaces page i's
    placeholder image as it is, without decoding or re-encoding.
    """
    result = pikepdf.new()
    opened: list[pikepdf.Pdf] = []
    inputs: dict[Path, pikepdf.Pdf] = {}
    try:
        for i, p in enumerate(pages):
            src = pikepdf.open(p)
            opened.append(src)
            result.pages.append(src.pages[0])
            origin = sources[i] if i < len(sources) else None
            if origin is not None:
                if origin[0] not in inputs:
                    inputs[origin[0]] = pikepdf.open(origin[0])
                image = _only_image(inputs[origin[0]].pages[origin[1]])
                result.pages[-1].Resources.XObject.Im0 = result.copy_foreign(image)
        make_pdfa(result)
        result.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    finally:
        for src in [*opened, *inputs.values()]:
            src.close()
        result.close()
    return out


def _only_image(page: pikepdf.Page) -> pikepdf.Object:
    xobjects = page.obj.Resources.get("/XObject")
    images = [x for x in (xobjects or {}).values() if x.get("/Subtype") == pikepdf.Name.Image]
    if len(images) != 1:
        raise ValueError("source page no longer holds exactly one image")
    return images[0]
