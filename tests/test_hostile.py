"""Hostile input: the corpus of tests/support/hostile.py through the real ``hoso`` command, and the bounds
and name rules behind it on their own.

Every hostile entry must end with its own exit code, quickly (a hang is a failure), with nothing stored
and no dossier recorded; as a batch, each is recorded as failed with that cause. Legitimate inputs must
still pass the same checks.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pikepdf
import pytest
from PIL import Image
from support.cli import Hoso
from support.hostile import Case, cases, double_bomb, prefixed_bomb, write_corpus, zeros_bomb
from support.servers import PrefectServer

from ocr.bounds import MAX_STREAM_BYTES
from ocr.load import WORK_PIXELS, inspect_input, iter_pages
from ocr.models import OcrOptions
from pipeline.core.errors import ExitCode, InputBadName, InputCorrupt, InputTooLarge
from pipeline.core.inputs import MAX_NAME_BYTES, display_name, identify_input, name_problem
from pipeline.usecases.archive import discover_batch
from storage.objects import LocalObjectStore

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "corpus" / "public"
PROCEDURE = "business_household_registration"
OPTS = OcrOptions()


def _nothing_kept(hoso: Hoso) -> None:
    assert hoso.stored_keys() == []
    assert hoso.registry.list_dossiers() == []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Case, Path]]:
    return write_corpus(tmp_path_factory.mktemp("hostile") / "corpus")


def test_the_corpus_is_generated_and_broad() -> None:
    table = cases()
    assert len(table) >= 40
    assert len({c.name for c in table}) == len(table) and len({c.shown for c in table}) == len(table)
    assert {c.expect for c in table} >= {
        ExitCode.input_empty, ExitCode.input_corrupt, ExitCode.input_encrypted, ExitCode.input_unsupported,
        ExitCode.input_too_large, ExitCode.input_invalid_page, ExitCode.input_not_regular, ExitCode.input_bad_name,
    }


def test_the_bombs_are_real() -> None:
    """The corpus's bombs inflate as claimed (else the refusals below would prove nothing)."""
    d = zlib.decompressobj()
    total = 0
    data = zeros_bomb(64 << 20)
    while data:
        total += len(d.decompress(data, 1 << 20))
        data = d.unconsumed_tail
    assert d.eof and total >= 64 << 20
    d = zlib.decompressobj()
    head = d.decompress(prefixed_bomb(b"1 0 2 35", 8 << 20), 4096)
    assert head.startswith(b"1 0 2 35\x00") and set(head[8:]) == {0}
    inner = zlib.decompress(double_bomb(1 << 30))
    assert len(inner) < 2 << 20 and inner == zeros_bomb(1 << 30)
    assert len(zeros_bomb(1 << 30)) < 1.1e6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_hostile_input_is_refused_with_its_exit_code(corpus: list[tuple[Case, Path]], tmp_path: Path) -> None:
    hoso = Hoso(tmp_path / "var", {"HOSO_NATDB": "off"})

    def run(entry: tuple[Case, Path]) -> tuple[Case, subprocess.CompletedProcess[str]]:
        case, path = entry  # a path that is not UTF-8 goes to the command as its own bytes
        return case, hoso("ingest", str(path), "--procedure", PROCEDURE, "--json", timeout=120)

    # The first run creates the development PKI and the registry; the others can then go two at a time.
    results = [run(corpus[0])]
    with ThreadPoolExecutor(2) as pool:
        results += list(pool.map(run, corpus[1:]))
    wrong = []
    for case, proc in results:
        lines = proc.stderr.strip().splitlines()
        ok = (proc.returncode == case.expect and proc.stdout == "" and len(lines) == 1
              and lines[0].startswith(f"hoso: lỗi [{case.expect.name}]: ") and " — " in lines[0])
        if not ok:
            wrong.append(f"{case.shown}: want {int(case.expect)}, got {proc.returncode}: {proc.stderr[-400:]}")
    assert not wrong, "\n".join(wrong)
    _nothing_kept(hoso)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_batch_of_hostile_inputs_is_recorded_as_failed(
    corpus: list[tuple[Case, Path]], tmp_path: Path, prefect_server: PrefectServer
) -> None:
    hoso = Hoso(tmp_path / "var", {"HOSO_NATDB": "off", "PREFECT_API_URL": prefect_server.api_url})
    folder = corpus[0][1].parent
    proc = hoso("reprocess", str(folder), "--procedure", PROCEDURE, "--json", timeout=600)
    assert proc.returncode == ExitCode.failed, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    n = len(corpus)
    assert (summary["total"], summary["failed"], summary["processed"], summary["already_done"]) == (n, n, 0, 0)
    assert set(summary["failures"]) == {case.shown for case, _ in corpus}
    for case, _ in corpus:
        assert summary["failures"][case.shown].startswith(f"{case.expect.name}: "), (case.shown, summary["failures"])
    items = hoso.registry.batch_items(summary["batch_id"])
    assert sorted(i.input_name for i in items) == sorted(case.shown for case, _ in corpus)
    assert all(i.outcome == "failed" and i.reason == summary["failures"][i.input_name] for i in items)
    _nothing_kept(hoso)


