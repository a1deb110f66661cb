"""A corpus of hostile inputs, written into a folder by code (nothing binary is committed).

Each :class:`Case` is one entry of the folder — a file, a folder of pages, a FIFO, a socket or a
symlink — with the exit code ``hoso ingest`` must end with. The same folder is a batch for ``hoso
reprocess``: every entry is then recorded as failed with that cause. Nothing in it may be stored.

    python tests/support/hostile.py OUT_DIR     # write the corpus, print the table

Bombs are built without inflating anything: a deflate stream of zeros is a short header, a long run of
one repeated byte (each extra byte of it inflates to 1032 zeros) and a short end, so a 1 GiB bomb is
1 MB and costs no compression time.
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.core.errors import ExitCode  # noqa: E402
from pipeline.core.inputs import display_name  # noqa: E402

GiB = 1 << 30


@dataclass(frozen=True)
class Case:
    name: bytes  # the entry's name in the corpus folder (bytes: some names are not UTF-8)
    expect: ExitCode
    attack: str  # what it tries, one line
    make: Callable[[Path], object]

    @property
    def path_name(self) -> str:
        """The name as Python sees it (bytes that are not UTF-8 as surrogates)."""
        return os.fsdecode(self.name)

    @property
    def shown(self) -> str:
        """The name as hoso shows it in batch results and logs."""
        return display_name(self.path_name)


# --- bombs -------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zeros_deflate_parts() -> tuple[bytes, bytes, int]:
    """(head, tail, run byte) of zlib's raw deflate stream of 1 MiB of zeros, split inside its long run
    of one repeated byte: inserting k more of that byte makes the stream inflate to 1032 * k more zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(bytes(1 << 20)) + c.flush()
    best = (0, 0)
    i = 0
    while i < len(raw):
        j = i
        while j < len(raw) and raw[j] == raw[i]:
            j += 1
        if j - i > best[1]:
            best = (i, j - i)
        i = j
    start, _ = best
    return raw[:start], raw[start:], raw[start]


