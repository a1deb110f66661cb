"""Stage 1: validate the input cheaply, then yield its pages lazily as (index, image, dpi).

The input arrives identified (:mod:`pipeline.core.inputs`: files, formats by magic bytes). Every check
that can reject it runs in :func:`inspect_input`, before any page is decoded; :func:`iter_pages` holds one
page at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pikepdf
import pypdfium2 as pdfium
from PIL import Image, ImageSequence, UnidentifiedImageError

from ocr.models import OcrOptions
from pipeline.core.errors import (
    InputCorrupt,
    InputEmpty,
    InputEncrypted,
    InputInvalidPage,
    InputTooLarge,
    InputUnsupported,
)
from pipeline.core.inputs import FileFormat, Input, InputFile, identify_input

InputKind = Literal["pdf", "image", "folder"]

RENDER_DPI = 300
DEFAULT_DPI = 300
_A4_SHORT_INCHES = 8.27


@dataclass(frozen=True)
class InputInfo:
    """What :func:`inspect_input` found: the identified input, its kind and its page count."""

    input: Input
    kind: InputKind
    page_count: int

    @property
    def files(self) -> list[Path]:
        """The input's files in page order."""
        return self.input.paths

    @property
    def formats(self) -> list[FileFormat]:
        return [f.format for f in self.input.files if f.format is not None]


@dataclass(frozen=True)
class LoadedPage:
    """One decoded page; unpacks as ``index, image, dpi``."""

    index: int  # 1-based position in the input
    image: Image.Image
    dpi: int
    # Where the page's original image data can be copied from unchanged: (PDF, 0-based page), or a JPEG.
    pdf_source: tuple[Path, int] | None = None
    jpeg_file: Path | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.index, self.image, self.dpi))


def _open_image(path: Path, options: OcrOptions) -> Image.Image:
    """Open an image lazily (header only) and refuse it before decoding if it is too large."""
    # PIL's own bomb guard is global; set it from the options so even a decode path we missed is bounded.
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, f"image exceeds the pixel limit ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputCorrupt(f"{path.name}: cannot read image header: {exc}") from exc
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise InputInvalidPage(f"{path.name}: image has zero size")
    if w * h > options.max_image_pixels:
        im.close()
        raise _too_large(path, f"{w}x{h} px is more than {options.max_image_pixels} px")
    return im


def _too_large(path: Path, why: str) -> InputTooLarge:
    return InputTooLarge(f"{path.name}: {why}")


def _image_frames(path: Path, options: OcrOptions) -> int:
    im = _open_image(path, options)
    try:
        n = int(getattr(im, "n_frames", 1))
        if n > 1:  # every TIFF frame has its own size: check each header
            for i in range(n):
                im.seek(i)
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise InputInvalidPage(f"{path.name}: frame {i + 1} has zero size")
                if w * h > options.max_image_pixels:
                    raise _too_large(path, f"frame {i + 1} is {w}x{h} px")
        return n
    except EOFError as exc:
        raise InputCorrupt(f"{path.name}: truncated multi-page image") from exc
    finally:
        im.close()


def _open_pdf(path: Path) -> pikepdf.Pdf:
    try:
        return pikepdf.open(path)
    except pikepdf.PasswordError as exc:
        raise InputEncrypted(f"{path.name}: PDF is encrypted (password required)") from exc
    except pikepdf.PdfError as exc:
        raise InputCorrupt(f"{path.name}: damaged PDF: {exc}") from exc


def _page_size_pt(page: pikepdf.Page) -> tuple[float, float]:
    box = page.cropbox if "/CropBox" in page.obj else page.mediabox
    x0, y0, x1, y1 = (float(v) for v in box)
    return abs(x1 - x0), abs(y1 - y0)


