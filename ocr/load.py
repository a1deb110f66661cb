"""Stage 1: validate the input cheaply, then yield its pages lazily as (index, image, dpi).

The input arrives identified (:mod:`pipeline.core.inputs`: files, formats by magic bytes). Every check
that can reject it runs in :func:`inspect_input`, before any page is decoded: formats, page counts, page
sizes, and what decoding each page would cost (:mod:`ocr.bounds`: pixels, inflated streams, nested forms,
image headers against their data). :func:`iter_pages` holds one page at a time and decodes it at most at
:data:`WORK_PIXELS`: a larger page is decoded reduced (JPEG at 1/2, 1/4 or 1/8 scale, a PDF page rendered
smaller, other images reduced once decoded), so OCR memory stays bounded whatever the input.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pikepdf
import pypdfium2 as pdfium
from PIL import Image, UnidentifiedImageError

from ocr.bounds import (
    JPEG_HEAD,
    MAX_DECODE_BYTES,
    MAX_DRAWS,
    MODE_BYTES,
    Frame,
    PdfBounds,
    corrupt,
    invalid_page,
    jpeg_frames,
    pdf_syntax,
    png_info,
    tiff_frames,
    too_large,
)
from ocr.models import OcrOptions
from pipeline.core.errors import InputEmpty, InputEncrypted, InputTooLarge, InputUnsupported
from pipeline.core.inputs import FileFormat, Input, InputFile, display_name, identify_input, open_regular

InputKind = Literal["pdf", "image", "folder"]

RENDER_DPI = 300
DEFAULT_DPI = 300
_A4_SHORT_INCHES = 8.27
# Smaller than this is not a scanned page (a 10x10 pt page cannot even hold the officer's stamp).
MIN_PAGE_INCHES = 1.0
TINY_PAGE_VI = "Trang quá nhỏ (cạnh dưới 2,5 cm) để là một trang quét; vui lòng quét lại cả trang giấy."
# The most pixels a page is decoded at for OCR: A4 at ~500 dpi. OCR reads best at 300 dpi; a 100 Mpx
# colour page decoded whole would take Pillow 400 MB before any work on it.
WORK_PIXELS = 25_000_000
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
# A balanced page tree of a million pages is 7 levels deep; pdfium gives up beyond 1024.
MAX_PAGE_TREE_DEPTH = 64
_DAMAGED = (pikepdf.PdfError, ValueError, TypeError, KeyError, AttributeError, IndexError, struct.error)
# Actions that run something when the file is opened or touched; a scan never has them.
_ACTIVE_ACTIONS = frozenset({"/JavaScript", "/Launch"})


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


# --- image files -----------------------------------------------------------------------------------


@contextmanager
def _open_image(f: InputFile, fmt: FileFormat, options: OcrOptions) -> Iterator[Image.Image]:
    """Open an image file of the format its bytes announce (Pillow may not pick another), header only."""
    # PIL's own bomb guard is global; set it from the options so even a decode path we missed is bounded.
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels
    where = display_name(f.name)
    with open_regular(f.path) as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fh, formats=[_PIL_FORMATS[fmt]])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise too_large(where, f"image exceeds the pixel limit ({exc})") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise corrupt(where, f"cannot read image header: {exc}") from exc
        try:
            yield im
        finally:
            im.close()


def _header_frames(f: InputFile, fmt: FileFormat, options: OcrOptions) -> list[Frame]:
    """The frames an image file's own header declares, read without Pillow (see :mod:`ocr.bounds`)."""
    where = display_name(f.name)
    with open_regular(f.path) as fh:
        if fmt == "png":
            info = png_info(fh, where, options.max_image_pixels, options.max_pages)
            return [Frame(info.width, info.height)] * info.frames
        if fmt == "tiff":
            return tiff_frames(fh, where, options.max_pages)
        head = fh.read(JPEG_HEAD)
        frames = jpeg_frames(head, where)
        if len({(fr.width, fr.height) for fr in frames}) > 1:
            raise corrupt(where, "JPEG frame headers disagree on the image size")
        buffered = frames[0].buffered or _jpeg_scans(fh, head) > 1
        return [Frame(frames[0].width, frames[0].height, frames[0].components, buffered)]