def zeros_bomb(size: int) -> bytes:
    """A zlib stream (as PDF /FlateDecode and PNG IDAT hold) that inflates to about ``size`` zero bytes."""
    head, tail, run = _zeros_deflate_parts()
    k = max(0, -(-(size - (1 << 20)) // 1032))
    total = (1 << 20) + 1032 * k
    adler = ((total % 65521) << 16) | 1  # Adler-32 of n zero bytes: a = 1, b = n mod 65521
    return b"\x78\xda" + head + bytes([run]) * k + tail + struct.pack(">I", adler)


def prefixed_bomb(prefix: bytes, size: int) -> bytes:
    """A zlib stream that inflates to ``prefix``, then about ``size`` zero bytes: ``prefix`` in blocks of
    its own (ended by a full flush), then the zeros' blocks, which only ever copy the byte before."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    head, tail, run = _zeros_deflate_parts()
    k = max(0, -(-(size - (1 << 20)) // 1032))
    zeros = (1 << 20) + 1032 * k
    check = zlib.adler32(prefix)
    a, b = check & 0xFFFF, check >> 16
    adler = (((b + zeros * a) % 65521) << 16) | a  # Adler-32 after n more zero bytes: b grows by n * a
    return b"\x78\xda" + first + head + bytes([run]) * k + tail + struct.pack(">I", adler)


def double_bomb(size: int) -> bytes:
    """Flate inside Flate: the outer stream inflates to a bomb of ``size`` (16 GiB needs ~16 MB inside)."""
    return zlib.compress(zeros_bomb(size), 9)


# --- PDF built byte by byte (the structures here are what a PDF library would refuse to write) ------


def stream(entries: bytes, data: bytes) -> bytes:
    return b"<< " + entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pdf(objects: dict[int, bytes], *, root: int = 1, trailer: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for n in sorted(objects):
        offsets[n] = len(out)
        out += b"%d 0 obj\n" % n + objects[n] + b"\nendobj\n"
    size = max(objects) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for n in range(1, size):
        out += b"%010d 00000 n \n" % offsets[n] if n in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R %s >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, trailer, xref)
    return bytes(out)


A4 = b"[0 0 595 842]"
INK = b"0 g 72 700 300 24 re f 72 600 200 12 re f"


def doc(
    content: bytes = INK,
    resources: bytes = b"<< >>",
    *,
    page: bytes = b"",
    mediabox: bytes = A4,
    catalog: bytes = b"",
    extra: dict[int, bytes] | None = None,
    content_entries: bytes = b"",
) -> bytes:
    """A one-page PDF: 1 catalog, 2 pages, 3 page, 4 its content; ``extra`` objects from 5 on."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R " + catalog + b" >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox " + mediabox + b" /Resources " + resources
        + b" /Contents 4 0 R " + page + b" >>",
        4: stream(content_entries, content),
    }
    objects.update(extra or {})
    return pdf(objects)


def image_entries(w: int, h: int, extra: bytes = b"/BitsPerComponent 8 /ColorSpace /DeviceGray") -> bytes:
    return b"/Type /XObject /Subtype /Image /Width %d /Height %d " % (w, h) + extra


def full_page_image(image: bytes, w_pt: float = 595, h_pt: float = 842) -> bytes:
    """A page that draws object 5, an image, over the whole page."""
    return doc(
        b"q %g 0 0 %g 0 0 cm /Im0 Do Q" % (w_pt, h_pt),
        b"<< /XObject << /Im0 5 0 R >> >>",
        mediabox=b"[0 0 %g %g]" % (w_pt, h_pt),
        extra={5: image},
    )


def form(content: bytes, resources: bytes = b"<< >>", entries: bytes = b"") -> bytes:
    return stream(b"/Type /XObject /Subtype /Form /BBox [0 0 595 842] /Resources " + resources + b" " + entries,
                  content)


def jpeg_bytes(w: int = 200, h: int = 300, *, mode: str = "L", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 128).save(buf, "JPEG", **save)
    return buf.getvalue()


def with_sof(data: bytes, w: int, h: int) -> bytes:
    """A JPEG whose frame header declares w x h."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", h, w) + data[i + 9 :]


def jpeg_segment_flood(size: int = 8 << 20) -> bytes:
    """A small JPEG whose scan comes after ``size`` bytes of comment segments (decoders keep them all)."""
    data = jpeg_bytes(900, 1200)
    scan = data.index(b"\xff\xda")
    comment = b"\xff\xfe" + struct.pack(">H", 0xFFFF) + b"x" * 0xFFFD
    return data[:scan] + comment * (size // len(comment)) + data[scan:]


def type3_glyph_flood(glyphs: int = 300_000, paths: int = 300) -> bytes:
    """A Type 3 font whose one glyph strokes ``paths`` lines, shown ``glyphs`` times on one spot (TJ moves
    back after each): the font is selected once, but every glyph shown runs its procedure. Before glyphs
    were counted, rendering it ran past 5 minutes."""
    proc = b"1000 0 d0 " + b"0 0 m 1000 1000 l S " * paths
    return doc(zlib.compress(b"BT /T3 12 Tf 72 700 Td [" + b"(a) 1000 " * glyphs + b"] TJ ET"),
               b"<< /Font << /T3 5 0 R >> >>", content_entries=b"/Filter /FlateDecode", extra={
                   5: b"<< /Type /Font /Subtype /Type3 /FontBBox [0 0 1000 1000] /FontMatrix "
                      b"[0.001 0 0 0.001 0 0] /CharProcs << /a 6 0 R >> /Encoding << /Type "
                      b"/Encoding /Differences [97 /a] >> /FirstChar 97 /LastChar 97 /Widths [1000] >>",
                   6: stream(b"", proc)})


def jp2_codestream(w: int, h: int) -> bytes:
    """The start of a JPEG 2000 codestream: SOC and a SIZ header declaring w x h, one component."""
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, w, h, 0, 0, w, h, 0, 0, 1) + bytes([7, 1, 1])
    return b"\xff\x4f\xff\x51" + siz + b"\xff\xd9"


def page_tree_loop() -> bytes:
    return pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        4: stream(b"", INK),
    })


def page_tree_deep(depth: int = 2000) -> bytes:
    """Pages nodes 2, 100, 101... each the only kid of the last; the page (5) at the bottom."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 4: stream(b"", INK)}
    nodes = [2, *range(100, 100 + depth - 1)]
    for k, n in enumerate(nodes):
        kid = nodes[k + 1] if k + 1 < len(nodes) else 5
        parent = b"/Parent %d 0 R" % nodes[k - 1] if k else b""
        objects[n] = b"<< /Type /Pages /Kids [%d 0 R] /Count 1 %s >>" % (kid, parent)
    objects[5] = b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>" % nodes[-1]
    return pdf(objects)


def many_pages(count: int) -> bytes:
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: stream(b"", INK)}
    kids = b" ".join(b"%d 0 R" % (10 + i) for i in range(count))
    objects[2] = b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count
    for i in range(count):
        objects[10 + i] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R >>"
    return pdf(objects)


def forms_fanout(levels: int = 9, fanout: int = 10) -> bytes:
    """Form k draws form k+1 ``fanout`` times: fanout ** levels draws of the last one."""
    extra = {}
    for k in range(levels):
        n = 5 + k
        if k == levels - 1:
            extra[n] = form(INK)
        else:
            extra[n] = form(b"/F Do " * fanout, b"<< /XObject << /F %d 0 R >> >>" % (n + 1))
    return doc(b"/F Do", b"<< /XObject << /F 5 0 R >> >>", extra=extra)


def forms_chain(depth: int) -> bytes:
    extra = {5 + k: form(b"/F Do", b"<< /XObject << /F %d 0 R >> >>" % (6 + k)) for k in range(depth)}
    extra[5 + depth] = form(INK)
    return doc(b"/F Do", b"<< /XObject << /F 5 0 R >> >>", extra=extra)


def forms_cycle() -> bytes:
    return doc(b"/F Do", b"<< /XObject << /F 5 0 R >> >>", extra={
        5: form(b"/G Do", b"<< /XObject << /G 6 0 R >> >>"),
        6: form(b"/F Do", b"<< /XObject << /F 5 0 R >> >>"),
    })


