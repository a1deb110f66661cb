"""A scripted OCR engine for tests: real triage and a real text layer, scripted text, no Tesseract.

Like OCRmyPDF's test plugins, it stands in for the OCR engine behind the seam (:mod:`ocr.plugin`), so
the desk chain downstream — segmentation, classification, extraction, validation, signing, storage —
runs for real on known text, fast and the same every time. Select it for the ``hoso`` command with
``HOSO_OCR_ENGINE=support.fake_ocr:ScriptedEngine`` (``tests/`` on PYTHONPATH; :mod:`support.cli` does
this), or pass an instance to ``ocr_input``.

Blank and separator pages are found by the real triage (cheap, no Tesseract). Any other page reads as
the script's text for its page number, laid out as lines of words on the page, and ``""`` past the end
of the script. The script: a list of page texts, or a sample dossier's truth file (each document's text
on its pages) — by default ``$HOSO_TEST_OCR_SCRIPT``, else the bundled sample
``pipeline/data/sample_dossier.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocr.layout import Line, text_of
from ocr.models import OcrOptions, RecognizedPage, Word
from ocr.pdf import text_layer_pdf
from ocr.plugin import PageImage
from ocr.triage import to_gray, triage

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TRUTH = ROOT / "pipeline" / "data" / "sample_dossier.json"
SCRIPT_ENV = "HOSO_TEST_OCR_SCRIPT"  # a truth JSON file, or a JSON list of page texts
DELAY_ENV = "HOSO_TEST_OCR_DELAY"  # seconds each content page takes (to interrupt a run half way)
CONFIDENCE = 0.97


def pages_of_truth(truth: dict) -> list[str]:
    """Page texts from a sample truth (``SampleTruth`` JSON): a document's lines spread over its pages."""
    pages = [""] * int(truth.get("n_pages") or max(p for d in truth["documents"] for p in d["pages"]))
    for doc in truth["documents"]:
        lines = doc["text"].splitlines()
        n = len(doc["pages"])
        for k, number in enumerate(doc["pages"]):
            pages[number - 1] = "\n".join(lines[k * len(lines) // n : (k + 1) * len(lines) // n])
    return pages


def load_script(path: Path) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list):
        return [str(t) for t in data]
    return pages_of_truth(data)


def _script_from_env() -> tuple[str, ...]:
    return tuple(load_script(Path(os.environ.get(SCRIPT_ENV) or SAMPLE_TRUTH)))


def _delay_from_env() -> float:
    return float(os.environ.get(DELAY_ENV) or 0)


def layout(text: str, width: int, height: int, dpi: int) -> list[Line]:
    """The text as lines of words with boxes on a ``width`` x ``height`` page: left-aligned from a 10 %
    margin, 11 pt type, lines closer together when the page would overflow."""
    rows = [line.split() for line in unicodedata.normalize("NFC", text).splitlines()]
    rows = [r for r in rows if r]
    if not rows:
        return []
    size = 11 * dpi / 72
    pitch = min(1.6 * size, 0.8 * height / len(rows))
    size = min(size, pitch / 1.25)
    char = min(0.5 * size, 0.8 * width / max(len(" ".join(r)) for r in rows))
    lines: list[Line] = []
    for i, words in enumerate(rows):
        left, top = 0.1 * width, 0.1 * height + i * pitch
        line: Line = []
        for w in words:
            box = Word(text=w, left=round(left), top=round(top), width=max(1, round(len(w) * char)),
                       height=max(1, round(size)), confidence=CONFIDENCE)
            line.append(box)
            left += (len(w) + 1) * char
        lines.append(line)
    return lines


@dataclass(frozen=True)
class ScriptedEngine:
    """Reads each content page as the script says (see the module docstring)."""

    pages: Sequence[str] = field(default_factory=_script_from_env)
    delay: float = field(default_factory=_delay_from_env)
    name: str = "scripted"

    @classmethod
    def from_file(cls, path: Path) -> ScriptedEngine:
        return cls(tuple(load_script(path)))

    def recognize_page(self, page: PageImage, options: OcrOptions) -> RecognizedPage:
        image, dpi = page.image, page.dpi
        tri = triage(to_gray(image), dpi)
        text = self.pages[page.index - 1] if tri.kind == "content" and page.index <= len(self.pages) else ""
        lines = layout(text, image.width, image.height, dpi)
        if tri.kind == "content" and self.delay:
            time.sleep(self.delay)
        page.write_pdf(text_layer_pdf(lines, image.width, image.height, dpi) if lines else None)
        words = [w for line in lines for w in line]
        return RecognizedPage(
            index=page.index,
            kind=tri.kind,
            dpi=dpi,
            width_px=image.width,
            height_px=image.height,
            text=text_of(lines),
            words=words,
            confidence=CONFIDENCE if words else 0.0,
            separator_payload=tri.separator_payload,
            rescan_reason=None if tri.kind == "blank" else tri.rescan_reason,  # as TesseractEngine
        )


@dataclass(frozen=True)
class DyingEngine:
    """Kills the worker process it runs in on page ``page`` (a crashed OCR worker); other pages as scripted."""

    page: int = 2
    name: str = "dying"

    def recognize_page(self, page: PageImage, options: OcrOptions) -> RecognizedPage:
        if page.index == self.page:
            if multiprocessing.parent_process() is None:
                raise RuntimeError("DyingEngine only dies in a worker process, never in the test's own")
            os._exit(70)
        return ScriptedEngine().recognize_page(page, options)