def _check_declared(f: InputFile, frames: list[Frame], options: OcrOptions) -> None:
    """Refuse frames whose own headers declare too many pixels, before Pillow reads anything."""
    for k, fr in enumerate(frames):
        at = f"{display_name(f.name)}: frame {k + 1}" if len(frames) > 1 else display_name(f.name)
        if fr.width <= 0 or fr.height <= 0:
            raise invalid_page(at, f"its header declares {fr.width}x{fr.height} px")
        if fr.width * fr.height > options.max_image_pixels:
            raise too_large(at, f"its header declares {fr.width}x{fr.height} px, more than "
                            f"{options.max_image_pixels} px")


def _jpeg_scans(fh: Any, head: bytes) -> int:
    """Scans of a JPEG file, up to 2 (0xFFDA never occurs inside entropy-coded data)."""
    count, tail, chunk = 0, b"", head
    while chunk and count < 2:
        count += (tail + chunk).count(b"\xff\xda") - tail.count(b"\xff\xda")
        tail, chunk = chunk[-1:], fh.read(1 << 20)
    return count


def _draft_factor(w: int, h: int) -> int:
    """The JPEG scale (1, 2, 4, 8) that decodes a w x h image at no more than WORK_PIXELS."""
    for f in (1, 2, 4, 8):
        if math.ceil(w / f) * math.ceil(h / f) <= WORK_PIXELS:
            return f
    return 8


def _image_frames(f: InputFile, fmt: FileFormat, options: OcrOptions) -> int:
    """Check an image file's frames from their headers: size, pixels, decoding memory, physical size."""
    where = display_name(f.name)
    declared = _header_frames(f, fmt, options)
    _check_declared(f, declared, options)
    with _open_image(f, fmt, options) as im:
        count = 1 if fmt == "jpeg" else len(declared)
        found = 1 if fmt == "jpeg" else int(getattr(im, "n_frames", 1))
        if found != count:
            raise corrupt(where, f"its header declares {count} frames, the decoder finds {found}")
        for k in range(count):
            at = f"{where}: frame {k + 1}" if count > 1 else where
            try:
                if k:
                    im.seek(k)
            except (EOFError, OSError, ValueError, struct.error) as exc:
                raise corrupt(where, f"truncated multi-page image ({exc})") from exc
            w, h = im.size
            if w <= 0 or h <= 0:
                raise invalid_page(at, "image has zero size")
            if (w, h) != (declared[k].width, declared[k].height) and fmt != "png":
                raise corrupt(at, f"its header declares {declared[k].width}x{declared[k].height} px, "
                              f"the decoder would make {w}x{h}")
            if w * h > options.max_image_pixels:
                raise too_large(at, f"{w}x{h} px is more than {options.max_image_pixels} px")
            _check_decoding(at, w, h, im.mode, declared[k], fmt)
            dpi = image_dpi(im)
            if min(w, h) / dpi < MIN_PAGE_INCHES:
                raise invalid_page(at, f"the page is {w / dpi:.2f}x{h / dpi:.2f} in ({w}x{h} px at {dpi} dpi), "
                               f"smaller than {MIN_PAGE_INCHES:g} in", TINY_PAGE_VI)
        return count


def _check_decoding(at: str, w: int, h: int, mode: str, frame: Frame, fmt: FileFormat) -> None:
    """Refuse an image whose decoding alone would take more than MAX_DECODE_BYTES."""
    f = _draft_factor(w, h) if fmt == "jpeg" else 1
    need = math.ceil(w / f) * math.ceil(h / f) * MODE_BYTES.get(mode, 13)
    if frame.buffered:  # progressive/multi-scan JPEG: libjpeg keeps 2-byte coefficients of the full image
        need = max(need, w * h * frame.components * 2)
    if need > MAX_DECODE_BYTES:
        raise too_large(at, f"decoding a {w}x{h} px {mode} image would take {need >> 20} MB")


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