def xref_stream_pdf(objects: dict[int, bytes], in_stream: dict[int, bytes], stream_data: bytes,
                    stream_entries: bytes = b"/Filter /FlateDecode") -> bytes:
    """A PDF 1.5 file: ``objects`` in the body, ``in_stream`` inside object stream 10 (its data
    ``stream_data``, already encoded; None: written plainly), a cross-reference stream (object 11)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for n in sorted(objects):
        offsets[n] = len(out)
        out += b"%d 0 obj\n" % n + objects[n] + b"\nendobj\n"
    numbers = sorted(in_stream)
    offsets[10] = len(out)
    out += b"10 0 obj\n" + stream(b"/Type /ObjStm /N %d /First 64 " % len(numbers) + stream_entries, stream_data)
    out += b"\nendobj\n"
    offsets[11] = len(out)
    rows = b""
    for n in range(12):
        if n in offsets:
            rows += struct.pack(">BIH", 1, offsets[n], 0)
        elif n in in_stream:
            rows += struct.pack(">BIH", 2, 10, numbers.index(n))
        else:
            rows += struct.pack(">BIH", 0, 0, 0xFFFF)
    out += b"11 0 obj\n" + stream(b"/Type /XRef /Size 12 /W [1 4 2] /Root 1 0 R", rows) + b"\nendobj\n"
    out += b"startxref\n%d\n%%%%EOF\n" % offsets[11]
    return bytes(out)


def object_stream_bomb(size: int = GiB) -> bytes:
    """The catalog and page tree inside an object stream that then inflates to 1 GiB of zeros: qpdf
    inflates the whole stream to read the catalog, as soon as the file is opened."""
    inside = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"}
    body = b" ".join(inside.values())
    header = b"1 0 2 %d" % (len(inside[1]) + 1)
    prefix = header.ljust(64) + body + b" "
    return xref_stream_pdf({
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        4: stream(b"", INK),
    }, inside, prefixed_bomb(prefix, size))


def xref_stream_bomb() -> bytes:
    """A cross-reference stream, which every reader inflates on opening, inflating to 1 GiB."""
    data = pdf({1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"})
    body = data[: data.index(b"xref\n")]
    return body + b"4 0 obj\n" + stream(b"/Type /XRef /Size 5 /W [1 4 2] /Root 1 0 R /Filter /FlateDecode",
                                        zeros_bomb(GiB)) + b"\nendobj\nstartxref\n%d\n%%%%EOF\n" % len(body)


def encrypted_pdf() -> bytes:
    import pikepdf

    with pikepdf.open(io.BytesIO(doc())) as p:
        out = io.BytesIO()
        p.save(out, encryption=pikepdf.Encryption(user="secret", owner="owner", R=6))
        return out.getvalue()


def image_pdf() -> bytes:
    """A scanner-like page: one 1000x1400 px Flate image over A4."""
    rows = bytes(range(200)) * 5
    data = zlib.compress(rows * 1400)
    return full_page_image(stream(image_entries(1000, 1400) + b" /Filter /FlateDecode", data))


def incremental_garbage() -> bytes:
    """A good PDF, then an "update" that points the page at a lost content stream, with a broken xref."""
    base = image_pdf()
    update = (b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /Im0 "
              b"77 0 R >> >> /Contents 4 0 R >>\nendobj\n")
    return base + update + b"xref\n0 1\ngarbage!\ntrailer\n<< /Size 4 /Root 1 0 R /Prev 99999 >>\nstartxref\n%d\n" \
        b"%%%%EOF\n" % (len(base) + len(update))


def broken_xref_lost_image() -> bytes:
    """Every xref offset wrong (qpdf rebuilds it) and the page's image object gone."""
    data = image_pdf()
    start = data.index(b"5 0 obj")
    end = data.index(b"endobj", start) + len(b"endobj")
    data = data[:start] + b" " * (end - start) + data[end:]
    i = data.index(b"xref\n")
    return data[:i] + re.sub(rb"\d{10} 00000 n", b"9999999999 00000 n", data[i:])


# --- images --------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w: int, h: int, depth: int = 8, ctype: int = 0, idat: bytes | None = None, before: bytes = b"") -> bytes:
    if idat is None:
        row = (w * depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype] + 7) // 8 + 1
        idat = zlib.compress(bytes(row) * min(h, 64))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + before + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def good_png(w: int = 850, h: int = 1100) -> bytes:
    buf = io.BytesIO()
    im = Image.new("L", (w, h), 255)
    im.paste(0, (80, 100, 500, 130))
    im.save(buf, "PNG", dpi=(100, 100))
    return buf.getvalue()


