"""The OCR output kept for retries (ocr/result_cache.py): whole entries only, keyed by input and engine, never
a stale or corrupt one; and the desk's retry after a database outage does not OCR the dossier again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.fake_ocr import ScriptedEngine

from ocr.models import OcrOptions, OcrResult, RecognizedPage
from ocr.plugin import PageImage
from ocr.result_cache import ENTRY, PDF, OcrResultCache
from ocr.tesseract import TesseractEngine
from pipeline.core.errors import StorageFailed
from pipeline.core.retry import RetryPolicy
from pipeline.core.settings import Settings
from pipeline.usecases.archive import BatchInput, process_one
from pipeline.usecases.services import Services

SHA = "ab" * 32
PROCEDURE = "business_household_registration"
SAMPLE = Path(__file__).parents[1] / "pipeline" / "data" / "sample_dossier.pdf"


def _result(tmp: Path, pages: int = 2) -> OcrResult:
    pdf = tmp / "made.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(2000) + b"\n%%EOF\n")
    return OcrResult(
        pages=[RecognizedPage(index=i, kind="content", dpi=300, width_px=2480, height_px=3508, text=f"Trang {i}",
                              confidence=0.9) for i in range(1, pages + 1)],
        pdf_path=pdf,
    )


def test_a_kept_result_comes_back_whole_under_its_own_key_only(tmp_path: Path) -> None:
    cache = OcrResultCache(tmp_path / "kept")
    engine, options = ScriptedEngine(), OcrOptions(jobs=1)
    key = cache.key(SHA, engine, options)
    made = _result(tmp_path)
    assert cache.load(key, tmp_path / "out.pdf", page_count=2) is None
    cache.store(key, made)
    kept = [cache.folder, *cache.folder.rglob("*")]
    assert len(kept) == 4 and all(p.stat().st_mode & 0o077 == 0 for p in kept)  # a citizen's pages: private
    back = cache.load(key, tmp_path / "out.pdf", page_count=2)
    assert back is not None and back.pages == made.pages
    assert back.pdf_path.read_bytes() == made.pdf_path.read_bytes()
    # Other bytes, language, limits, engine or engine settings: another key, nothing found.
    others = {
        cache.key("cd" * 32, engine, options),
        cache.key(SHA, engine, OcrOptions(jobs=1, language="vie+eng")),
        cache.key(SHA, engine, OcrOptions(jobs=1, max_pages=10)),
        cache.key(SHA, TesseractEngine(), options),
        cache.key(SHA, ScriptedEngine(pages=("khác",)), options),
    }
    assert key not in others and len(others) == 5
    assert cache.key(SHA, engine, OcrOptions(jobs=4)) == key  # page-parallel processes do not change the output
    assert TesseractEngine().identity(options).count("|") == 2  # backend | version | language models
    cache.discard(key)
    assert cache.load(key, tmp_path / "out.pdf", page_count=2) is None and not list(cache.folder.iterdir())


def test_a_corrupt_stale_or_half_written_entry_is_never_used(tmp_path: Path) -> None:
    cache = OcrResultCache(tmp_path / "kept")
    key = cache.key(SHA, ScriptedEngine(), OcrOptions(jobs=1))
    out = tmp_path / "out.pdf"

    cache.store(key, _result(tmp_path))
    pdf = cache.folder / key / PDF
    pdf.write_bytes(pdf.read_bytes()[:-1] + b"X")  # one byte differs
    assert cache.load(key, out, page_count=2) is None
    assert not (cache.folder / key).exists()  # removed, not left for the next reader

    cache.store(key, _result(tmp_path))
    assert cache.load(key, out, page_count=3) is None  # not the pages the input has

    cache.store(key, _result(tmp_path))
    meta = json.loads((cache.folder / key / ENTRY).read_text())
    (cache.folder / key / ENTRY).write_text(json.dumps(meta | {"key": "0" * 64}))  # another key's entry moved here
    assert cache.load(key, out, page_count=2) is None

    cache.store(key, _result(tmp_path))
    assert OcrResultCache(cache.folder, max_age=0.0).load(key, out, page_count=2) is None  # too old

    half = cache.folder / f".{key}.dead-writer.tmp"  # a writer killed mid-entry: hidden, never read
    half.mkdir()
    (half / PDF).write_bytes(b"%PDF-1.7\n")
    assert cache.load(key, out, page_count=2) is None
    os.utime(half, (time.time() - 7200, time.time() - 7200))
    cache.store(key, _result(tmp_path))  # a store sweeps what dead writers left
    assert not half.exists() and cache.load(key, out, page_count=2) is not None


class CountingEngine:
    """The scripted engine, counting the pages it is asked to read."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = ScriptedEngine()
        self.pages = 0

    def recognize_page(self, page: PageImage, options: OcrOptions) -> RecognizedPage:
        self.pages += 1
        return self.inner.recognize_page(page, options)


@pytest.mark.slow  # ~3.5 s on a cold process: the digitised copy is signed by both attempts (the stamp font first)
def test_a_retry_after_a_database_outage_does_not_ocr_the_dossier_again(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", natdb="off", ocr_jobs=1, level_digitised="B-B")
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(SAMPLE.read_bytes())
    with Services(settings) as services:
        engine = CountingEngine()
        services.__dict__["ocr_engine"] = engine  # the services' engine (a cached property)
        registry = services.registry
        finalize = registry.finalize_intake
        calls = 0

        def database_away_once(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise StorageFailed("registry unreachable") from ConnectionRefusedError()
            return finalize(*args, **kwargs)  # type: ignore[arg-type]

        registry.finalize_intake = database_away_once  # type: ignore[method-assign]
        result = process_one(BatchInput("scan.pdf", scan, PROCEDURE), services, retry=RetryPolicy(3, 0.01, 0.02))
        assert (result.outcome, result.attempts, calls) == ("processed", 2, 2), result.reason
        record = registry.get(result.dossier_code or "")
        pages = len(record.receipt_json["pages"])
        assert pages > 0 and engine.pages == pages  # read once, not once per attempt
        assert not [p for p in services.ocr_results.folder.iterdir()]  # recorded: nothing kept


@pytest.mark.slow  # a dossier received twice on a cold process (~4 s)
def test_a_run_that_finds_its_dossier_recorded_drops_the_ocr_output_a_crashed_run_kept(tmp_path: Path) -> None:
    """A run that recorded its dossier and died before dropping its kept OCR output: the retry finds the dossier
    recorded (already done) and drops the output, which would otherwise wait HOSO_OCR_KEEP_HOURS."""
    import hashlib

    settings = Settings(data_dir=tmp_path / "var", natdb="off", ocr_jobs=1, level_digitised="B-B")
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(SAMPLE.read_bytes())
    with Services(settings) as services:
        services.__dict__["ocr_engine"] = ScriptedEngine()
        first = process_one(BatchInput("scan.pdf", scan, PROCEDURE), services)
        assert first.outcome == "processed", first.reason
        kept = services.ocr_results
        key = kept.key(hashlib.sha256(scan.read_bytes()).hexdigest(), services.ocr_engine, services.ocr_options)
        kept.store(key, _result(tmp_path))  # what the dead run left
        assert kept.load(key, tmp_path / "out.pdf", page_count=2) is not None
        again = process_one(BatchInput("scan.pdf", scan, PROCEDURE), services)
        assert (again.outcome, again.dossier_code) == ("already_done", first.dossier_code)
        assert kept.load(key, tmp_path / "out.pdf", page_count=2) is None and not list(kept.folder.iterdir())