def _fit(page: Image.Image) -> Image.Image:
    """A decoded page in mode 1, L or RGB, reduced (box filter) to at most WORK_PIXELS."""
    page = _normalise_mode(page)
    if page.width * page.height <= WORK_PIXELS:
        return page
    factor = math.ceil(math.sqrt(page.width * page.height / WORK_PIXELS))
    if page.mode != "1":
        return page.reduce(factor)
    # A bilevel page is reduced in grey (thin strokes stay visible), band by band: a grey copy of a
    # 100 Mpx page would take another 100 MB.
    out = Image.new("L", (math.ceil(page.width / factor), math.ceil(page.height / factor)))
    step = factor * 256
    for top in range(0, page.height, step):
        band = page.crop((0, top, page.width, min(page.height, top + step))).convert("L").reduce(factor)
        out.paste(band, (0, top // factor))
    return out


def _iter_image_file(f: InputFile, fmt: FileFormat, options: OcrOptions, start: int) -> Iterator[LoadedPage]:
    where = display_name(f.name)
    with _open_image(f, fmt, options) as im:
        count = 1 if fmt == "jpeg" else int(getattr(im, "n_frames", 1))
        for k in range(count):
            try:
                if k:
                    im.seek(k)
                w, h = im.size
                dpi = image_dpi(im)
                original_mode = im.mode
                factor = _draft_factor(w, h) if fmt == "jpeg" else 1
                if factor > 1:  # DCT scaling: decoded at 1/2, 1/4 or 1/8 of the size, never whole
                    im.draft(im.mode, (math.ceil(w / factor), math.ceil(h / factor)))
                im.load()
                page = _fit(im)
                if page is im:  # the next frame (or closing the file) reuses ``im``: hand out a copy
                    page = im.copy()
                page.info = {}  # not the file's encoding (a fax TIFF's group4 cannot write a grey page)
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
                raise corrupt(where, f"cannot decode frame {k + 1}: {exc}") from exc
            kept = page.size == (w, h)
            jpeg = f.path if fmt == "jpeg" and original_mode in ("L", "RGB") and kept else None
            yield LoadedPage(start + k, page, max(1, round(dpi * page.width / w)), jpeg_file=jpeg)


# --- PDF ---------------------------------------------------------------------------------------------


@contextmanager
def _open_pdf(path: Path) -> Iterator[pikepdf.Pdf]:
    where = display_name(path.name)
    with open_regular(path) as fh:
        try:
            pdf = pikepdf.open(fh)
        except pikepdf.PasswordError as exc:
            raise InputEncrypted(f"{where}: PDF is encrypted (password required)") from exc
        except pikepdf.PdfError as exc:
            raise corrupt(where, f"damaged PDF: {_qpdf_message(exc)}") from exc
        with pdf:
            yield pdf


def _qpdf_message(exc: Exception) -> str:
    """qpdf's message without the name it gives a file read from a stream."""
    return re.sub(r"^stream <[^>]*>:?\s*", "", str(exc))


def _inherited(page: pikepdf.Page, key: str) -> Any:
    """A page attribute that may be set on the page or any of its ancestors in the page tree."""
    node: Any = page.obj
    for _ in range(MAX_PAGE_TREE_DEPTH):
        if not isinstance(node, pikepdf.Dictionary):
            return None
        value = node.get(key)
        if value is not None:
            return value
        node = node.get("/Parent")
    return None


def _page_tree_depth(page: pikepdf.Page) -> int:
    node: Any = page.obj.get("/Parent")
    depth = 0
    while isinstance(node, pikepdf.Dictionary) and depth <= MAX_PAGE_TREE_DEPTH:
        depth += 1
        node = node.get("/Parent")
    return depth


def _page_size_pt(page: pikepdf.Page) -> tuple[float, float]:
    """The page's crop box (its media box when it has none) in points, times its /UserUnit."""
    box = page.cropbox
    if len(box) != 4:
        raise ValueError(f"a page box of {len(box)} numbers")
    x0, y0, x1, y1 = (float(v) for v in box)
    unit = float(page.obj.get("/UserUnit", 1))
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, unit)) or not 0 < unit <= 75_000:
        raise ValueError("a page box or user unit out of range")
    return abs(x1 - x0) * unit, abs(y1 - y0) * unit