def tiff_header_frames(sizes: list[tuple[int, int]], *, loop: bool = False) -> bytes:
    """A little-endian TIFF of 1-bit frames with the given declared sizes and one byte of data each."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    ifd_offsets = []
    for w, h in sizes:
        data_at = len(out)
        out += b"\x00\x00"
        ifd_at = len(out)
        ifd_offsets.append(ifd_at)
        tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 1), (259, 3, 1, 1), (262, 3, 1, 0),
                (273, 4, 1, data_at), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, 2)]
        out += struct.pack("<H", len(tags))
        for tag, typ, count, value in tags:
            out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3
                                                             else struct.pack("<I", value))
        out += b"\x00\x00\x00\x00"
    struct.pack_into("<I", out, 4, ifd_offsets[0])
    for a, b in zip(ifd_offsets, ifd_offsets[1:], strict=False):
        struct.pack_into("<I", out, a + 2 + 9 * 12, b)
    if loop:
        last = ifd_offsets[-1]
        struct.pack_into("<I", out, last + 2 + 9 * 12, ifd_offsets[0])
    return bytes(out)


def tiff_tag_bomb(values: int = 5_000_000) -> bytes:
    """A 1000x1400 TIFF frame whose StripOffsets tag holds ``values`` numbers (20 MB of file; Pillow
    builds a tuple of them as it opens the file)."""
    frame = bytearray(tiff_header_frames([(1000, 1400)]))
    ifd = struct.unpack_from("<I", frame, 4)[0]
    entry = ifd + 2 + 5 * 12  # the sixth tag: StripOffsets (273)
    struct.pack_into("<HHII", frame, entry, 273, 4, values, len(frame))
    return bytes(frame) + bytes(4 * values)


def many_frame_tiff(count: int) -> bytes:
    frames = [Image.new("1", (120, 120), 1) for _ in range(count)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], dpi=(72, 72))
    return buf.getvalue()


def exif_loop_jpeg() -> bytes:
    """A JPEG with an EXIF block whose IFD points at itself and an orientation of 6, cut short."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<I", 8)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    good = jpeg_bytes(900, 1200)
    whole = good[:2] + app1 + good[2:]
    return whole[: len(whole) // 2]


def gif_huge() -> bytes:
    screen = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00"
    return screen + b",\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02D\x01\x00;"


def bmp_huge() -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 100000, 100000, 1, 1, 0, 0,
                                                                       2835, 2835, 0, 0)


def webp_file() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (900, 1200), "white").save(buf, "WEBP")
    return buf.getvalue()