# --- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "hồ sơ.pdf", "ho\u0302\u0300 so\u031b.pdf", "-scan.pdf", "a..b.pdf", "..pdf",
    "Giấy khai sinh (bản sao) #2 [1].png", "x" * MAX_NAME_BYTES,
])
def test_names_that_are_accepted(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", [
    "a\x00b", "a\tb.pdf", "a\nb.pdf", "\x7fdel.pdf", "c1-\x85.pdf", "bidi-\u202egnp.exe", "bom-\ufeff.pdf",
    "zw-\u200d.pdf", "line-\u2028.pdf", os.fsdecode(b"latin1-h\xf4.pdf"), "back\\slash.pdf", "x" * (MAX_NAME_BYTES + 1),
    "ố" * 67, "   ",
])
def test_names_that_are_refused(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    english, vietnamese = problem
    for text in (english, vietnamese):
        assert text.isprintable() and "\udcf4" not in text  # one clean line, whatever the name holds


def test_display_names_are_safe_and_unambiguous() -> None:
    assert display_name(os.fsdecode(b"h\xf4.png")) == "h\\xf4.png"
    assert display_name("a\x07b\u202e.png") == "a\\u0007b\\u202e.png"
    assert display_name("a\\u0007b.png") == "a\\\\u0007b.png" != display_name("a\x07b.png")
    assert display_name("hồ sơ.pdf") == "hồ sơ.pdf"
    long = display_name("y" * 300)
    assert len(long) == 120 and long.startswith("yyy") and "…" in long


def test_a_bad_name_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/scan-\xff.pdf"))
    os.mkfifo(path)  # reading it would block: the name alone must refuse it
    with pytest.raises(InputBadName) as err:
        identify_input(path)
    assert err.value.exit_code == ExitCode.input_bad_name and "\\xff" in err.value.message_vi


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_odd_but_accepted_name_is_received_and_stored_under_it(tmp_path: Path) -> None:
    name = "-Tờ khai..bản 1.png"
    page = tmp_path / name
    im = Image.new("L", (1240, 1754), 255)
    im.paste(0, (150, 200, 1000, 240))
    im.save(page, dpi=(150, 150))
    hoso = Hoso(tmp_path / "var", {"HOSO_NATDB": "off"})
    proc = hoso("ingest", str(page), "--procedure", PROCEDURE, "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(proc.stdout)
    key = receipt["artifacts"]["input"]
    assert key == f"dossiers/{receipt['dossier_code']}/input/{name}"
    assert LocalObjectStore(hoso.data_dir / "objects").get_bytes(key) == page.read_bytes()


# --- batches -------------------------------------------------------------------------------------------------


def test_a_manifest_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "manifest.csv").write_bytes("file,procedure\nhô sơ.pdf,1.001193\n".encode("cp1258"))
    with pytest.raises(InputCorrupt, match="UTF-8"):
        discover_batch(batch)


def test_batch_names_are_recorded_as_shown(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "Hồ sơ A.pdf").write_bytes(b"")
    Path(os.fsdecode(os.fsencode(batch) + b"/B-\xe9\x07.pdf")).write_bytes(b"%PDF-1.4\n")
    items = {i.name: i for i in discover_batch(batch)}
    assert set(items) == {"Hồ sơ A.pdf", "B-\\xe9\\u0007.pdf"}
    assert items["Hồ sơ A.pdf"].refused is None
    assert (items["B-\\xe9\\u0007.pdf"].refused or "").startswith("input_bad_name: ")


# --- legitimate inputs still pass --------------------------------------------------------------------------


def _reportlab_pdf(path: Path) -> Path:
    """A born-digital PDF: text in an embedded TrueType font, a form drawn 200 times, a small image."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    font = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")
    c = canvas.Canvas(str(path), pagesize=A4)
    face = "Helvetica"
    if font.exists():
        pdfmetrics.registerFont(TTFont("NotoSans", str(font)))
        face = "NotoSans"
    c.beginForm("tick")
    c.rect(0, 0, 6, 6, fill=1)
    c.endForm()
    for page in range(2):
        c.setFont(face, 12)
        for line in range(40):
            c.drawString(72, 780 - 18 * line, f"Trang {page + 1}, dòng {line + 1}: Cộng hòa xã hội chủ nghĩa Việt Nam")
        for k in range(200):
            c.saveState()
            c.translate(40 + (k % 20) * 25, 40 + (k // 20) * 10)
            c.doForm("tick")
            c.restoreState()
        c.drawImage(ImageReader(Image.new("RGB", (300, 200), "red")), 400, 600, 100, 66)
        c.showPage()
    c.save()
    return path


def test_ordinary_inputs_pass_the_checks(tmp_path: Path) -> None:
    info = inspect_input(_reportlab_pdf(tmp_path / "born-digital.pdf"), OPTS)
    assert info.page_count == 2
    frames = [Image.new("1", (1700, 2200), 1), Image.new("1", (2200, 1700), 0)]
    frames[0].save(tmp_path / "scan.tif", save_all=True, append_images=frames[1:], compression="group4",
                   dpi=(200, 200))
    assert inspect_input(tmp_path / "scan.tif", OPTS).page_count == 2
    Image.new("L", (1240, 1754), 200).save(tmp_path / "grey.tif", compression="tiff_lzw", dpi=(150, 150))
    assert inspect_input(tmp_path / "grey.tif", OPTS).page_count == 1
    Image.new("RGBA", (1170, 2532), (255, 255, 255, 255)).save(tmp_path / "screenshot.png")
    Image.new("RGB", (2480, 3508), "white").save(tmp_path / "photo.jpg", progressive=True, dpi=(300, 300))
    Image.new("P", (1654, 2339), 3).save(tmp_path / "palette.png", dpi=(200, 200))
    for name in ("screenshot.png", "photo.jpg", "palette.png"):
        info = inspect_input(tmp_path / name, OPTS)
        (page,) = iter_pages(info, OPTS)
        assert page.image.mode in ("1", "L", "RGB")
    assert inspect_input(ROOT / "pipeline" / "data" / "sample_dossier.pdf", OPTS).page_count >= 1


@pytest.mark.skipif(not PUBLIC.exists(), reason="shared public corpus not present")
def test_every_public_sample_passes_the_checks() -> None:
    dossiers = sorted((PUBLIC / "dossiers").glob("*.pdf"))
    folders = sorted(p for p in (PUBLIC / "pages").iterdir() if p.is_dir())
    assert dossiers and folders
    for src in [*dossiers, *folders]:
        assert inspect_input(src, OPTS).page_count >= 1, src


@pytest.mark.slow
def test_large_pages_are_decoded_reduced(tmp_path: Path) -> None:
    big = Image.new("L", (9000, 7000), 255)  # 63 Mpx, within the pixel limit, over the work size
    big.paste(0, (1000, 1000, 8000, 1100))
    big.save(tmp_path / "big.jpg", dpi=(600, 600))
    big.save(tmp_path / "big.png", dpi=(600, 600))
    for name, factor in (("big.jpg", 2), ("big.png", 2)):
        (page,) = iter_pages(inspect_input(tmp_path / name, OPTS), OPTS)
        assert page.image.width * page.image.height <= WORK_PIXELS
        assert page.image.width == 9000 // factor and page.dpi == 600 // factor
        assert page.jpeg_file is None  # the embedded JPEG must match the decoded page
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=50)
    pdf = pikepdf.new()
    w_pt, h_pt = 9000 * 72 / 600, 7000 * 72 / 600
    page = pdf.add_blank_page(page_size=(w_pt, h_pt))
    img = pikepdf.Stream(pdf, buf.getvalue(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=9000,
                         Height=7000, BitsPerComponent=8, ColorSpace=pikepdf.Name.DeviceGray,
                         Filter=pikepdf.Name.DCTDecode)
    page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=img))
    page.Contents = pikepdf.Stream(pdf, f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode())
    pdf.save(tmp_path / "big.pdf")
    (rendered,) = iter_pages(inspect_input(tmp_path / "big.pdf", OPTS), OPTS)
    assert rendered.image.width * rendered.image.height <= WORK_PIXELS
    assert rendered.pdf_source is not None  # the original image bytes still go into the output PDF
    assert rendered.image.convert("L").getpixel((rendered.image.width // 2, round(1050 * rendered.dpi / 600))) < 60


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_large_fax_pages_go_through_ocr_reduced(tmp_path: Path) -> None:
    """1-bit Group 4 pages over the work size are decoded whole, reduced in grey, handed to the workers."""
    page = Image.new("1", (6200, 8770), 1)  # A4 at 750 dpi: 54 Mpx
    page.paste(0, (600, 800, 5000, 900))
    page.save(tmp_path / "fax.tif", "TIFF", save_all=True, append_images=[page], compression="group4",
              dpi=(750, 750))
    hoso = Hoso(tmp_path / "var", {"HOSO_NATDB": "off", "HOSO_OCR_JOBS": "2"})
    proc = hoso("ingest", str(tmp_path / "fax.tif"), "--procedure", PROCEDURE, "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert [p["index"] for p in json.loads(proc.stdout)["pages"]] == [1, 2]


def test_stream_caps_are_exact(tmp_path: Path) -> None:
    """Content just under the stream cap passes; just over is refused, by counting, not inflating whole."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    for size, ok in ((MAX_STREAM_BYTES - 4096, True), (MAX_STREAM_BYTES + 4096, False)):
        page.Contents = pikepdf.Stream(pdf, zlib.compress(b" " * size), Filter=pikepdf.Name.FlateDecode)
        pdf.save(tmp_path / "c.pdf")
        if ok:
            assert inspect_input(tmp_path / "c.pdf", OPTS).page_count == 1
        else:
            with pytest.raises(InputTooLarge):
                inspect_input(tmp_path / "c.pdf", OPTS)


def test_stream_decoders_match_the_pdf_reference() -> None:
    import base64

    from ocr.bounds import decode

    lzw = bytes.fromhex("800B6050220C0C8501")  # ISO 32000-1, 7.4.4.2: "-----A---B"
    assert decode(lzw, [("/LZWDecode", None)], 100, 100).head == b"-----A---B"
    run_length = bytes([2]) + b"abc" + bytes([254]) + b"z" + bytes([128])
    assert decode(run_length, [("/RunLengthDecode", None)], 100, 100).head == b"abczzz"
    assert decode(b"48 65 6C6C6F>", [("/ASCIIHexDecode", None)], 100, 100).head == b"Hello"
    a85 = base64.a85encode(b"Hello, hoso") + b"~>"
    assert decode(zlib.compress(a85), [("/FlateDecode", None), ("/A85", None)], 100, 100).head == b"Hello, hoso"
    assert decode(b"\xff\xd8rest", [("/DCTDecode", None)], 100, 2).codec == "dct"
    whole = zlib.compress(bytes(range(256)) * 20)
    broken = decode(whole[: len(whole) // 2], [("/FlateDecode", None)], 10_000, 0)
    assert broken.size < 5120


def test_inline_images_whose_data_holds_EI(tmp_path: Path) -> None:
    """Image data may hold the bytes " EI " by chance: the image ends where its data is whole."""
    raw = (b"\x00 EI \x00" * 2000)[: 100 * 100]
    stored = zlib.compress(b" EI " * 2500, 0)  # deflate without compression: the bytes show through
    for entries, data in ((b"", raw), (b" /F /Fl", stored)):
        content = b"q 100 0 0 100 72 600 cm BI /W 100 /H 100 /BPC 8 /CS /G" + entries + b" ID " + data + b"\nEI Q"
        pdf = pikepdf.new()
        page = pdf.add_blank_page(page_size=(595, 842))
        page.Contents = pikepdf.Stream(pdf, content)
        pdf.save(tmp_path / "inline.pdf")
        assert inspect_input(tmp_path / "inline.pdf", OPTS).page_count == 1
