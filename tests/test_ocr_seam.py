"""The OCR engine seam: engines by name, the scripted test engine, and who owns the page pool."""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pikepdf
import pypdfium2 as pdfium
import pytest
import qrcode
from PIL import Image
from support.cli import SAMPLE, SCRIPTED_ENGINE, Hoso
from support.fake_ocr import DyingEngine, ScriptedEngine, pages_of_truth

from ocr import inspect_input, ocr_input
from ocr.engine import page_pool
from ocr.models import OcrOptions, OcrResult
from ocr.plugin import OcrEngine, load_engine
from ocr.tesseract import TesseractEngine
from pipeline.core.errors import ConfigurationError, ExitCode, OcrFailed
from pipeline.core.settings import Settings
from pipeline.usecases.services import Services

W, H, DPI = 1240, 1754, 150
TRUTH = json.loads(SAMPLE.with_suffix(".json").read_text(encoding="utf-8"))


def ocr(src: Path, out: Path, options: OcrOptions, **kwargs: Any) -> OcrResult:
    """Inspect, then OCR (what the desk does)."""
    return ocr_input(inspect_input(src, options), out, options, **kwargs)


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", s)).strip()


def scripted_sample() -> OcrEngine:
    return ScriptedEngine(tuple(pages_of_truth(TRUTH)))


@dataclass(frozen=True)
class Unpicklable:
    """An engine holding a lock: it cannot be sent to a worker process."""

    lock: Any = field(default_factory=threading.Lock)
    name: str = "unpicklable"

    def recognize_page(self, page, options):  # type: ignore[no-untyped-def]
        raise NotImplementedError


UNPICKLABLE = Unpicklable()
NOT_AN_ENGINE = object()