def _rotation(page: pikepdf.Page, where: str) -> int:
    value = _inherited(page, "/Rotate")
    if value is None:
        return 0
    try:
        turn = float(value)
    except (TypeError, ValueError):
        turn = math.nan
    if not math.isfinite(turn) or turn % 90:
        raise invalid_page(where, f"/Rotate {value} is not a multiple of 90",
                           "Trang có góc xoay không hợp lệ; vui lòng xuất lại tệp PDF hoặc quét lại.")
    return int(turn) % 360


def _check_pdf(f: InputFile, options: OcrOptions) -> int:
    where = display_name(f.name)
    with open_regular(f.path) as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        pdf_syntax(raw, where)  # before qpdf builds a single object from the file
    with _open_pdf(f.path) as pdf:
        # Warnings at this point mean qpdf reconstructed the file (later ones are about single objects).
        repaired = bool(pdf.get_warnings())
        try:
            n = len(pdf.pages)
        except pikepdf.PdfError as exc:
            raise corrupt(where, f"damaged page tree: {_qpdf_message(exc)}") from exc
        if n == 0 and repaired:
            raise corrupt(where, "no page survives the repair of the damaged file")
        if n == 0:
            raise InputEmpty(f"{where}: PDF has no pages", "Tệp PDF không có trang nào.")
        if n > options.max_pages:
            raise InputTooLarge(
                f"{where}: {n} pages is more than {options.max_pages}",
                f"Tệp có {n} trang, vượt quá giới hạn {options.max_pages} trang.",
            )
        try:
            active = _active_content(pdf)
        except _DAMAGED as exc:
            raise corrupt(where, f"damaged document catalog: {exc}") from exc
        if active:
            raise InputUnsupported(
                f"{where}: the PDF carries {active}; a scan never does",
                "Tệp PDF chứa mã tự chạy (JavaScript hoặc lệnh mở chương trình); hệ thống chỉ nhận bản quét "
                "hoặc PDF không chứa mã. Vui lòng quét lại hoặc xuất lại tệp.",
            )
        bounds = PdfBounds(where, n, options.max_image_pixels)
        for i, page in enumerate(pdf.pages, start=1):
            at = f"{where}: page {i}"
            try:
                _check_page(page, at, bounds, options)
                if repaired and page.obj.get("/Contents") is None:
                    raise corrupt(at, "lost its content in the damaged file")
            except _DAMAGED as exc:
                raise corrupt(at, f"is damaged: {_qpdf_message(exc)}") from exc
        return n


def _check_page(page: pikepdf.Page, at: str, bounds: PdfBounds, options: OcrOptions) -> None:
    if _page_tree_depth(page) > MAX_PAGE_TREE_DEPTH:
        raise corrupt(at, f"sits more than {MAX_PAGE_TREE_DEPTH} levels deep in the page tree")
    w, h = _page_size_pt(page)
    if w < 1 or h < 1:
        raise invalid_page(at, f"has an empty MediaBox ({w:g}x{h:g} pt)")
    if min(w, h) < 72 * MIN_PAGE_INCHES:
        raise invalid_page(at, f"is {w:g}x{h:g} pt, smaller than {MIN_PAGE_INCHES:g} in", TINY_PAGE_VI)
    _rotation(page, at)
    resources = _inherited(page, "/Resources")
    bounds.reach(page.obj, resources, at)
    bounds.draw(page.obj, resources, at)
    render_px = (w * RENDER_DPI / 72) * (h * RENDER_DPI / 72)
    if render_px > options.max_image_pixels and _single_full_page_image(page) is None:
        raise too_large(
            at, f"is {w:.0f}x{h:.0f} pt: {render_px / 1e6:.0f} Mpx at {RENDER_DPI} dpi, more than "
            f"{options.max_image_pixels / 1e6:.0f} Mpx",
            f"Trang quá khổ ({w / 72:.0f}×{h / 72:.0f} inch); vui lòng quét lại trang giấy ở khổ thật (A4, A3).",
        )


