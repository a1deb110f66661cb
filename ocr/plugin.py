"""The OCR engine seam: what page recognition needs from an engine, and loading one by name.

Like OCRmyPDF's ``OcrEngine`` plugins: :mod:`ocr.engine` streams pages and merges the results; an engine
recognises one page at a time. ``HOSO_OCR_ENGINE`` names it: ``tesseract`` (the default,
:class:`ocr.tesseract.TesseractEngine`) or ``module:attribute`` for a plugin, where the attribute is an
engine or a callable without arguments that returns one (tests use a scripted engine this way).
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ocr.models import OcrOptions, RecognizedPage
from ocr.pdf import write_page_pdf
from pipeline.core.errors import ConfigurationError

BUILTIN_ENGINES = ("tesseract",)


@dataclass(frozen=True)
class PageImage:
    """One decoded input page as an engine gets it, and where its one-page searchable PDF goes."""

    index: int  # 1-based position in the input
    image: Image.Image
    dpi: int
    pdf_path: Path
    keep_source: bool = False  # the input PDF's own image stream replaces this page's image (ocr.pdf.assemble)
    jpeg_file: Path | None = None  # a JPEG whose bytes are the page image, embedded as they are

    def write_pdf(
        self,
        text_pdf: bytes | None,
        *,
        rotation: int = 0,
        skew: float = 0.0,
        flattened: tuple[np.ndarray, tuple[int, int]] | None = None,
    ) -> Path:
        """Write the page's PDF: its original image, shown upright, with ``text_pdf`` (a text-only page of
        the image turned by ``rotation`` and levelled by ``skew``, see :func:`ocr.pdf.text_layer_pdf`)
        mapped onto it."""
        jpeg = self.jpeg_file.read_bytes() if self.jpeg_file is not None and not self.keep_source else None
        return write_page_pdf(
            self.image, self.dpi, text_pdf, self.pdf_path, rotation=rotation, skew=skew, jpeg=jpeg,
            placeholder=self.keep_source, flattened=flattened,
        )


@runtime_checkable
class OcrEngine(Protocol):
    """Recognises one page: writes its searchable one-page PDF (:meth:`PageImage.write_pdf`) and returns
    what it read, text in reading order (NFC) with word boxes in the upright page's pixels.

    Pages of one input may go to worker processes, so an engine must pickle, and must not rely on
    state from an earlier page.
    """

    @property
    def name(self) -> str:
        """Short name for logs, e.g. ``tesseract``."""
        ...

    def recognize_page(self, page: PageImage, options: OcrOptions) -> RecognizedPage: ...


def _bad(spec: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"HOSO_OCR_ENGINE={spec!r}: {why}",
        "Cấu hình bộ nhận dạng chữ (HOSO_OCR_ENGINE) không hợp lệ.",
    )


def load_engine(spec: str) -> OcrEngine:
    """The engine ``spec`` names: a built-in name, or ``module:attribute`` of a plugin."""
    spec = spec.strip()
    if spec == "tesseract":
        from ocr.tesseract import TesseractEngine

        return TesseractEngine()
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise _bad(spec, f"expected one of {', '.join(BUILTIN_ENGINES)} or module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a plugin that fails to import is a configuration fault, whatever it raised
        raise _bad(spec, f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    target = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise _bad(spec, f"{module_name} has no attribute {attribute}") from exc
    engine = target
    if isinstance(engine, type) or (callable(engine) and not isinstance(engine, OcrEngine)):  # a class, a factory
        try:
            engine = engine()
        except Exception as exc:
            raise _bad(spec, f"{attribute}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(engine, OcrEngine):
        raise _bad(spec, f"{attribute} is not an OCR engine (needs a name and recognize_page(page, options))")
    try:
        pickle.dumps(engine)
    except Exception as exc:
        raise _bad(spec, f"the engine cannot be sent to worker processes: {exc}") from exc
    return engine
