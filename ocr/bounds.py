"""Bounds on what decoding a page may cost, checked before anything is decoded.

A small hostile file can decode into gigabytes or keep a renderer busy for hours: a Flate stream that
inflates a thousandfold (or Flate inside Flate), image headers that declare more pixels than the limit
or data that inflates past what they declare, forms that draw forms a billion times, a page two hundred
inches wide, a PNG with two billion animation frames, a TIFF whose frames loop. Every check here reads
headers and inflates streams *counting* the bytes, in 1 MiB steps, stopping at a cap: nothing is
inflated whole, nothing is rendered.

The limits are far above what a scanned dossier needs (a scanner's page is one image and a few
operators) and low enough that one page stays within a few hundred MB and a few seconds to decode.
"""

from __future__ import annotations

import binascii
import mmap
import re
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pikepdf

from pipeline.core.errors import InputCorrupt, InputInvalidPage, InputTooLarge

# --- limits --------------------------------------------------------------------------------------

MAX_STREAM_BYTES = 32 << 20  # one content stream, font, colour profile... inflated
MAX_RAW_STREAM = 256 << 20  # one stream as stored in the file
MAX_PAGE_INFLATE = 128 << 20  # a document may inflate this much per page in all (an A4 600-dpi RGB image ~104 MB)
MAX_TEXT_FILTER_INPUT = 64 << 20  # ASCIIHex/ASCII85 input, decoded in one piece
MAX_DECODE_BYTES = 160 << 20  # memory one image's decoder may need at once (samples, coefficients)
MAX_FORM_DEPTH = 16  # forms in forms (glyph procedures, patterns, soft masks count as forms)
MAX_OPERATORS = 200_000  # per page, every drawing of a form counted again
MAX_DRAWS = 10_000  # forms, images, patterns and glyph procedures drawn per page, counted likewise
MAX_TOKENS = 2_000_000  # content-stream tokens read per page
MAX_OBJECTS_BASE, MAX_OBJECTS_PER_PAGE = 50_000, 1_000  # objects a document's pages reach
MAX_SEGMENTS = 100_000  # PNG chunks, JPEG segments
JPEG_HEAD = 4 << 20  # a JPEG's frame header and first scan must start within this many bytes
_STEP = 1 << 20
Buffer = bytes | mmap.mmap

# Memory per pixel of an image file while decoded and brought to 1/L/RGB (Pillow keeps RGB in 4 bytes).
MODE_BYTES = {"1": 1, "L": 1, "P": 5, "RGB": 4, "RGBA": 13, "LA": 13, "PA": 13, "CMYK": 8, "YCbCr": 8, "LAB": 8,
              "I;16": 7, "I;16B": 7, "I;16L": 7, "I": 9, "F": 9}


# What the clerk reads when a file is refused for what decoding it would cost, not for its pixels.
HEAVY_VI = (
    "Tệp có dữ liệu nén hoặc nội dung vẽ quá lớn, quá phức tạp để xử lý an toàn (có thể là tệp bị hỏng hoặc "
    "độc hại); vui lòng quét lại bằng máy quét hoặc xuất lại tệp PDF."
)


def too_large(where: str, why: str, vi: str | None = None) -> InputTooLarge:
    return InputTooLarge(f"{where}: {why}", vi)


def heavy(where: str, why: str) -> InputTooLarge:
    return InputTooLarge(f"{where}: {why}", HEAVY_VI)


def corrupt(where: str, why: str) -> InputCorrupt:
    return InputCorrupt(f"{where}: {why}")


def invalid_page(where: str, why: str, vi: str | None = None) -> InputInvalidPage:
    return InputInvalidPage(f"{where}: {why}", vi)