def _active_content(pdf: pikepdf.Pdf) -> str | None:
    """The kind of the first action that would run something (JavaScript, launching a program), if any."""
    root = pdf.Root
    names = root.get("/Names")
    if isinstance(names, pikepdf.Dictionary) and "/JavaScript" in names:
        return "a JavaScript name tree"
    actions: list[Any] = [root.get("/OpenAction"), *_dict_values(root.get("/AA"))]
    for page in pdf.pages:
        actions.extend(_dict_values(page.obj.get("/AA")))
        annots = page.obj.get("/Annots")
        for _, annot in zip(range(MAX_DRAWS), annots if isinstance(annots, pikepdf.Array) else [], strict=False):
            if isinstance(annot, pikepdf.Dictionary):
                actions.append(annot.get("/A"))
                actions.extend(_dict_values(annot.get("/AA")))
    form = root.get("/AcroForm")
    fields = list(form.get("/Fields", [])) if isinstance(form, pikepdf.Dictionary) else []
    for _, fld in zip(range(10_000), fields, strict=False):
        if isinstance(fld, pikepdf.Dictionary):
            actions.extend(_dict_values(fld.get("/AA")))
    for action in actions:
        for _ in range(100):  # an action's /Next chain
            if not isinstance(action, pikepdf.Dictionary):
                break
            kind = action.get("/S")
            if isinstance(kind, pikepdf.Name) and str(kind) in _ACTIVE_ACTIONS:
                return f"a {str(kind)[1:]} action"
            action = action.get("/Next")
            if isinstance(action, pikepdf.Array):
                action = action[0] if len(action) else None
    return None


def _dict_values(obj: Any) -> list[Any]:
    return list(obj.values()) if isinstance(obj, pikepdf.Dictionary) else []


def inspect_input(source: Input | Path, options: OcrOptions) -> InputInfo:
    """Check an input without decoding a page — formats, page counts, page sizes, what decoding each page
    would cost — or raise an InputError.

    ``source`` is an identified input (:func:`pipeline.core.inputs.identify_input`), or a path to identify.
    """
    ident = source if isinstance(source, Input) else identify_input(Path(source))
    if ident.is_folder:
        if not ident.files:
            raise InputEmpty(
                f"{display_name(str(ident.path), 240)}: folder holds no page images", "Thư mục không có ảnh trang nào."
            )
        count = 0
        for f in ident.files:
            fmt = _file_format(f)
            if fmt == "pdf":
                raise InputUnsupported(
                    f"{display_name(f.name)}: a folder must hold page images only, not PDFs",
                    "Thư mục chỉ được chứa ảnh trang (PNG, JPEG, TIFF), không chứa PDF.",
                )
            count += _image_frames(f, fmt, options)
            _check_count(ident.path, count, options)
        return InputInfo(ident, "folder", count)
    (f,) = ident.files
    fmt = _file_format(f)
    count = _check_pdf(f, options) if fmt == "pdf" else _image_frames(f, fmt, options)
    _check_count(f.path, count, options)
    return InputInfo(ident, "pdf" if fmt == "pdf" else "image", count)


def _file_format(f: InputFile) -> FileFormat:
    if f.size == 0:
        raise InputEmpty(f"{display_name(f.name)}: file is empty (0 bytes)")
    if f.format is None:
        raise InputUnsupported(f"{display_name(f.name)}: unknown file format (expected PDF, PNG, JPEG or TIFF)")
    return f.format


