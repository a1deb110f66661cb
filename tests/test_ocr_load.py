"""Input validation and page loading: every bad input is refused early with its own error."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from ocr.load import inspect_input, iter_pages
from ocr.models import OcrOptions
from pipeline.core.errors import (
    InputCorrupt,
    InputEmpty,
    InputEncrypted,
    InputError,
    InputInvalidPage,
    InputMissing,
    InputTooLarge,
    InputUnsupported,
)
from pipeline.core.inputs import identify_input

OPTS = OcrOptions.model_validate({})
SHARED_BAD = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "public" / "bad_inputs"


def _page_image(w: int = 850, h: int = 1100, mode: str = "L") -> Image.Image:
    im = Image.new(mode, (w, h), "white" if mode != "1" else 1)
    return im


def _image_pdf(path: Path, pages: int = 2, dpi: int = 100) -> Path:
    """An image-only PDF whose pages are single full-page JPEG images (like a scanner's)."""
    pdf = pikepdf.new()
    for i in range(pages):
        im = _page_image()
        im.paste(0, (100 + 50 * i, 100, 400 + 50 * i, 140))  # a distinct black bar per page
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        w_pt, h_pt = im.width * 72 / dpi, im.height * 72 / dpi
        page = pdf.add_blank_page(page_size=(w_pt, h_pt))
        stream = pikepdf.Stream(pdf, buf.getvalue())
        stream.Type, stream.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        stream.Width, stream.Height, stream.BitsPerComponent = im.width, im.height, 8
        stream.ColorSpace, stream.Filter = pikepdf.Name.DeviceGray, pikepdf.Name.DCTDecode
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=stream))
        page.Contents = pikepdf.Stream(pdf, f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode())
    pdf.save(path)
    return path


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h pixels (the data would be a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (w // 8 + 1) * 16)  # only a few rows: never decoded anyway
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(InputMissing):
        inspect_input(tmp_path / "nope.pdf", OPTS)


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(InputEmpty):
        inspect_input(tmp_path / "empty.pdf", OPTS)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    with pytest.raises(InputEmpty):
        inspect_input(tmp_path / "scans", OPTS)


def test_truncated_pdf_is_corrupt(tmp_path: Path) -> None:
    good = _image_pdf(tmp_path / "good.pdf", pages=3).read_bytes()
    bad = tmp_path / "truncated.pdf"
    bad.write_bytes(good[: int(len(good) * 0.4)])
    with pytest.raises(InputCorrupt):
        inspect_input(bad, OPTS)


def test_encrypted_pdf(tmp_path: Path) -> None:
    src = _image_pdf(tmp_path / "plain.pdf", pages=1)
    enc = tmp_path / "enc.pdf"
    with pikepdf.open(src) as pdf:
        pdf.save(enc, encryption=pikepdf.Encryption(user="secret", owner="owner", R=6))
    with pytest.raises(InputEncrypted) as err:
        inspect_input(enc, OPTS)
    assert "mật khẩu" in err.value.message_vi


def test_zero_size_page(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    pdf.pages[0].MediaBox = pikepdf.Array([0, 0, 0, 0])
    pdf.save(tmp_path / "zero.pdf")
    with pytest.raises(InputInvalidPage):
        inspect_input(tmp_path / "zero.pdf", OPTS)


def test_too_many_pages(tmp_path: Path) -> None:
    src = _image_pdf(tmp_path / "three.pdf", pages=3)
    with pytest.raises(InputTooLarge):
        inspect_input(src, OcrOptions.model_validate({"max_pages": 2}))


def test_pixel_bomb_refused_from_header(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(InputTooLarge):
        inspect_input(bomb, OPTS)
    # Just over a custom limit is refused as well (not only PIL's own 2x bomb guard).
    small = tmp_path / "small.png"
    Image.new("L", (200, 200), 255).save(small)
    with pytest.raises(InputTooLarge):
        inspect_input(small, OcrOptions.model_validate({"max_image_pixels": 39_999}))


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "notes.pdf").write_text("just some text, not a PDF\n")
    with pytest.raises(InputUnsupported):
        inspect_input(tmp_path / "notes.pdf", OPTS)


def test_png_renamed_pdf_is_an_image(tmp_path: Path) -> None:
    f = tmp_path / "scan.pdf"
    _page_image().save(f, "PNG")
    assert identify_input(f).files[0].format == "png"
    info = inspect_input(f, OPTS)
    assert (info.kind, info.page_count) == ("image", 1)


def test_pdf_pages_native_resolution(tmp_path: Path) -> None:
    src = _image_pdf(tmp_path / "two.pdf", pages=2, dpi=100)
    info = inspect_input(src, OPTS)
    assert (info.kind, info.page_count, info.files, info.formats) == ("pdf", 2, [src], ["pdf"])
    assert info.input.files[0].content_type == "application/pdf"
    pages = list(iter_pages(info, OPTS))
    assert [p.index for p in pages] == [1, 2]
    for i, (_index, image, dpi) in enumerate(pages):
        assert image.size == (850, 1100) and dpi == 100
        assert image.getpixel((110 + 50 * i, 120)) < 60  # the page's own bar, not another page's


def test_pdf_vector_page_is_rendered(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(72 * 2, 72 * 3))
    page.Contents = pikepdf.Stream(pdf, b"0 g 10 10 50 50 re f")
    pdf.save(tmp_path / "vec.pdf")
    (page_,) = iter_pages(inspect_input(tmp_path / "vec.pdf", OPTS), OPTS)
    assert page_.dpi == 300 and abs(page_.image.width - 600) <= 1 and abs(page_.image.height - 900) <= 1
    assert page_.image.convert("L").getpixel((100, 800)) == 0  # the filled square, bottom left


def test_folder_and_multipage_tiff(tmp_path: Path) -> None:
    d = tmp_path / "scans"
    d.mkdir()
    frames = [_page_image(400, 500), _page_image(400, 500, "1")]
    frames[0].save(d / "p002.tif", save_all=True, append_images=frames[1:], dpi=(200, 200))
    _page_image(300, 400).save(d / "p001.jpg", dpi=(150, 150))
    (d / ".DS_Store").write_bytes(b"junk")
    info = inspect_input(d, OPTS)
    assert info.kind == "folder" and info.page_count == 3
    assert [f.name for f in info.files] == ["p001.jpg", "p002.tif"]
    pages = list(iter_pages(info, OPTS))
    assert [(p.index, p.image.size, p.dpi, p.image.mode) for p in pages] == [
        (1, (300, 400), 150, "L"),
        (2, (400, 500), 200, "L"),
        (3, (400, 500), 200, "1"),
    ]


def test_folder_with_a_pdf_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    d.mkdir()
    _page_image().save(d / "a.png")
    _image_pdf(d / "b.pdf", pages=1)
    with pytest.raises(InputUnsupported):
        inspect_input(d, OPTS)


@pytest.mark.skipif(not SHARED_BAD.exists(), reason="shared corpus not present")
def test_shared_bad_inputs() -> None:
    expected = {
        "zero_byte.pdf": InputEmpty,
        "truncated.pdf": InputCorrupt,
        "encrypted.pdf": InputEncrypted,
        "decompression_bomb_30000px.png": InputTooLarge,
        "zero_size_page.pdf": InputInvalidPage,
    }
    listed = {e["file"] for e in json.loads((SHARED_BAD / "bad_inputs.json").read_text())}
    assert set(expected) | {"png_renamed.pdf"} == listed
    for name, err in expected.items():
        with pytest.raises(err) as exc:
            inspect_input(SHARED_BAD / name, OPTS)
        assert isinstance(exc.value, InputError) and exc.value.message_vi
    assert inspect_input(SHARED_BAD / "png_renamed.pdf", OPTS).kind == "image"


@pytest.mark.slow  # ~20 s of pages
def test_pages_are_streamed_one_at_a_time(tmp_path: Path) -> None:
    import gc
    import inspect
    import weakref

    frames = [Image.new("L", (300, 400), 200 + i % 50) for i in range(40)]
    src = tmp_path / "many.pdf"
    frames[0].save(src, "PDF", resolution=100, save_all=True, append_images=frames[1:])
    del frames
    options = OcrOptions()
    pages = iter_pages(inspect_input(src, options), options)
    assert inspect.isgenerator(pages)
    alive: list[weakref.ref[Image.Image]] = []
    most = 0
    for page in pages:
        alive.append(weakref.ref(page.image))  # type: ignore[attr-defined]
        del page
        gc.collect()
        most = max(most, sum(r() is not None for r in alive))
    assert len(alive) == 40 and most <= 2
