"""Typed results of the OCR stages. ``ocr`` knows nothing of procedures or dossiers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

PageKind = Literal["content", "separator", "blank"]


class OcrOptions(BaseModel):
    """Options for one OCR run (validated once, passed down to every stage)."""

    language: str = "vie"
    jobs: int = Field(0, ge=0, description="Page-parallel worker processes; 0 = number of cores")
    max_image_pixels: int = Field(100_000_000, gt=0)
    max_pages: int = Field(2000, gt=0)
    cache_dir: Path | None = Field(None, description="Cache Tesseract output by image hash (tests, re-runs)")


class Word(BaseModel):
    text: str
    left: int
    top: int
    width: int
    height: int
    confidence: float = Field(ge=0, le=1)


class RecognizedPage(BaseModel):
    """One input page after triage, preprocessing and recognition."""

    index: int = Field(ge=1, description="1-based position in the input")
    kind: PageKind
    rotation: Literal[0, 90, 180, 270] = Field(
        0, description="Degrees the content was rotated clockwise on the scan (the page was turned back by this)"
    )
    skew_degrees: float = 0.0
    dpi: int
    width_px: int
    height_px: int
    text: str = Field("", description="Recognised text, Unicode NFC, lines joined by newlines")
    words: list[Word] = Field(default_factory=list)
    confidence: float = Field(0.0, ge=0, le=1, description="Mean word confidence")
    separator_payload: str | None = None
    rescan_reason: str | None = Field(None, description="Why a clerk should rescan this page, in Vietnamese")


class OcrResult(BaseModel):
    pages: list[RecognizedPage]
    pdf_path: Path = Field(description="The searchable PDF (page images + invisible aligned text layer)")
    seconds: float = 0.0