def _check_pdf(path: Path, options: OcrOptions) -> int:
    with _open_pdf(path) as pdf:
        try:
            n = len(pdf.pages)
        except pikepdf.PdfError as exc:
            raise InputCorrupt(f"{path.name}: damaged page tree: {exc}") from exc
        if n == 0:
            raise InputEmpty(f"{path.name}: PDF has no pages", "Tệp PDF không có trang nào.")
        if n > options.max_pages:
            raise InputTooLarge(
                f"{path.name}: {n} pages is more than {options.max_pages}",
                f"Tệp có {n} trang, vượt quá giới hạn {options.max_pages} trang.",
            )
        repaired = bool(pdf.get_warnings())  # qpdf had to reconstruct the file: check what it rebuilt
        for i, page in enumerate(pdf.pages, start=1):
            try:
                w, h = _page_size_pt(page)
                images = _page_images(page)
                if repaired:
                    _check_repaired_page(page, images)
            except (pikepdf.PdfError, ValueError, TypeError, KeyError, AttributeError) as exc:
                raise InputCorrupt(f"{path.name}: page {i} is damaged: {exc}") from exc
            if w < 1 or h < 1:
                raise InputInvalidPage(f"{path.name}: page {i} has an empty MediaBox ({w}x{h} pt)")
            render_px = (w * RENDER_DPI / 72) * (h * RENDER_DPI / 72)
            if len(images) != 1 and render_px > options.max_image_pixels:
                raise _too_large(path, f"page {i} is {w:.0f}x{h:.0f} pt")
            for img in images:
                iw, ih = int(img.get("/Width", 0)), int(img.get("/Height", 0))
                if iw * ih > options.max_image_pixels:
                    raise _too_large(path, f"page {i} holds a {iw}x{ih} px image")
        return n


def _check_repaired_page(page: pikepdf.Page, images: list[pikepdf.Stream]) -> None:
    """Raise ValueError unless every XObject the page draws exists and every image has data."""
    res = page.obj.get("/Resources")
    xobjs = res.get("/XObject") if res is not None else None
    for instruction in pikepdf.parse_content_stream(page, "Do"):
        name = instruction.operands[0]
        if xobjs is None or name not in xobjs:
            raise ValueError(f"the page draws {name}, which is lost")
    for img in images:
        if not img.read_raw_bytes():
            raise ValueError("an image stream is empty")


def _page_images(page: pikepdf.Page) -> list[pikepdf.Stream]:
    res = page.obj.get("/Resources")
    xobjs = res.get("/XObject") if res is not None else None
    out: list[pikepdf.Stream] = []
    if xobjs is None:
        return out
    for key in list(xobjs.keys()):  # noqa: SIM118 (pikepdf Dictionary)
        obj = xobjs[key]
        if not isinstance(obj, pikepdf.Stream):
            raise ValueError(f"XObject {key} is missing")
        if obj.get("/Subtype") == "/Image":
            out.append(obj)
    return out


def inspect_input(source: Input | Path, options: OcrOptions) -> InputInfo:
    """Check an input without OCR — formats, page count, page sizes — or raise an InputError.

    ``source`` is an identified input (:func:`pipeline.core.inputs.identify_input`), or a path to identify.
    """
    ident = source if isinstance(source, Input) else identify_input(Path(source))
    if ident.is_folder:
        if not ident.files:
            raise InputEmpty(f"{ident.path}: folder holds no page images", "Thư mục không có ảnh trang nào.")
        count = 0
        for f in ident.files:
            if _file_format(f) == "pdf":
                raise InputUnsupported(
                    f"{f.name}: a folder must hold page images only, not PDFs",
                    "Thư mục chỉ được chứa ảnh trang (PNG, JPEG, TIFF), không chứa PDF.",
                )
            count += _image_frames(f.path, options)
            _check_count(ident.path, count, options)
        return InputInfo(ident, "folder", count)
    (f,) = ident.files
    fmt = _file_format(f)
    count = _check_pdf(f.path, options) if fmt == "pdf" else _image_frames(f.path, options)
    _check_count(f.path, count, options)
    return InputInfo(ident, "pdf" if fmt == "pdf" else "image", count)


def _file_format(f: InputFile) -> FileFormat:
    if f.size == 0:
        raise InputEmpty(f"{f.name}: file is empty (0 bytes)")
    if f.format is None:
        raise InputUnsupported(f"{f.name}: unknown file format (expected PDF, PNG, JPEG or TIFF)")
    return f.format


def _check_count(path: Path, count: int, options: OcrOptions) -> None:
    if count > options.max_pages:
        raise InputTooLarge(
            f"{path.name}: more than {options.max_pages} pages",
            f"Hồ sơ vượt quá giới hạn {options.max_pages} trang.",
        )


def image_dpi(im: Image.Image) -> int:
    """The image's dpi from its header, else a guess that the page is A4."""
    dpi = im.info.get("dpi")
    if dpi:
        try:
            x = float(dpi[0])
            if 50 <= x <= 2400:
                return round(x)
        except (TypeError, ValueError, IndexError):
            pass
    return max(72, min(600, round(min(im.size) / _A4_SHORT_INCHES)))