# --- entries that are not plain files --------------------------------------------------------------------


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    """A listening Unix socket at ``path`` (bound in a short folder, then moved: sun_path is 108 bytes)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(os.path.join(short, "s"))
            os.rename(os.path.join(short, "s"), path)
        finally:
            s.close()


def symlink_out(outside: Path) -> Callable[[Path], None]:
    """A symlink to a good page in ``outside``, a folder that is not part of the corpus."""

    def make(path: Path) -> None:
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / "someone-elses-dossier.png"
        target.write_bytes(good_png())
        path.symlink_to(target)

    return make


def folder(*entries: tuple[str | bytes, Callable[[Path], object]]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        for name, mk in entries:
            raw = name if isinstance(name, bytes) else name.encode()
            mk(Path(os.fsdecode(os.fsencode(path) + b"/" + raw)))

    return make


def write(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)
    return make


def sparse(size: int, head: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(head)
            fh.truncate(size)
    return make


# --- the corpus -------------------------------------------------------------------------------------------

E = ExitCode
PNG_PAGE = write(good_png)


def cases(outside: Path | None = None) -> list[Case]:
    """The corpus; symlinks that lead out of it point into ``outside`` (default: a folder in /tmp)."""
    outside = outside or Path(tempfile.gettempdir()) / "hoso-hostile-outside"
    bomb = zeros_bomb(GiB)
    return [
        # PDF structure
        Case(b"pdf-header-only.pdf", E.input_corrupt, "a PDF header and nothing else",
             write(b"%PDF-1.7\n%%EOF\n")),
        Case(b"pdf-truncated.pdf", E.input_corrupt, "a scan cut at 40 %", write(lambda: image_pdf()[:1800])),
        Case(b"pdf-broken-xref.pdf", E.input_corrupt, "every xref offset wrong and the page image lost",
             write(broken_xref_lost_image)),
        Case(b"pdf-incremental-garbage.pdf", E.input_corrupt, "an update with a garbage xref drawing a lost image",
             write(incremental_garbage)),
        Case(b"pdf-page-tree-loop.pdf", E.input_corrupt, "the page tree holds itself", write(page_tree_loop)),
        Case(b"pdf-page-tree-deep.pdf", E.input_corrupt, "a page tree 2000 levels deep", write(page_tree_deep)),
        Case(b"pdf-deep-nesting.pdf", E.input_corrupt, "an array nested 100000 deep in the page",
             write(lambda: doc(resources=b"<< /X " + b"[" * 100_000 + b"]" * 100_000 + b" >>"))),
        Case(b"pdf-no-pages.pdf", E.input_empty, "an empty page tree",
             write(pdf({1: b"<< /Type /Catalog /Pages 2 0 R >>", 2: b"<< /Type /Pages /Kids [] /Count 0 >>"}))),
        Case(b"pdf-too-many-pages.pdf", E.input_too_large, "2001 pages", write(lambda: many_pages(2001))),
        Case(b"pdf-encrypted.pdf", E.input_encrypted, "a user password", write(encrypted_pdf)),
        Case(b"pdf-javascript.pdf", E.input_unsupported, "JavaScript run on open",
             write(doc(catalog=b"/OpenAction << /S /JavaScript /JS (app.launchURL\\('http://x'\\)) >>"))),
        Case(b"pdf-launch.pdf", E.input_unsupported, "a link annotation that launches a program",
             write(doc(page=b"/Annots [<< /Type /Annot /Subtype /Link /Rect [0 0 595 842] "
                            b"/A << /S /Launch /F (cmd.exe) >> >>]"))),
        Case(b"pdf-zero-size-page.pdf", E.input_invalid_page, "MediaBox [0 0 0 0]",
             write(doc(mediabox=b"[0 0 0 0]"))),
        Case(b"pdf-tiny-page.pdf", E.input_invalid_page, "a 10x10 pt page", write(doc(mediabox=b"[0 0 10 10]"))),
        Case(b"pdf-rotate-name.pdf", E.input_invalid_page, "/Rotate /Sideways", write(doc(page=b"/Rotate /Sideways"))),
        Case(b"pdf-huge-mediabox.pdf", E.input_too_large, "a 200x200 inch vector page",
             write(doc(mediabox=b"[0 0 14400 14400]"))),
        Case(b"pdf-userunit.pdf", E.input_too_large, "an A4 box with /UserUnit 1000",
             write(doc(page=b"/UserUnit 1000"))),
        Case(b"pdf-absurd-mediabox.pdf", E.input_too_large, "a MediaBox a billion points wide",
             write(doc(mediabox=b"[0 0 1000000000 1000000000]"))),
        Case(b"pdf-missing-image.pdf", E.input_corrupt, "the page draws an image object that does not exist",
             write(doc(b"q 595 0 0 842 0 0 cm /Im0 Do Q", b"<< /XObject << /Im0 99 0 R >> >>"))),
        Case(b"pdf-image-data-missing.pdf", E.input_corrupt, "an image stream with no data",
             write(full_page_image(stream(image_entries(1000, 1400), b"")))),
        Case(b"pdf-stream-length-lie.pdf", E.input_corrupt, "/Length 99999999999 and the file cut in the stream",
             write(lambda: doc(content=b"0 g " * 100).replace(b"/Length 400", b"/Length 99999999999")[:300])),
        Case(b"pdf-content-bomb.pdf", E.input_too_large, "a content stream inflating to 1 GiB",
             write(lambda: doc(bomb, content_entries=b"/Filter /FlateDecode"))),
        Case(b"pdf-flate-in-flate.pdf", E.input_too_large, "Flate inside Flate inflating to 16 GiB",
             write(lambda: doc(double_bomb(16 * GiB), content_entries=b"/Filter [/FlateDecode /FlateDecode]"))),
        Case(b"pdf-image-bomb.pdf", E.input_too_large, "a 1000x1400 px image whose data inflates to 1 GiB",
             write(lambda: full_page_image(stream(image_entries(1000, 1400) + b" /Filter /FlateDecode", bomb)))),
        Case(b"pdf-image-huge.pdf", E.input_too_large, "a 1-bit image declared 100000x100000 px",
             write(lambda: full_page_image(stream(image_entries(100_000, 100_000, b"/BitsPerComponent 1 "
                                                  b"/ColorSpace /DeviceGray /Filter /FlateDecode"),
                                           zlib.compress(bytes(12500) * 10))))),
        Case(b"pdf-image-in-form.pdf", E.input_too_large, "a 60000x60000 px image inside a form XObject",
             write(lambda: doc(b"/F Do", b"<< /XObject << /F 5 0 R >> >>", extra={
                 5: form(b"q 595 0 0 842 0 0 cm /Im Do Q", b"<< /XObject << /Im 6 0 R >> >>"),
                 6: stream(image_entries(60_000, 60_000, b"/BitsPerComponent 1 /ColorSpace /DeviceGray "
                                         b"/Filter /FlateDecode"), zlib.compress(bytes(7500) * 10))}))),
        Case(b"pdf-inline-image-huge.pdf", E.input_too_large, "an inline image declared 50000x50000 px",
             write(lambda: doc(b"q 595 0 0 842 0 0 cm BI /W 50000 /H 50000 /BPC 1 /CS /G /F /Fl ID "
                               + zlib.compress(bytes(6250) * 4) + b"\nEI Q"))),
        Case(b"pdf-inline-image-bomb.pdf", E.input_too_large, "a 100x100 inline image whose data inflates to 1 GiB",
             write(lambda: doc(b"q 595 0 0 842 0 0 cm BI /W 100 /H 100 /BPC 8 /CS /G /F /Fl ID " + bomb
                               + b"\nEI Q"))),
        Case(b"pdf-jbig2-huge.pdf", E.input_too_large, "a JBIG2 image declared 200000x200000 px",
             write(lambda: full_page_image(stream(image_entries(200_000, 200_000, b"/BitsPerComponent 1 "
                                                  b"/ColorSpace /DeviceGray /Filter /JBIG2Decode"),
                                           b"\x00" * 64)))),
        Case(b"pdf-jpx-lying.pdf", E.input_too_large, "a JPEG 2000 image: 1000x1400 in its dictionary, "
             "60000x60000 in its codestream",
             write(lambda: full_page_image(stream(image_entries(1000, 1400, b"/BitsPerComponent 8 "
                                                  b"/ColorSpace /DeviceGray /Filter /JPXDecode"),
                                           jp2_codestream(60_000, 60_000))))),
        Case(b"pdf-dct-lying.pdf", E.input_too_large, "a JPEG image: 1000x1400 in its dictionary, 60000x60000 "
             "in its frame header",
             write(lambda: full_page_image(stream(image_entries(1000, 1400, b"/BitsPerComponent 8 "
                                                  b"/ColorSpace /DeviceGray /Filter /DCTDecode"),
                                           with_sof(jpeg_bytes(), 60_000, 60_000))))),
        Case(b"pdf-ccitt-huge.pdf", E.input_too_large, "a fax image of 200000 columns and rows",
             write(lambda: full_page_image(stream(image_entries(200_000, 200_000, b"/BitsPerComponent 1 "
                                                  b"/ColorSpace /DeviceGray /Filter /CCITTFaxDecode "
                                                  b"/DecodeParms << /K -1 /Columns 200000 /Rows 200000 >>"),
                                           b"\x00" * 64)))),
        Case(b"pdf-forms-recursive.pdf", E.input_corrupt, "form A draws form B draws form A", write(forms_cycle)),
        Case(b"pdf-forms-fanout.pdf", E.input_too_large, "nine levels of forms drawing ten forms: 10^9 draws",
             write(forms_fanout)),
        Case(b"pdf-forms-deep.pdf", E.input_too_large, "200 forms each inside the last",
             write(lambda: forms_chain(200))),
        Case(b"pdf-q-nesting.pdf", E.input_too_large, "5 million nested graphics states (q)",
             write(lambda: doc(zlib.compress(b"q " * 5_000_000), content_entries=b"/Filter /FlateDecode"))),
        Case(b"pdf-type3-bomb.pdf", E.input_too_large, "a Type 3 glyph procedure inflating to 1 GiB",
             write(lambda: doc(b"BT /T3 12 Tf 72 700 Td (a) Tj ET",
                               b"<< /Font << /T3 5 0 R >> >>", extra={
                                   5: b"<< /Type /Font /Subtype /Type3 /FontBBox [0 0 1000 1000] /FontMatrix "
                                      b"[0.001 0 0 0.001 0 0] /CharProcs << /a 6 0 R >> /Encoding << /Type "
                                      b"/Encoding /Differences [97 /a] >> /FirstChar 97 /LastChar 97 /Widths "
                                      b"[1000] >>",
                                   6: stream(b"/Filter /FlateDecode", bomb)}))),
        Case(b"pdf-type3-glyph-flood.pdf", E.input_too_large,
             "a Type 3 glyph of 900 operators shown 300000 times on one spot (270 million operators)",
             write(type3_glyph_flood)),
        Case(b"pdf-glyph-flood.pdf", E.input_too_large, "one string of 3 million glyphs",
             write(lambda: doc(zlib.compress(b"BT /F1 1 Tf (" + b"x" * 3_000_000 + b") Tj ET"),
                               b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>",
                               content_entries=b"/Filter /FlateDecode"))),
        Case(b"pdf-font-file-bomb.pdf", E.input_too_large, "an embedded font file inflating to 1 GiB",
             write(lambda: doc(b"BT /F1 12 Tf 72 700 Td (abc) Tj ET", b"<< /Font << /F1 5 0 R >> >>", extra={
                 5: b"<< /Type /Font /Subtype /TrueType /BaseFont /Bomb /FirstChar 97 /LastChar 99 /Widths "
                    b"[500 500 500] /FontDescriptor 6 0 R >>",
                 6: b"<< /Type /FontDescriptor /FontName /Bomb /Flags 32 /FontBBox [0 0 1000 1000] /ItalicAngle 0 "
                    b"/Ascent 800 /Descent -200 /CapHeight 700 /StemV 80 /FontFile2 7 0 R >>",
                 7: stream(b"/Filter /FlateDecode", bomb)}))),
        Case(b"pdf-annotation-bomb.pdf", E.input_too_large, "an annotation appearance inflating to 1 GiB",
             write(lambda: doc(page=b"/Annots [<< /Type /Annot /Subtype /Square /Rect [0 0 100 100] "
                                    b"/AP << /N 5 0 R >> >>]",
                               extra={5: stream(b"/Type /XObject /Subtype /Form /BBox [0 0 100 100] "
                                                b"/Filter /FlateDecode", bomb)}))),
        Case(b"pdf-sparse-5GiB.pdf", E.input_too_large, "a PDF header then 5 GiB of holes",
             sparse(5 * GiB, b"%PDF-1.4\n")),
        Case(b"pdf-object-stream-bomb.pdf", E.input_too_large, "the catalog in an object stream inflating to 1 GiB",
             write(object_stream_bomb)),
        Case(b"pdf-xref-stream-bomb.pdf", E.input_too_large, "a cross-reference stream inflating to 1 GiB",
             write(xref_stream_bomb)),
        Case(b"pdf-array-bomb.pdf", E.input_too_large, "5 million numbers in one array (750 MB to parse)",
             write(lambda: doc(resources=b"<< /X [" + b"0 " * 5_000_000 + b"] >>"))),
        # image formats
        Case(b"png-huge.png", E.input_too_large, "a 1-bit PNG declared 50000x50000 px",
             write(lambda: png(50_000, 50_000, 1))),
        Case(b"png-idat-bomb.png", E.input_too_large, "a 1000x1400 PNG whose data inflates to 1 GiB",
             write(lambda: png(1000, 1400, idat=bomb))),
        Case(b"png-truncated.png", E.input_corrupt, "a PNG cut in its image data",
             write(lambda: good_png()[: len(good_png()) // 2])),
        Case(b"png-zero-width.png", E.input_invalid_page, "a PNG 0 px wide", write(lambda: png(0, 1100))),
        Case(b"png-palette-16bit.png", E.input_corrupt, "a palette PNG of 16 bits per pixel",
             write(lambda: png(900, 1200, 16, 3, before=png_chunk(b"PLTE", b"\x00\x00\x00")))),
        Case(b"png-palette-missing.png", E.input_corrupt, "a palette PNG without its palette",
             write(lambda: png(900, 1200, 8, 3))),
        Case(b"png-apng-frames.png", E.input_too_large, "an animated PNG declaring 2^31 frames",
             write(lambda: png(900, 1200, before=png_chunk(b"acTL", struct.pack(">II", 0x7FFFFFFF, 0))))),
        Case(b"png-tiny.png", E.input_invalid_page, "a 10x10 px page", write(lambda: good_png(10, 10))),
        Case(b"png-rgb-too-big-to-decode.png", E.input_too_large, "a 9000x9000 RGB PNG (324 MB to decode)",
             write(lambda: png(9000, 9000, 8, 2))),
        Case(b"jpeg-huge.jpg", E.input_too_large, "a JPEG frame header of 65000x65000 px",
             write(lambda: with_sof(jpeg_bytes(), 65_000, 65_000))),
        Case(b"jpeg-two-frame-headers.jpg", E.input_corrupt, "two frame headers that disagree",
             write(lambda: jpeg_two_sofs())),
        Case(b"jpeg-truncated.jpg", E.input_corrupt, "a JPEG cut in half",
             write(lambda: jpeg_bytes(900, 1200)[: len(jpeg_bytes(900, 1200)) // 2])),
        Case(b"jpeg-exif-loop.jpg", E.input_corrupt, "an EXIF block that loops, orientation 6, cut short",
             write(exif_loop_jpeg)),
        Case(b"jpeg-segment-flood.jpg", E.input_too_large, "8 MB of comment segments before the scan",
             write(jpeg_segment_flood)),
        Case(b"jpeg-progressive-big.jpg", E.input_too_large, "a progressive 9000x9000 RGB JPEG header",
             write(lambda: with_sof(jpeg_bytes(mode="RGB"), 9000, 9000).replace(b"\xff\xc0", b"\xff\xc2"))),
        Case(b"tiff-frame-bomb.tif", E.input_too_large, "a third TIFF frame declared 100000x100000 px",
             write(lambda: tiff_header_frames([(1000, 1400), (1000, 1400), (100_000, 100_000)]))),
        Case(b"tiff-frame-loop.tif", E.input_corrupt, "TIFF frames that loop",
             write(lambda: tiff_header_frames([(1000, 1400), (1000, 1400)], loop=True))),
        Case(b"tiff-many-frames.tif", E.input_too_large, "2001 frames", write(lambda: many_frame_tiff(2001))),
        Case(b"tiff-tag-bomb.tif", E.input_too_large, "a tag of 5 million numbers (Pillow: a tuple of them)",
             write(tiff_tag_bomb)),
        Case(b"tiff-1bit-huge.tif", E.input_too_large, "a 1-bit TIFF declared 200000x200000 px",
             write(lambda: tiff_header_frames([(200_000, 200_000)]))),
        Case(b"tiff-truncated.tif", E.input_corrupt, "a TIFF whose frame lies past its end",
             write(lambda: tiff_header_frames([(1000, 1400)])[:8] + b"\x00" * 4)),
        Case(b"bmp-huge.bmp", E.input_unsupported, "a BMP declared 100000x100000 px", write(bmp_huge)),
        Case(b"gif-huge.gif", E.input_unsupported, "a GIF declared 65535x65535 px", write(gif_huge)),
        Case(b"webp-page.webp", E.input_unsupported, "a WebP page", write(webp_file)),
        # sizes
        Case(b"empty.pdf", E.input_empty, "0 bytes", write(b"")),
        Case(b"one-byte.pdf", E.input_unsupported, "1 byte", write(b"%")),
        Case(b"text-named.pdf", E.input_unsupported, "text with a PDF's name", write(b"scanned 14/07/2025\n")),
        # names (content a good page unless the name is accepted)
        Case(b"name-bell-\x07.png", E.input_bad_name, "a control character (BEL)", PNG_PAGE),
        Case(b"name-newline-\n.png", E.input_bad_name, "a newline", PNG_PAGE),
        Case(b"name-ansi-\x1b[31mred.png", E.input_bad_name, "a terminal escape sequence", PNG_PAGE),
        Case(b"name-latin1-h\xf4 s\xf4.png", E.input_bad_name, "Latin-1 bytes, not UTF-8", PNG_PAGE),
        Case(b"name-overlong-\xc0\xaf.png", E.input_bad_name, "an overlong UTF-8 sequence", PNG_PAGE),
        Case(b"name-rtl-\xe2\x80\xaegnp.exe", E.input_bad_name, "a right-to-left override (U+202E)", PNG_PAGE),
        Case(b"name-zero-width-\xe2\x80\x8b.png", E.input_bad_name, "a zero-width space (U+200B)", PNG_PAGE),
        Case(b"name-back\\slash.png", E.input_bad_name, "a backslash", PNG_PAGE),
        Case(b"name-long-" + b"x" * 241 + b".png", E.input_bad_name, "255 bytes", PNG_PAGE),
        Case(b"-leading-dash.pdf", E.input_empty, "a name starting with '-' (accepted; the file is empty)",
             write(b"")),
        Case(b"dots..in..name.pdf", E.input_empty, "'..' inside a name (accepted; the file is empty)", write(b"")),
        Case("hồ sơ NFD.pdf".encode().replace("ồ".encode(), "ô\u0300".encode()).replace(
            "ơ".encode(), "o\u031b".encode()), E.input_unsupported,
            "Vietnamese in NFD, as macOS writes it (accepted; the file is 1 byte)", write(b"%")),
        # folders of pages
        Case(b"folder-empty", E.input_empty, "a folder without pages", folder()),
        Case(b"folder-with-pdf", E.input_unsupported, "a PDF among page images",
             folder(("p1.png", PNG_PAGE), ("p2.pdf", write(doc())))),
        Case(b"folder-with-fifo", E.input_not_regular, "a FIFO among page images",
             folder(("p1.png", PNG_PAGE), ("p2.png", make_fifo))),
        Case(b"folder-with-symlink-out", E.input_not_regular, "a symlink to a page outside the folder",
             folder(("p1.png", PNG_PAGE), ("p2.png", symlink_out(outside)))),
        Case(b"folder-with-subfolder", E.input_not_regular, "a subfolder among page images",
             folder(("p1.png", PNG_PAGE), ("more", folder(("p2.png", PNG_PAGE))))),
        Case(b"folder-bad-page-name", E.input_bad_name, "a page named with a control character",
             folder(("p1.png", PNG_PAGE), (b"p2\x01.png", PNG_PAGE))),
        Case(b"folder-bomb-page", E.input_too_large, "a good page, then a PNG bomb",
             folder(("p1.png", PNG_PAGE), ("p2.png", write(lambda: png(1000, 1400, idat=bomb))))),
        # not plain files
        Case(b"fifo.pdf", E.input_not_regular, "a FIFO (reading it would wait forever)", make_fifo),
        Case(b"socket.pdf", E.input_not_regular, "a Unix socket", make_socket),
        Case(b"dev-zero.pdf", E.input_not_regular, "a symlink to /dev/zero (endless zeros)",
             lambda p: p.symlink_to("/dev/zero")),
        Case(b"link-out.png", E.input_not_regular, "a symlink to a good page outside the folder",
             symlink_out(outside)),
        Case(b"link-dangling.pdf", E.input_not_regular, "a symlink to nothing",
             lambda p: p.symlink_to(p.parent / "does-not-exist.pdf")),
        Case(b"link-loop.pdf", E.input_not_regular, "a symlink to itself", lambda p: p.symlink_to(p.name)),
    ]


def jpeg_two_sofs() -> bytes:
    data = jpeg_bytes(900, 1200)
    i = data.index(b"\xff\xc0")
    (length,) = struct.unpack(">H", data[i + 2 : i + 4])
    sof = data[i : i + 2 + length]
    return data[:i] + sof + with_sof(sof, 30_000, 30_000) + data[i + 2 + length :]


def write_corpus(root: Path) -> list[tuple[Case, Path]]:
    """Write every case into the new folder ``root`` (symlink targets outside it go to ``root``-outside,
    beside it); returns (case, its path) in table order."""
    root.mkdir(parents=True)
    out = []
    for case in cases(root.parent / (root.name + "-outside")):
        path = Path(os.fsdecode(os.fsencode(root) + b"/" + case.name))
        case.make(path)
        out.append((case, path))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tests/support/hostile.py OUT_DIR", file=sys.stderr)
        return 2
    for case, _path in write_corpus(Path(argv[1])):
        print(f"{int(case.expect):3d} {case.expect.name:18s} {case.shown:40s} {case.attack}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