def _check_count(path: Path, count: int, options: OcrOptions) -> None:
    if count > options.max_pages:
        raise InputTooLarge(
            f"{display_name(path.name)}: more than {options.max_pages} pages",
            f"Hồ sơ vượt quá giới hạn {options.max_pages} trang.",
        )


def _page_images(page: pikepdf.Page) -> list[pikepdf.Stream]:
    res = _inherited(page, "/Resources")
    xobjs = res.get("/XObject") if isinstance(res, pikepdf.Dictionary) else None
    out: list[pikepdf.Stream] = []
    if not isinstance(xobjs, pikepdf.Dictionary):
        return out
    for key in list(xobjs.keys()):  # noqa: SIM118 (pikepdf Dictionary)
        obj = xobjs[key]
        if not isinstance(obj, pikepdf.Stream):
            raise ValueError(f"XObject {key} is missing")
        if obj.get("/Subtype") == "/Image":
            out.append(obj)
    return out


def _single_full_page_image(page: pikepdf.Page) -> pikepdf.Stream | None:
    """The page's only image, if the page is nothing but that image stretched over the page."""
    images = _page_images(page)
    res = _inherited(page, "/Resources")
    if len(images) != 1 or (isinstance(res, pikepdf.Dictionary) and "/Font" in res):
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
    rotate = _rotation(page, f"page {i + 1}")
    if stream is not None and int(stream.Width) * int(stream.Height) <= WORK_PIXELS:
        try:
            im = _normalise_mode(pikepdf.PdfImage(stream).as_pil_image())
            dpi = round(im.width / (w_pt / 72))
            if rotate:
                im = im.rotate(-rotate, expand=True)  # /Rotate turns the page clockwise when shown
            return im, max(50, dpi), _can_pass_through(stream, rotate)
        except (pikepdf.PdfError, pikepdf.UnsupportedImageTypeError, NotImplementedError, OSError, ValueError):
            pass  # e.g. JBIG2 or an exotic colour space: let pdfium render it
    # pdfium draws images into the bitmap line by line: a large page image never sits whole in memory.
    pw, ph = doc[i].get_size()
    scale = min(RENDER_DPI / 72, math.sqrt(WORK_PIXELS / max(pw * ph, 1.0)))
    if stream is not None:  # a large scan: no finer than the image itself
        scale = min(scale, int(stream.Width) / max(w_pt, 1.0))
    bitmap = doc[i].render(scale=scale, rotation=0)
    im = _normalise_mode(bitmap.to_pil())
    del bitmap
    keep = stream is not None and _can_pass_through(stream, rotate)
    return im, max(1, round(72 * scale)), keep


def _iter_pdf(path: Path) -> Iterator[LoadedPage]:
    where = display_name(path.name)
    with _open_pdf(path) as pdf, open_regular(path) as fh:
        try:
            doc = pdfium.PdfDocument(fh, autoclose=False)
        except pdfium.PdfiumError as exc:
            raise corrupt(where, f"cannot be rendered: {exc}") from exc
        try:
            for i in range(len(pdf.pages)):
                try:
                    im, dpi, keep = _pdf_page_image(pdf, doc, i)
                except pdfium.PdfiumError as exc:
                    raise corrupt(where, f"page {i + 1} cannot be rendered: {exc}") from exc
                yield LoadedPage(i + 1, im, dpi, pdf_source=(path, i) if keep else None)
        finally:
            doc.close()


def iter_pages(info: InputInfo, options: OcrOptions) -> Iterator[LoadedPage]:
    """Yield the pages of an inspected input one at a time, in order, as (index, image, dpi).

    Images are mode ``1``, ``L`` or ``RGB``, at most :data:`WORK_PIXELS`; rotation from a PDF ``/Rotate``
    is already applied.
    """
    if info.kind == "pdf":
        yield from _iter_pdf(info.files[0])
        return
    index = 1
    for f in info.input.files:
        assert f.format is not None  # inspect_input refused unknown formats
        for page in _iter_image_file(f, f.format, options, index):
            yield page
            index += 1