def _normalise_mode(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "RGB"):
        return im
    if im.mode in ("RGBA", "LA", "P", "PA") and ("transparency" in im.info or "A" in im.mode):
        bg = Image.new("RGB", im.size, "white")
        rgba = im.convert("RGBA")
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return im.point(lambda v: v / 256).convert("L")
    return im.convert("L" if im.mode in ("LA", "I", "F") else "RGB")


def _iter_image_file(path: Path, options: OcrOptions, start: int) -> Iterator[LoadedPage]:
    im = _open_image(path, options)
    try:
        for k, frame in enumerate(ImageSequence.Iterator(im)):
            try:
                page = _normalise_mode(frame.copy())
            except (OSError, SyntaxError, ValueError) as exc:
                raise InputCorrupt(f"{path.name}: cannot decode frame {k + 1}: {exc}") from exc
            jpeg = path if im.format == "JPEG" and im.mode in ("L", "RGB") else None
            yield LoadedPage(start + k, page, image_dpi(frame), jpeg_file=jpeg)
    finally:
        im.close()


def _single_full_page_image(page: pikepdf.Page) -> pikepdf.Stream | None:
    """The page's only image, if the page is nothing but that image stretched over the page."""
    images = _page_images(page)
    res = page.obj.get("/Resources")
    if len(images) != 1 or (res is not None and "/Font" in res):
        return None
    w, h = _page_size_pt(page)
    iw, ih = int(images[0].Width), int(images[0].Height)
    if iw <= 0 or ih <= 0 or abs((iw / ih) / (w / h) - 1) > 0.02:
        return None
    return images[0]


_PASSTHROUGH_SPACES = ("/DeviceGray", "/DeviceRGB")


def _can_pass_through(stream: pikepdf.Stream, rotate: int) -> bool:
    """Whether the image stream can go into the output PDF/A page as it is."""
    if rotate or stream.get("/SMask") is not None or stream.get("/ImageMask"):
        return False
    cs = stream.get("/ColorSpace")
    if isinstance(cs, pikepdf.Array) and len(cs) and cs[0] == pikepdf.Name.ICCBased:
        return True
    return str(cs) in _PASSTHROUGH_SPACES


def _pdf_page_image(pdf: pikepdf.Pdf, doc: pdfium.PdfDocument, i: int) -> tuple[Image.Image, int, bool]:
    page = pdf.pages[i]
    w_pt, _ = _page_size_pt(page)
    stream = _single_full_page_image(page)
    rotate = int(page.obj.get("/Rotate", 0)) % 360
    if stream is not None:
        try:
            im = _normalise_mode(pikepdf.PdfImage(stream).as_pil_image())
            dpi = round(im.width / (w_pt / 72))
            if rotate:
                im = im.rotate(-rotate, expand=True)  # /Rotate turns the page clockwise when shown
            return im, max(50, dpi), _can_pass_through(stream, rotate)
        except (pikepdf.PdfError, pikepdf.UnsupportedImageTypeError, NotImplementedError, OSError):
            pass  # e.g. JBIG2 or an exotic colour space: let pdfium render it
    bitmap = doc[i].render(scale=RENDER_DPI / 72, rotation=0)
    im = bitmap.to_pil()
    return _normalise_mode(im), RENDER_DPI, False


def _iter_pdf(path: Path) -> Iterator[LoadedPage]:
    with _open_pdf(path) as pdf:
        doc = pdfium.PdfDocument(str(path))
        try:
            for i in range(len(pdf.pages)):
                try:
                    im, dpi, keep = _pdf_page_image(pdf, doc, i)
                except pdfium.PdfiumError as exc:
                    raise InputCorrupt(f"{path.name}: page {i + 1} cannot be rendered: {exc}") from exc
                yield LoadedPage(i + 1, im, dpi, pdf_source=(path, i) if keep else None)
        finally:
            doc.close()


def iter_pages(info: InputInfo, options: OcrOptions) -> Iterator[LoadedPage]:
    """Yield the pages of an inspected input one at a time, in order, as (index, image, dpi).

    Images are mode ``1``, ``L`` or ``RGB``; rotation from a PDF ``/Rotate`` is already applied.
    """
    if info.kind == "pdf":
        yield from _iter_pdf(info.files[0])
        return
    index = 1
    for f in info.files:
        for page in _iter_image_file(f, options, index):
            yield page
            index += 1