def test_engines_by_name() -> None:
    assert isinstance(load_engine("tesseract"), TesseractEngine)
    assert isinstance(load_engine(" tesseract "), TesseractEngine)
    engine = load_engine(SCRIPTED_ENGINE)  # a class: called without arguments
    assert isinstance(engine, ScriptedEngine) and isinstance(engine, OcrEngine)
    assert engine.pages[0].startswith("CỘNG HÒA")  # the bundled sample's script by default
    assert isinstance(load_engine("ocr.tesseract:TesseractEngine"), TesseractEngine)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "expected one of tesseract"),
        ("tesserocr", "expected one of tesseract"),
        (":Engine", "expected one of tesseract"),
        ("no_such_module_xyz:Engine", "cannot import no_such_module_xyz"),
        ("support.fake_ocr:NoSuchEngine", "has no attribute NoSuchEngine"),
        ("os:getcwd", "is not an OCR engine"),
        ("test_ocr_seam:NOT_AN_ENGINE", "is not an OCR engine"),
        ("test_ocr_seam:UNPICKLABLE", "cannot be sent to worker processes"),
        ("support.fake_ocr:pages_of_truth", "pages_of_truth() failed: TypeError"),
    ],
)
def test_a_bad_engine_name_is_a_configuration_error(spec: str, why: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_engine(spec)
    assert caught.value.exit_code == ExitCode.configuration
    assert why in str(caught.value) and "HOSO_OCR_ENGINE" in str(caught.value)
    assert caught.value.message_vi.startswith("Cấu hình bộ nhận dạng chữ")


@pytest.mark.slow  # `hoso` runs
def test_hoso_with_a_bad_engine_exits_17_before_any_work(tmp_path: Path) -> None:
    hoso = Hoso(tmp_path / "var", {"HOSO_OCR_ENGINE": "no_such_module_xyz:Engine"})
    proc = hoso("ingest", str(SAMPLE), "--procedure", "business_household_registration")
    assert proc.returncode == ExitCode.configuration, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hoso: lỗi [configuration]: Cấu hình bộ nhận dạng chữ"), lines
    assert "no_such_module_xyz" in lines[0]
    assert hoso.stored_keys() == [] and hoso.registry.list_dossiers() == []


def test_scripted_engine_reads_the_sample_into_a_searchable_pdf(tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    result = ocr(SAMPLE, out, OcrOptions(jobs=1), engine=scripted_sample())
    assert [(p.index, p.kind) for p in result.pages] == [(1, "content"), (2, "content")]
    for page, doc in zip(result.pages, TRUTH["documents"], strict=True):
        assert norm(page.text) == norm(doc["text"])
        assert page.words and all(w.left >= 0 and w.left + w.width <= page.width_px for w in page.words)
        assert all(w.top + w.height <= page.height_px for w in page.words)
    pdf = pdfium.PdfDocument(str(out))
    try:
        for i, page in enumerate(result.pages):
            assert norm(pdf[i].get_textpage().get_text_range()) == norm(page.text)
    finally:
        pdf.close()
    with pikepdf.open(SAMPLE) as src, pikepdf.open(out) as dst:  # the scans' own JPEG bytes, as they were
        for a, b in zip(src.pages, dst.pages, strict=True):
            (ia,), (ib,) = a.get_images().values(), b.get_images().values()
            assert ia.read_raw_bytes() == ib.read_raw_bytes()


def _separator() -> Image.Image:
    im = Image.new("L", (W, H), 255)
    qr = qrcode.make("SEP|T-1|01", box_size=12, border=2).get_image().convert("L")
    im.paste(qr, ((W - qr.width) // 2, 500))
    return im


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of five page files: the sample's two pages, a separator, a blank page, the first page again."""
    folder = tmp_path_factory.mktemp("scans")
    with pikepdf.open(SAMPLE) as pdf:
        scans = [pikepdf.PdfImage(next(iter(p.get_images().values()))).as_pil_image() for p in pdf.pages]
    for i, im in enumerate([scans[0], scans[1], _separator(), Image.new("L", (W, H), 255), scans[0]], start=1):
        im.save(folder / f"p{i}.png", dpi=(DPI, DPI))
    return folder


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[no-untyped-def,override]
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.slow  # a page pool of its own (test_cli's ingest runs scripted pages in a pool)
def test_pages_come_back_in_order_from_a_pool_with_triage_kinds(scans: Path, tmp_path: Path) -> None:
    script = ("trang một " * 5, "trang hai " * 5, "không đọc", "không đọc", "trang năm " * 5)
    with page_pool(2) as pool:
        result = ocr(scans, tmp_path / "out.pdf", OcrOptions(jobs=2), engine=ScriptedEngine(script),
                           executor=pool)
    assert [p.kind for p in result.pages] == ["content", "content", "separator", "blank", "content"]
    assert result.pages[2].separator_payload == "SEP|T-1|01"
    assert [norm(p.text) for p in result.pages] == [norm(script[0]), norm(script[1]), "", "", norm(script[4])]
    doc = pdfium.PdfDocument(str(tmp_path / "out.pdf"))
    try:
        assert [norm(doc[i].get_textpage().get_text_range()) for i in range(5)] == [norm(p.text) for p in result.pages]
    finally:
        doc.close()
    assert not list(tmp_path.glob("hoso-ocr-*")), "work files are cleaned up"


def test_one_page_or_one_job_runs_in_this_process(scans: Path, tmp_path: Path) -> None:
    engine = scripted_sample()
    with CountingExecutor() as executor:
        ocr(scans / "p1.png", tmp_path / "a.pdf", OcrOptions(jobs=2), engine=engine, executor=executor)
        ocr(scans, tmp_path / "b.pdf", OcrOptions(jobs=1), engine=engine, executor=executor)
        assert executor.submitted == 0
        ocr(scans, tmp_path / "c.pdf", OcrOptions(jobs=2), engine=engine, executor=executor)
        assert executor.submitted == 5


def test_services_own_the_pool_and_replace_a_broken_one(scans: Path, tmp_path: Path) -> None:
    assert Services(Settings(data_dir=tmp_path / "one", ocr_jobs=1)).ocr_executor is None
    services = Services(Settings(data_dir=tmp_path / "var", ocr_jobs=2, ocr_engine=SCRIPTED_ENGINE))
    assert services._pool is None  # nothing started until OCR needs it
    pool = services.ocr_executor
    assert pool is not None and services.ocr_executor is pool
    with pytest.raises(OcrFailed, match="worker process died"):
        ocr(scans, tmp_path / "a.pdf", services.ocr_options, engine=DyingEngine(page=2), executor=pool)
    fresh = services.ocr_executor
    assert fresh is not pool
    result = ocr(scans, tmp_path / "b.pdf", services.ocr_options, engine=services.ocr_engine, executor=fresh)
    assert [p.index for p in result.pages] == [1, 2, 3, 4, 5]
    services.close()
    assert services._pool is None
    with pytest.raises(RuntimeError):
        fresh.submit(int)  # shut down