def megabytes(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


# --- streaming decoders: each takes and yields chunks of at most _STEP bytes -----------------------

Chunks = Iterator[bytes]


def _slices(data: bytes | memoryview | mmap.mmap, start: int = 0, stop: int | None = None) -> Chunks:
    stop = len(data) if stop is None else stop
    for i in range(start, stop, _STEP):
        yield bytes(data[i : min(i + _STEP, stop)])  # a copy: no view of a memory map outlives the call


def _inflate(chunks: Chunks) -> Chunks:
    d = zlib.decompressobj()
    for chunk in chunks:
        data = chunk
        while True:
            out = d.decompress(data, _STEP)  # never more than one step at a time, whatever the ratio
            if out:
                yield out
            data = d.unconsumed_tail
            if d.eof:
                return
            if not data and len(out) < _STEP:
                break


def _lzw(chunks: Chunks, early: int = 1) -> Chunks:
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    width, bits, nbits = 9, 0, 0
    prev: bytes | None = None
    out = bytearray()
    for chunk in chunks:
        for byte in chunk:
            bits = (bits << 8) | byte
            nbits += 8
            while nbits >= width:
                nbits -= width
                code = (bits >> nbits) & ((1 << width) - 1)
                bits &= (1 << nbits) - 1
                if code == 256:
                    del table[258:]
                    width, prev = 9, None
                    continue
                if code == 257:
                    yield bytes(out)
                    return
                if code < len(table):
                    entry = table[code]
                    if prev is not None and len(table) < 4096:
                        table.append(prev + entry[:1])
                elif code == len(table) and prev is not None:
                    entry = prev + prev[:1]
                    table.append(entry)
                else:
                    raise ValueError("LZW code out of range")
                out += entry
                prev = entry
                if len(table) + early >= (1 << width) and width < 12:
                    width += 1
                if len(out) >= _STEP:
                    yield bytes(out)
                    out.clear()
    yield bytes(out)


def _run_length(chunks: Chunks) -> Chunks:
    pending = b""
    out = bytearray()
    for chunk in chunks:
        data = pending + chunk
        i, n = 0, len(data)
        while i < n:
            length = data[i]
            if length == 128:
                yield bytes(out)
                return
            if length < 128:
                if i + 2 + length > n:
                    break
                out += data[i + 1 : i + 2 + length]
                i += 2 + length
            else:
                if i + 2 > n:
                    break
                out += data[i + 1 : i + 2] * (257 - length)
                i += 2
            if len(out) >= _STEP:
                yield bytes(out)
                out.clear()
        pending = data[i:]
    yield bytes(out)


def _gather(chunks: Chunks, end: bytes) -> bytes:
    """A text filter's whole input (up to its end marker), within MAX_TEXT_FILTER_INPUT."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if end in chunk or len(data) > MAX_TEXT_FILTER_INPUT:
            break
    if len(data) > MAX_TEXT_FILTER_INPUT:
        raise _Exceeded(len(data))
    cut = data.find(end)
    return bytes(data if cut < 0 else data[:cut])


def _ascii_hex(chunks: Chunks) -> Chunks:
    hexits = re.sub(rb"[^0-9A-Fa-f]", b"", _gather(chunks, b">"))
    if len(hexits) % 2:
        hexits += b"0"
    yield from _slices(binascii.unhexlify(hexits))


def _ascii85(chunks: Chunks) -> Chunks:
    import base64

    text = re.sub(rb"\s", b"", _gather(chunks, b"~>"))
    yield from _slices(base64.a85decode(text.removeprefix(b"<~")))


class _Exceeded(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


IMAGE_CODECS = {
    "/DCTDecode": "dct", "/DCT": "dct", "/JPXDecode": "jpx", "/JBIG2Decode": "jbig2",
    "/CCITTFaxDecode": "ccitt", "/CCF": "ccitt",
}
_FILTERS: dict[str, Callable[..., Chunks]] = {
    "/FlateDecode": _inflate, "/Fl": _inflate, "/LZWDecode": _lzw, "/LZW": _lzw,
    "/RunLengthDecode": _run_length, "/RL": _run_length,
    "/ASCIIHexDecode": _ascii_hex, "/AHx": _ascii_hex, "/ASCII85Decode": _ascii85, "/A85": _ascii85,
}


@dataclass
class Decoded:
    """What a stream's leading (non-image) filters give: its length, its first ``keep`` bytes, whether it
    broke off, and the image codec that would take it from there (``None``: the bytes are the data)."""

    size: int
    head: bytes
    damaged: bool
    codec: str | None
    codec_parms: pikepdf.Object | None


def filter_chain(filters: object, parms: object) -> list[tuple[str, pikepdf.Object | None]]:
    """A stream's (filter name, decode parameters) pairs, in order."""
    if filters is None:
        return []
    names = list(filters) if isinstance(filters, pikepdf.Array) else [filters]
    plist = list(parms) if isinstance(parms, pikepdf.Array) else [parms] * len(names)
    out: list[tuple[str, pikepdf.Object | None]] = []
    for i, name in enumerate(names):
        if not isinstance(name, pikepdf.Name):
            raise ValueError(f"filter {name!r} is not a name")
        p = plist[i] if i < len(plist) else None
        out.append((str(name), p if isinstance(p, pikepdf.Dictionary) else None))
    return out


def decode(
    raw: bytes | memoryview | mmap.mmap, chain: list[tuple[str, pikepdf.Object | None]], cap: int, keep: int,
    start: int = 0, stop: int | None = None,
) -> Decoded:
    """Run ``raw[start:stop]`` through the chain's filters up to the first image codec, counting;
    _Exceeded past ``cap``."""
    chunks: Chunks = _slices(raw, start, stop)
    codec: str | None = None
    codec_parms = None
    for name, parms in chain:
        if name in IMAGE_CODECS:
            codec, codec_parms = IMAGE_CODECS[name], parms
            break
        if name == "/Crypt":
            continue  # identity crypt filter; qpdf has already decrypted the data
        step = _FILTERS.get(name)
        if step is None:
            raise ValueError(f"unknown filter {name}")
        if step is _lzw and parms is not None:
            chunks = _lzw(chunks, int(parms.get("/EarlyChange", 1)))
        else:
            chunks = step(chunks)
    size, damaged = 0, False
    head = bytearray()
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise _Exceeded(size)
            if len(head) < keep:
                head += chunk[: keep - len(head)]
    except (zlib.error, ValueError, binascii.Error):
        damaged = True  # like every reader, stop where the data breaks
    return Decoded(size, bytes(head), damaged, codec, codec_parms)


# --- image headers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """An image's size as its own header declares it; ``buffered``: the decoder keeps every coefficient
    (progressive or multi-scan JPEG) or sample (JPEG 2000) of the full image at once."""

    width: int
    height: int
    components: int = 1
    buffered: bool = False


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def jpeg_frames(data: bytes | memoryview, where: str) -> list[Frame]:
    """Every frame header (SOF) of a JPEG before its first scan; InputCorrupt when there is none."""
    if bytes(data[:2]) != b"\xff\xd8":
        raise corrupt(where, "JPEG data does not start with a JPEG marker")
    frames: list[Frame] = []
    i, n, segments, started = 2, len(data), 0, False
    while i + 4 <= n:
        segments += 1
        if segments > MAX_SEGMENTS:
            raise corrupt(where, "JPEG header has too many segments")
        if data[i] != 0xFF:
            i += 1  # bytes between segments: libjpeg skips them too
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or marker == 0xD8 or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA):
            started = True
            break
        (length,) = struct.unpack(">H", bytes(data[i + 2 : i + 4]))
        if length < 2:
            raise corrupt(where, "JPEG segment with a length under 2")
        if marker in _SOF:
            if i + 10 > n:
                break
            h, w = struct.unpack(">HH", bytes(data[i + 5 : i + 9]))
            frames.append(Frame(w, h, max(1, data[i + 9]), marker in _PROGRESSIVE))
        i += 2 + length
    if not frames:
        raise corrupt(where, "JPEG data has no frame header")
    if not started and n >= JPEG_HEAD:
        # Decoders keep every segment before the first scan in memory (Pillow: APPn and COM data).
        raise too_large(
            where,
            f"JPEG image data does not start within the first {megabytes(JPEG_HEAD)}",
            "Tệp ảnh JPEG có quá nhiều dữ liệu phụ trước phần ảnh; vui lòng quét hoặc xuất lại tệp.",
        )
    return frames


def jpeg_scans(data: bytes | memoryview) -> int:
    """How many scans (SOS markers, 0xFFDA, never found inside entropy-coded data) a JPEG has, up to 2."""
    return sum(1 for _ in zip(range(2), re.finditer(rb"\xff\xda", data), strict=False))


def jpx_frame(data: bytes, where: str) -> Frame:
    """The size a JPEG 2000 image (JP2 file or raw codestream) declares, the larger of box and codestream."""

    def siz(cs: bytes) -> Frame:
        if len(cs) < 40 or cs[:4] != b"\xff\x4f\xff\x51":
            raise corrupt(where, "JPEG 2000 codestream lacks its SIZ header")
        xs, ys, xo, yo = struct.unpack(">IIII", cs[8:24])
        (comps,) = struct.unpack(">H", cs[38:40])
        return Frame(max(0, xs - xo), max(0, ys - yo), max(1, comps), True)

    if data[:4] == b"\xff\x4f\xff\x51":
        return siz(data)
    if data[4:8] != b"jP  ":
        raise corrupt(where, "JPEG 2000 data is neither a JP2 file nor a codestream")
    found: list[Frame] = []

    def boxes(start: int, end: int, depth: int) -> None:
        i = start
        while i + 8 <= end and depth < 4:
            length, kind = struct.unpack(">I4s", data[i : i + 8])
            body = i + 8
            if length == 1:
                (length,) = struct.unpack(">Q", data[i + 8 : i + 16])
                body = i + 16
            elif length == 0:
                length = end - i
            if length < body - i:
                raise corrupt(where, "JPEG 2000 box with a bad length")
            if kind == b"jp2h":
                boxes(body, min(end, i + length), depth + 1)
            elif kind == b"ihdr" and body + 10 <= len(data):
                h, w, comps = struct.unpack(">IIH", data[body : body + 10])
                found.append(Frame(w, h, max(1, comps), True))
            elif kind == b"jp2c":
                found.append(siz(data[body : body + 64]))
                return
            i += length

    boxes(0, len(data), 0)
    if not found:
        raise corrupt(where, "JPEG 2000 file declares no image size")
    return max(found, key=lambda f: f.width * f.height)


_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass
class PngInfo:
    width: int
    height: int
    bits_per_pixel: int
    color_type: int
    frames: int = 1
    palette: bool = False
    data_chunks: int = 0

    @property
    def data_bytes(self) -> int:
        """The most its image data may inflate to: rows with their filter byte, Adam7 passes, a margin."""
        row = (self.width * self.bits_per_pixel + 7) // 8 + 1
        return row * self.height + 8 * self.height + max(64 << 10, row * self.height // 8)


def _png_header(data: bytes, where: str, max_pixels: int) -> PngInfo:
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", data)
    if depth not in _PNG_DEPTHS.get(ctype, ()) or comp or filt or interlace > 1:
        raise corrupt(where, f"PNG header is invalid (colour type {ctype}, bit depth {depth})")
    if w == 0 or h == 0:
        raise invalid_page(where, f"PNG declares a {w}x{h} px image")
    if w * h > max_pixels:
        raise too_large(where, f"{w}x{h} px is more than {max_pixels} px")
    return PngInfo(w, h, _PNG_CHANNELS[ctype] * depth, ctype)


def png_info(fh: BinaryIO, where: str, max_pixels: int, max_frames: int) -> PngInfo:
    """Walk a PNG's chunks: a valid header within ``max_pixels``, a palette where one is needed, a frame
    count within ``max_frames``, frames inside the image, and image data that inflates to no more than
    the header declares (inflated in steps, never whole)."""
    if fh.read(8) != b"\x89PNG\r\n\x1a\n":
        raise corrupt(where, "not a PNG signature")
    head = fh.read(8)
    if len(head) < 8 or head[4:] != b"IHDR" or struct.unpack(">I", head[:4])[0] != 13:
        raise corrupt(where, "PNG does not start with its IHDR chunk")
    info = _png_header(fh.read(13), where, max_pixels)
    fh.seek(4, 1)

    def image_data() -> Chunks:
        for segment in range(MAX_SEGMENTS):
            head = fh.read(8)
            if len(head) < 8:
                raise corrupt(where, "PNG ends before its IEND chunk")
            length, kind = struct.unpack(">I4s", head)
            if length > 0x7FFFFFFF:
                raise corrupt(where, f"PNG chunk {segment + 2} declares {length} bytes")
            if kind == b"IEND":
                return
            if kind == b"IDAT":
                if info.color_type == 3 and not info.palette:
                    raise corrupt(where, "palette PNG without a PLTE chunk before its data")
                info.data_chunks += 1
                left = length
                while left:
                    piece = fh.read(min(left, _STEP))
                    if not piece:
                        raise corrupt(where, "PNG image data is truncated")
                    left -= len(piece)
                    yield piece
                fh.seek(4, 1)
                continue
            body = fh.read(min(length, 20)) if kind in (b"acTL", b"fcTL", b"PLTE") else b""
            if kind == b"PLTE":
                if length == 0 or length % 3 or length > 768:
                    raise corrupt(where, f"PNG palette of {length} bytes")
                info.palette = True
            elif kind == b"acTL" and len(body) >= 4:
                (count,) = struct.unpack(">I", body[:4])
                if count == 0:
                    raise corrupt(where, "animated PNG declares no frames")
                if count > max_frames:
                    raise too_large(where, f"animated PNG declares {count} frames, more than {max_frames}",
                                    f"Tệp ảnh có {count} khung hình, vượt quá giới hạn {max_frames} trang.")
                info.frames = count
            elif kind == b"fcTL" and len(body) >= 20:
                _seq, w, h, x, y = struct.unpack(">IIIII", body[:20])
                if w == 0 or h == 0 or x + w > info.width or y + h > info.height:
                    raise corrupt(where, f"animated PNG frame {w}x{h}+{x}+{y} lies outside the image")
            fh.seek(length - len(body) + 4, 1)
        raise corrupt(where, f"PNG has more than {MAX_SEGMENTS} chunks")

    limit = info.data_bytes
    d = zlib.decompressobj()
    total = 0
    try:
        for piece in image_data():
            data = piece
            while data and not d.eof:
                total += len(d.decompress(data, _STEP))
                data = d.unconsumed_tail
                if total > limit:
                    raise heavy(where, f"PNG image data inflates past the {limit} bytes its header allows")
    except zlib.error as exc:
        raise corrupt(where, f"PNG image data is damaged: {exc}") from exc
    if not info.data_chunks:
        raise corrupt(where, "PNG has no image data")
    return info


_TIFF_NUMBERS = {3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18}  # SHORT, LONG, RATIONAL... (not BYTE, ASCII)
MAX_TIFF_VALUES = 1_000_000  # a strip per row of a 100 Mpx page needs 10 000


def tiff_frames(fh: BinaryIO, where: str, max_frames: int) -> list[Frame]:
    """The size of every frame (IFD) of a TIFF, following its chain once: a loop is InputCorrupt, more
    than ``max_frames`` frames InputTooLarge, a frame without a size InputInvalidPage."""
    head = fh.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise corrupt(where, "not a TIFF header")
    (version,) = struct.unpack(order + "H", head[2:4])
    if version == 42:
        big = False
        (offset,) = struct.unpack(order + "I", head[4:8])
    elif version == 43 and len(head) >= 16:
        big = True
        (offset,) = struct.unpack(order + "Q", head[8:16])
    else:
        raise corrupt(where, f"TIFF version {version}")
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    fh.seek(0, 2)
    file_size = fh.tell()
    seen: set[int] = set()
    frames: list[Frame] = []
    while offset:
        if offset in seen:
            raise corrupt(where, f"TIFF frames loop back to the frame at offset {offset}")
        if offset >= file_size:
            raise corrupt(where, f"TIFF frame {len(frames) + 1} lies past the end of the file")
        seen.add(offset)
        if len(frames) >= max_frames:
            raise too_large(where, f"TIFF holds more than {max_frames} frames",
                            f"Tệp TIFF có hơn {max_frames} trang, vượt quá giới hạn.")
        fh.seek(offset)
        size = struct.calcsize(count_fmt)
        (n,) = struct.unpack(order + count_fmt, fh.read(size))
        if n == 0 or n > 4096:
            raise corrupt(where, f"TIFF frame {len(frames) + 1} has {n} entries")
        entries = fh.read(n * entry_size)
        tail = fh.read(struct.calcsize(next_fmt))
        if len(entries) < n * entry_size or len(tail) < struct.calcsize(next_fmt):
            raise corrupt(where, f"TIFF frame {len(frames) + 1} is truncated")
        dims: dict[int, int] = {}
        spp = 1
        for k in range(n):
            e = entries[k * entry_size : (k + 1) * entry_size]
            tag, typ = struct.unpack(order + "HH", e[:4])
            (count,) = struct.unpack(order + ("Q" if big else "I"), e[4 : 12 if big else 8])
            if typ in _TIFF_NUMBERS and count > MAX_TIFF_VALUES:
                # Pillow reads every value of every tag into a tuple: ~36 bytes each.
                raise heavy(where, f"TIFF tag {tag} of frame {len(frames) + 1} holds {count} numbers")
            if tag not in (256, 257, 277):
                continue
            value_at = 12 if big else 8
            if typ == 3:
                (value,) = struct.unpack(order + "H", e[value_at : value_at + 2])
            elif typ == 4:
                (value,) = struct.unpack(order + "I", e[value_at : value_at + 4])
            elif typ == 16 and big:
                (value,) = struct.unpack(order + "Q", e[value_at : value_at + 8])
            else:
                raise corrupt(where, f"TIFF tag {tag} has type {typ}")
            if tag == 277:
                spp = value
            else:
                dims[tag] = value
        if 256 not in dims or 257 not in dims:
            raise corrupt(where, f"TIFF frame {len(frames) + 1} has no width or height")
        frames.append(Frame(dims[256], dims[257], max(1, spp)))
        (offset,) = struct.unpack(order + next_fmt, tail)
    if not frames:
        raise corrupt(where, "TIFF has no frames")
    return frames


# --- PDF pages -------------------------------------------------------------------------------------

_WS = b"\x00\t\n\x0c\r "
_TOKEN = re.compile(
    rb"[\x00\t\n\x0c\r ]+"  # white space
    rb"|%[^\r\n]*"  # comment
    rb"|<<|>>|<[^<>]*>"  # dictionary brackets, hex string
    rb"|\("  # literal string: parentheses nest, see _skip_string
    rb"|[\[\]{})>]"
    rb"|/[^\x00\t\n\x0c\r ()<>\[\]{}/%]*"  # name
    rb"|[^\x00\t\n\x0c\r ()<>\[\]{}/%]+"  # number, keyword or operator
)
_STRING_STOP = re.compile(rb"[()\\]")
_SHOW = frozenset({b"Tj", b"TJ", b"'", b'"'})  # text-showing operators
_INLINE_END = re.compile(rb"[\x00\t\n\x0c\r ]EI(?=[\x00\t\n\x0c\r /\[<(%]|$)")
_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_OPERANDS = frozenset(b"+-.0123456789/<[]{}(")
_INLINE_KEYS = {
    "/W": "/Width", "/H": "/Height", "/BPC": "/BitsPerComponent", "/CS": "/ColorSpace", "/F": "/Filter",
    "/DP": "/DecodeParms", "/IM": "/ImageMask",
}
_SKIP_KEYS = frozenset({"/Parent", "/P", "/Dest", "/D", "/Next", "/Prev", "/First", "/Last", "/Metadata", "/Thumb",
                        "/PieceInfo", "/StructParent", "/StructParents", "/Popup", "/IRT", "/Annots", "/B"})
_COMPONENTS = {"/DeviceGray": 1, "/G": 1, "/CalGray": 1, "/Indexed": 1, "/I": 1, "/Separation": 1,
               "/DeviceRGB": 3, "/RGB": 3, "/CalRGB": 3, "/Lab": 3, "/DeviceCMYK": 4, "/CMYK": 4}


def _skip_string(data: Buffer, pos: int) -> int:
    depth = 1
    while depth:
        m = _STRING_STOP.search(data, pos)
        if m is None:
            return len(data)
        c, pos = data[m.start()], m.end()
        if c == 0x5C:
            pos += 1
        else:
            depth += 1 if c == 0x28 else -1
    return pos


def _name(token: bytes) -> str:
    return _NAME_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), token).decode("latin-1")


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(value, "as_integer_ratio"):
        raise ValueError(f"{what} is not a number")
    number = float(value)  # type: ignore[arg-type]
    if not number == number or abs(number) > 1e9:
        raise ValueError(f"{what} is out of range")
    return int(number)


def _components(cs: object) -> int:
    """Colour components of a colour space (4, the most any has, when it cannot be told)."""
    if isinstance(cs, pikepdf.Name):
        return _COMPONENTS.get(str(cs), 4)
    if isinstance(cs, pikepdf.Array) and len(cs):
        family = str(cs[0])
        if family == "/ICCBased" and len(cs) > 1 and isinstance(cs[1], pikepdf.Stream):
            return max(1, min(4, _int(cs[1].get("/N", 4), "/N")))
        if family == "/DeviceN" and len(cs) > 1 and isinstance(cs[1], pikepdf.Array):
            return max(1, min(32, len(cs[1])))
        return _COMPONENTS.get(family, 4)
    return 4


@dataclass
class _Image:
    """An image's declared geometry, from an XObject's or an inline image's dictionary."""

    width: int
    height: int
    row_bytes: int
    chain: list[tuple[str, pikepdf.Object | None]]

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class _Page:
    where: str
    ops: int = 0
    draws: int = 0
    tokens: int = 0
    pixels: dict[object, int] = field(default_factory=dict)  # images drawn, once each
    memo: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # form -> (ops, draws)


class PdfBounds:
    """Checks, page by page, that rendering a PDF stays bounded (see the module docstring).

    Streams are measured once per document; every measured byte counts against a budget of
    MAX_PAGE_INFLATE per page of the document.
    """

    def __init__(self, name: str, pages: int, max_pixels: int) -> None:
        self.name = name
        self.max_pixels = max_pixels
        self.budget = pages * MAX_PAGE_INFLATE
        self.inflated = 0
        self.max_objects = MAX_OBJECTS_BASE + MAX_OBJECTS_PER_PAGE * pages
        self.seen: set[tuple[int, int]] = set()
        self.images: dict[tuple[int, int], int] = {}

    # -- streams

    def _decode(self, stream: pikepdf.Stream, cap: int, keep: int, where: str) -> Decoded:
        raw = memoryview(stream.get_raw_stream_buffer())
        if len(raw) > MAX_RAW_STREAM:
            raise heavy(where, f"a stream of {megabytes(len(raw))} as stored")
        chain = filter_chain(stream.get("/Filter"), stream.get("/DecodeParms"))
        try:
            result = decode(raw, chain, cap, keep)
        except _Exceeded:
            raise heavy(where, f"a stream inflates to more than {megabytes(cap)}") from None
        self._count(result.size, where)
        return result

    def _count(self, size: int, where: str) -> None:
        self.inflated += size
        if self.inflated > self.budget:
            raise heavy(where, f"the file inflates to more than {megabytes(self.budget)} in all")

    def content(self, stream: pikepdf.Stream, where: str) -> bytes:
        """A content stream (page, form, pattern, glyph) decoded, within MAX_STREAM_BYTES."""
        result = self._decode(stream, MAX_STREAM_BYTES, MAX_STREAM_BYTES, where)
        if result.codec is not None:
            raise corrupt(where, "a content stream is encoded as an image")
        return result.head

    def image(self, stream: pikepdf.Stream, where: str) -> int:
        """Check an image XObject once per document: its declared size, the size its codec's header
        declares, how far its data inflates. Returns its pixel count."""
        key = stream.objgen
        if key in self.images:
            return self.images[key]
        img = self._geometry(stream, None, where)
        raw = memoryview(stream.get_raw_stream_buffer())
        if len(raw) > MAX_RAW_STREAM:
            raise heavy(where, f"an image stream of {megabytes(len(raw))} as stored")
        pixels = self._image_data(img, raw, where)
        self.images[key] = pixels
        return pixels

    def _geometry(self, d: pikepdf.Object | dict[str, object], colour_spaces: object, where: str) -> _Image:
        w = _int(d.get("/Width", 0), "/Width")
        h = _int(d.get("/Height", 0), "/Height")
        if w <= 0 or h <= 0:
            raise corrupt(where, f"an image is {w}x{h} px")
        if w * h > self.max_pixels:
            raise too_large(where, f"holds a {w}x{h} px image, more than {self.max_pixels} px")
        mask = bool(d.get("/ImageMask", False))
        bpc = 1 if mask else _int(d.get("/BitsPerComponent", 8), "/BitsPerComponent")
        if bpc not in (1, 2, 4, 8, 16):
            raise corrupt(where, f"an image has {bpc} bits per component")
        cs = d.get("/ColorSpace")
        if isinstance(cs, pikepdf.Name) and isinstance(colour_spaces, pikepdf.Dictionary) and cs in colour_spaces:
            cs = colour_spaces[cs]
        comps = 1 if mask else _components(cs)
        chain = filter_chain(d.get("/Filter"), d.get("/DecodeParms"))
        return _Image(w, h, (w * bpc * comps + 7) // 8, chain)

    def _image_data(self, img: _Image, raw: bytes | memoryview, where: str) -> int:
        declared = img.row_bytes * img.height
        cap = declared + img.height + max(64 << 10, declared // 8)
        try:
            result = decode(raw, img.chain, cap, JPEG_HEAD)
        except _Exceeded:
            raise heavy(where, f"image data inflates past the {cap} bytes a {img.width}x{img.height} px image "
                        "needs") from None
        self._count(result.size, where)
        pixels = img.pixels
        if result.codec is None:
            if result.size < declared:
                raise corrupt(where, f"image data holds {result.size} of the {declared} bytes it declares")
        elif result.codec in ("dct", "jpx"):
            data = result.head if result.size else b""
            frames = jpeg_frames(data, where) if result.codec == "dct" else [jpx_frame(data, where)]
            buffered = result.codec == "jpx" or jpeg_scans(raw if not img.chain[:-1] else data) > 1
            for f in frames:
                self._check_frame(f, buffered or f.buffered, where)
                pixels = max(pixels, f.width * f.height)
        elif result.codec == "ccitt" and result.codec_parms is not None:
            cols = _int(result.codec_parms.get("/Columns", 1728), "/Columns")
            rows = _int(result.codec_parms.get("/Rows", 0), "/Rows")
            if cols <= 0 or cols * max(rows, img.height) > self.max_pixels:
                raise too_large(where, f"a fax image declares {cols} columns and {rows} rows")
        return pixels

    def _check_frame(self, f: Frame, buffered: bool, where: str) -> None:
        if f.width == 0 or f.height == 0:
            raise invalid_page(where, f"an image's own header declares {f.width}x{f.height} px")
        if f.width * f.height > self.max_pixels:
            raise too_large(where, f"an image's own header declares {f.width}x{f.height} px")
        if buffered and f.width * f.height * f.components * 4 > MAX_DECODE_BYTES:
            raise too_large(where, f"a {f.width}x{f.height} px image its decoder must hold whole")

    # -- the objects a page reaches

    def reach(self, page: pikepdf.Object, resources: object, where: str) -> None:
        """Measure every stream a page reaches (resources, contents, annotation appearances), once."""
        stack: list[object] = [resources, page.get("/Contents")]
        annots = page.get("/Annots")
        if isinstance(annots, pikepdf.Array) and len(annots) > MAX_DRAWS:
            raise heavy(where, f"has {len(annots)} annotations")
        for annot in _list(annots):
            if isinstance(annot, pikepdf.Dictionary):
                stack.append(annot.get("/AP"))
        while stack:
            obj = stack.pop()
            if isinstance(obj, pikepdf.Object) and obj.is_indirect:
                if obj.objgen in self.seen:
                    continue
                self.seen.add(obj.objgen)
                if len(self.seen) > self.max_objects:
                    raise heavy(where, f"pages reach more than {self.max_objects} objects")
            if isinstance(obj, pikepdf.Stream):
                if obj.get("/Subtype") == pikepdf.Name.Image:
                    self.image(obj, where)
                else:
                    self._decode(obj, MAX_STREAM_BYTES, 0, where)
                stack.extend(v for k, v in obj.stream_dict.items() if k not in _SKIP_KEYS)
            elif isinstance(obj, pikepdf.Dictionary):
                stack.extend(v for k, v in obj.items() if k not in _SKIP_KEYS)
            elif isinstance(obj, pikepdf.Array):
                if len(obj) > self.max_objects:
                    raise heavy(where, f"an array of {len(obj)} items")
                stack.extend(obj)

    # -- what a page draws

    def draw(self, page: pikepdf.Object, resources: object, where: str) -> None:
        """Follow what a page draws: forms in forms (no loops, at most MAX_FORM_DEPTH deep), operators,
        draws, inline images, and the pixels of the images it draws, all counted as drawn."""
        state = _Page(where)
        content = b"\n".join(self.content(s, where) for s in _list(page.get("/Contents"))
                             if isinstance(s, pikepdf.Stream))
        if len(content) > MAX_STREAM_BYTES:
            raise heavy(where, f"page content of {megabytes(len(content))}")
        ops, draws = self._program(state, content, resources, 0, ())
        for annot in _list(page.get("/Annots")):
            ap = annot.get("/AP") if isinstance(annot, pikepdf.Dictionary) else None
            normal = ap.get("/N") if isinstance(ap, pikepdf.Dictionary) else None
            states = [normal] if isinstance(normal, pikepdf.Stream) else _values(normal)
            for form in states:
                if isinstance(form, pikepdf.Stream):
                    sub = self._form(state, form, resources, 1, ())
                    ops, draws = ops + sub[0], draws + sub[1] + 1
                    self._limit(state, ops, draws)
        total = sum(state.pixels.values())
        if total > 2 * self.max_pixels:
            raise too_large(where, f"draws images of {total} px in all")

    def _limit(self, state: _Page, ops: int, draws: int) -> None:
        if ops > MAX_OPERATORS:
            raise heavy(state.where, f"drawing takes more than {MAX_OPERATORS} operators")
        if draws > MAX_DRAWS:
            raise heavy(state.where, f"draws more than {MAX_DRAWS} forms and images")

    def _form(
        self, state: _Page, form: pikepdf.Stream, resources: object, depth: int, stack: tuple[tuple[int, int], ...]
    ) -> tuple[int, int]:
        key = form.objgen
        if key in stack:
            raise corrupt(state.where, "a form draws itself")
        if key in state.memo:
            return state.memo[key]
        if depth > MAX_FORM_DEPTH:
            raise heavy(state.where, f"forms nest more than {MAX_FORM_DEPTH} deep")
        own = form.get("/Resources")
        cost = self._program(state, self.content(form, state.where), own if own is not None else resources,
                             depth, (*stack, key))
        state.memo[key] = cost
        return cost

    def _program(
        self, state: _Page, data: bytes, resources: object, depth: int, stack: tuple[tuple[int, int], ...]
    ) -> tuple[int, int]:
        ops = draws = 0
        glyph_ops = 0  # operators of the current Type 3 font's costliest glyph procedure
        for op, operands, text in self._operators(state, data, resources):
            ops += 1
            sub: tuple[int, int] | None = None
            if op in _SHOW:
                ops += text * (1 + glyph_ops)  # every glyph shown is drawn, a Type 3 glyph by its procedure
            elif op == b"Do" and operands and operands[-1][:1] == b"/":
                name = _name(operands[-1])
                xobj = _resource(resources, "/XObject", name)
                if not isinstance(xobj, pikepdf.Stream):
                    raise corrupt(state.where, f"the page draws {name}, which is missing")
                subtype = xobj.get("/Subtype")
                if subtype == pikepdf.Name.Image:
                    state.pixels[xobj.objgen] = self.image(xobj, state.where)
                    draws += 1
                elif subtype == pikepdf.Name.Form:
                    sub = self._form(state, xobj, resources, depth + 1, stack)
            elif op == b"BI":
                draws += 1  # its pixels were counted as it was read
            elif op == b"Tf" and len(operands) >= 2 and operands[-2][:1] == b"/":
                font = _resource(resources, "/Font", _name(operands[-2]))
                glyph_ops = 0
                if isinstance(font, pikepdf.Dictionary) and font.get("/Subtype") == pikepdf.Name.Type3:
                    procs_ops, procs_draws, glyph_ops = self._glyphs(state, font, resources, depth + 1, stack)
                    sub = (procs_ops, procs_draws)
            elif op in (b"scn", b"SCN") and operands and operands[-1][:1] == b"/":
                pattern = _resource(resources, "/Pattern", _name(operands[-1]))
                if isinstance(pattern, pikepdf.Stream):  # a tiling pattern: a form drawn once per cell
                    sub = self._form(state, pattern, resources, depth + 1, stack)
            elif op == b"gs" and operands and operands[-1][:1] == b"/":
                gstate = _resource(resources, "/ExtGState", _name(operands[-1]))
                smask = gstate.get("/SMask") if isinstance(gstate, pikepdf.Dictionary) else None
                group = smask.get("/G") if isinstance(smask, pikepdf.Dictionary) else None
                if isinstance(group, pikepdf.Stream):
                    sub = self._form(state, group, resources, depth + 1, stack)
            if sub is not None:
                ops, draws = ops + sub[0], draws + sub[1] + 1
            self._limit(state, ops, draws)
        return ops, draws

    def _glyphs(
        self, state: _Page, font: pikepdf.Dictionary, resources: object, depth: int,
        stack: tuple[tuple[int, int], ...],
    ) -> tuple[int, int, int]:
        """A Type 3 font's glyph procedures, each counted once per selection of the font, and the operators
        of its costliest one (what each glyph shown in it may cost)."""
        ops = draws = costliest = 0
        own = font.get("/Resources")
        for proc in _values(font.get("/CharProcs")):
            if isinstance(proc, pikepdf.Stream):
                sub = self._form(state, proc, own if own is not None else resources, depth, stack)
                ops, draws, costliest = ops + sub[0], draws + sub[1] + 1, max(costliest, sub[0])
                self._limit(state, ops, draws)
        return ops, draws, costliest

    def _operators(
        self, state: _Page, data: bytes, resources: object
    ) -> Iterator[tuple[bytes, list[bytes], int]]:
        """(operator, its last operands, bytes of the strings among its operands) of a content stream;
        strings, comments and inline image data are skipped, never taken for operators. Inline images are
        checked as they are read (BI)."""
        operands: deque[bytes] = deque(maxlen=4)
        text = 0
        pos, n = 0, len(data)
        while pos < n:
            m = _TOKEN.match(data, pos)
            if m is None:
                pos += 1
                continue
            token, pos = m.group(), m.end()
            first = token[0]
            if first in _WS or first == 0x25:  # white space, comment
                continue
            state.tokens += 1
            if state.tokens > MAX_TOKENS:
                raise heavy(state.where, f"page content has more than {MAX_TOKENS} tokens")
            if token == b"(":
                start, pos = pos, _skip_string(data, pos)
                text += pos - start - 1
                operands.append(b"()")
            elif first == 0x3C and token != b"<<":  # a hex string: two digits a byte
                text += (len(token) - 1) // 2
                operands.append(token)
            elif first in _OPERANDS or token in (b"true", b"false", b"null", b"<<", b">>", b")", b">"):
                operands.append(token)
            elif token == b"BI":
                pos = self._inline_image(state, data, pos, resources)
                yield token, [], 0
                operands.clear()
                text = 0
            else:
                yield token, list(operands), text
                operands.clear()
                text = 0

    def _inline_image(self, state: _Page, data: bytes, pos: int, resources: object) -> int:
        """Check the inline image whose dictionary starts at ``pos``; returns where its EI ends.

        Data without a filter is exactly as long as the image needs, Flate data as long as its zlib stream;
        other filtered data ends at the first EI after which it decodes whole (compressed data may hold the
        bytes " EI " by chance).
        """
        tokens: list[bytes] = []
        while True:
            m = _TOKEN.match(data, pos)
            if m is None:
                raise corrupt(state.where, "an inline image has no data (BI without ID)")
            token, pos = m.group(), m.end()
            if token[0] in _WS or token[0] == 0x25:
                continue
            if token == b"ID":
                break
            if token == b"(":
                pos = _skip_string(data, pos)
                token = b"()"
            tokens.append(token)
            if len(tokens) > 200:
                raise corrupt(state.where, "an inline image's dictionary does not end")
        colour_spaces = resources.get("/ColorSpace") if isinstance(resources, pikepdf.Dictionary) else None
        img = self._geometry(_inline_dict(tokens), colour_spaces, state.where)
        start = pos + 1  # one white-space byte after ID
        if not img.chain:
            search_from = start + img.row_bytes * img.height
        elif img.chain[0][0] in ("/FlateDecode", "/Fl"):
            search_from = _zlib_end(data, start, img.row_bytes * img.height * 2 + (1 << 20))
        else:
            search_from = start
        for _, end in zip(range(64), _INLINE_END.finditer(data, max(start, search_from - 1)), strict=False):
            try:
                pixels = self._image_data(img, data[start : end.start()], state.where)
            except InputCorrupt:
                continue  # an EI inside the data: the image ends further on
            state.pixels[("inline", state.tokens)] = pixels
            return end.end()
        raise corrupt(state.where, "an inline image's data is damaged or does not end with EI")


def _zlib_end(data: bytes, start: int, cap: int) -> int:
    """Where the zlib stream that starts at ``start`` ends; where it breaks off, or passes ``cap`` bytes
    inflated, when it does not end."""
    d = zlib.decompressobj()
    pos, out = start, 0
    try:
        while pos < len(data) and not d.eof:
            chunk = data[pos : pos + _STEP]
            rest = chunk
            while rest and not d.eof:
                out += len(d.decompress(rest, _STEP))
                rest = d.unconsumed_tail
                if out > cap:
                    return pos
            pos += len(chunk) - len(d.unused_data)
    except zlib.error:
        pass
    return pos


def _inline_dict(tokens: list[bytes]) -> dict[str, object]:
    """An inline image's dictionary from its tokens: names, numbers and arrays of names."""
    out: dict[str, object] = {}
    i = 0
    while i + 1 < len(tokens):
        key = _name(tokens[i]) if tokens[i][:1] == b"/" else None
        i += 1
        if key is None:
            continue
        if tokens[i] == b"[":
            items = []
            i += 1
            while i < len(tokens) and tokens[i] != b"]":
                items.append(_value(tokens[i]))
                i += 1
            value: object = pikepdf.Array(items)
        elif tokens[i] == b"<<":
            depth = 0
            while i < len(tokens):
                depth += {b"<<": 1, b">>": -1}.get(tokens[i], 0)
                if depth == 0:
                    break
                i += 1
            value = None  # decode parameters: the defaults give the most bytes
        else:
            value = _value(tokens[i])
        i += 1
        out[_INLINE_KEYS.get(key, key)] = value
    return out


def _value(token: bytes) -> object:
    if token[:1] == b"/":
        return pikepdf.Name(_name(token))
    if token in (b"true", b"false"):
        return token == b"true"
    try:
        return float(token) if b"." in token else int(token)
    except ValueError:
        return None


def _resource(resources: object, category: str, name: str) -> object:
    if not isinstance(resources, pikepdf.Dictionary):
        return None
    group = resources.get(category)
    if not isinstance(group, pikepdf.Dictionary):
        return None
    return group.get(name)


def _list(obj: object) -> list[object]:
    if isinstance(obj, pikepdf.Array):
        return list(obj)
    return [] if obj is None else [obj]


def _values(obj: object) -> list[object]:
    return list(obj.values()) if isinstance(obj, pikepdf.Dictionary) else []


# --- PDF syntax, before any PDF library parses it ------------------------------------------------------

MAX_SYNTAX_TOKENS = 1_000_000  # tokens outside stream data, in the file and in its object streams
MAX_SYNTAX_BYTES = 32 << 20  # bytes outside stream data, likewise
_STREAM_DATA = re.compile(rb"\r\n|\n|\r")


def pdf_syntax(data: bytes | Buffer, where: str) -> None:
    """Count the PDF syntax a parser would build objects from — everything outside stream data, and the
    inflated content of object streams — and refuse a file with more than any scan has.

    qpdf parses an object stream whole as soon as one object in it is needed (opening the file needs
    the catalog), and every array item costs it ~100 bytes: a 1 MB file can hold an object stream that
    inflates to a gigabyte, or a 10 MB file an array that takes 750 MB. So this runs on the raw bytes
    (a memory map), before pikepdf or pdfium opens the file: object and cross-reference streams are
    inflated counting, like every stream here; other stream data is skipped to its ``endstream``.
    """
    counter = _SyntaxCount(where)
    counter.scan(data, 0, len(data), top=True)


class _SyntaxCount:
    def __init__(self, where: str) -> None:
        self.where = where
        self.tokens = 0
        self.bytes = 0

    def _add(self, tokens: int, size: int) -> None:
        self.tokens += tokens
        self.bytes += size
        if self.tokens > MAX_SYNTAX_TOKENS or self.bytes > MAX_SYNTAX_BYTES:
            raise heavy(self.where, f"more than {MAX_SYNTAX_TOKENS} tokens or {megabytes(MAX_SYNTAX_BYTES)} of "
                        "PDF objects outside stream data")

    def scan(self, data: bytes | Buffer, pos: int, end: int, *, top: bool) -> None:
        recent: deque[bytes] = deque(maxlen=64)  # the tokens since the last ``obj``: a stream's dictionary
        start = pos
        while pos < end:
            m = _TOKEN.match(data, pos, end)
            if m is None:
                pos += 1
                continue
            token, pos = m.group(), m.end()
            if token[0] in _WS or token[0] == 0x25:
                continue
            if token == b"(":
                pos = _skip_string(data, pos)
            self._add(1, 0)
            if token == b"obj":
                recent.clear()
            elif token == b"stream" and top:
                eol = _STREAM_DATA.match(data, pos, end)
                body = eol.end() if eol else pos
                stop = data.find(b"endstream", body, end)
                stop = end if stop < 0 else stop
                self._add(0, body - start)
                self._stream(data, body, stop, list(recent))
                pos = start = stop + len(b"endstream") if stop < end else end
                recent.clear()
                continue
            recent.append(token)
        self._add(0, max(0, min(pos, end) - start))

    def _stream(self, data: bytes | Buffer, body: int, stop: int, entries: list[bytes]) -> None:
        """An object or cross-reference stream's data, inflated counting; other stream data is skipped."""
        kinds = {entries[i + 1] for i in range(len(entries) - 1) if entries[i] == b"/Type"}
        if not kinds & {b"/ObjStm", b"/XRef"}:
            return
        d = _inline_dict(entries[entries.index(b"<<") + 1 :] if b"<<" in entries else entries)
        try:
            chain = filter_chain(d.get("/Filter"), None)
            keep = MAX_STREAM_BYTES if b"/ObjStm" in kinds else 0  # a cross-reference stream is only measured
            result = decode(data, chain, MAX_STREAM_BYTES, keep, body, stop)
        except _Exceeded:
            raise heavy(self.where, f"an object or cross-reference stream inflates to more than "
                        f"{megabytes(MAX_STREAM_BYTES)}") from None
        except ValueError:
            return  # qpdf will say what is wrong with it
        if b"/ObjStm" in kinds:
            self.scan(result.head, 0, len(result.head), top=False)
