"""The Tesseract engine: triage, page geometry, the grey OCR image, Tesseract, the page's text layer.

Each page: blank and separator sheets are found first (:mod:`ocr.triage`); a photographed page is
flattened; the text-line structure gives the likely way up and the skew (:mod:`ocr.preprocess`);
Tesseract reads the page (:mod:`ocr.recognize`), and again another way up while its confidence is low.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ocr.models import OcrOptions, RecognizedPage, Word
from ocr.pdf import text_layer_pdf
from ocr.plugin import PageImage
from ocr.preprocess import (
    AMBIGUOUS_RATIO,
    Geometry,
    analyse_geometry,
    find_page_quad,
    flatten_page,
    grey_for_ocr,
    normalise_for_ocr,
    rotate_image,
)
from ocr.recognize import Recognition, recognize, tesseract_identity, text_confidence
from ocr.triage import to_gray, triage

# Upright text scores ~0.85-0.96 mean word confidence; upside-down or sideways text ~0.35-0.55.
LOW_CONFIDENCE = 0.7
# A strip read both ways up: a difference this large settles 0 against 180 without reading the page twice.
STRIP_MARGIN = 0.15
STRIP_DPI = 200  # the strip is read at this resolution: fast, and enough to tell upright text


def _prepare(image: Image.Image, dpi: int, rotation: int, skew: float) -> tuple[np.ndarray, int]:
    """The greyscale OCR image of ``image`` turned upright and levelled, and its dpi."""
    return normalise_for_ocr(rotate_image(image, rotation, skew), dpi)


def _candidates(geo: Geometry) -> list[int]:
    """Quarter turns to try, most likely first: the text-line axis both ways up, then (when the line
    structure was ambiguous) the other axis."""
    first = geo.rotation
    turns = [first, (first + 180) % 360]
    if 1 / AMBIGUOUS_RATIO < geo.sideways_ratio < AMBIGUOUS_RATIO:
        turns += [(first + 90) % 360, (first + 270) % 360]
    return turns


def strip_scores(image: Image.Image, dpi: int, geo: Geometry, turns: list[int], lang: str) -> dict[int, float]:
    """Tesseract confidence of the page's densest band of text lines read at each of ``turns`` (those
    along the detected text-line axis)."""
    if geo.strip is None:
        return {}
    x0, y0, x1, y1 = geo.strip
    crop = image.crop((x0, y0, x1, y1))
    f = min(1.0, STRIP_DPI / max(dpi, 1))
    if f < 1:
        crop = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))), Image.Resampling.BOX)
    strip_dpi = round(dpi * f)
    scores = {}
    for turn in turns:
        if turn % 180 != geo.rotation % 180:
            continue  # the strip is a band of lines only along the detected axis
        upright = rotate_image(crop, turn, geo.skew)
        gray, ocr_dpi = normalise_for_ocr(upright, strip_dpi, upscale=False)
        scores[turn] = text_confidence(gray, ocr_dpi, lang)
    return scores


def _recognize_upright(
    image: Image.Image, dpi: int, geo: Geometry, options: OcrOptions
) -> tuple[int, float, Recognition]:
    """OCR at the most likely orientation; if confidence is low, try the others and keep the best.

    Before reading the page again another way up, a strip of a few lines is read each way: it settles
    most cases for a fraction of a page (a noisy page read right way up stays as it is).
    """
    turns = deque(_candidates(geo))
    best: tuple[int, float, Recognition] | None = None
    first: tuple[int, float, Recognition] | None = None
    while turns:
        rotation = turns.popleft()
        skew = geo.skew if rotation % 180 == geo.rotation % 180 else geo.other_skew
        gray, ocr_dpi = _prepare(image, dpi, rotation, skew)
        rec = recognize(gray, ocr_dpi, options.language, cache_dir=options.cache_dir)
        del gray
        if best is None or rec.confidence > best[2].confidence:
            best = (rotation, skew, rec)
        if rec.confidence >= LOW_CONFIDENCE and len(rec.words) >= 3:
            break
        if first is None:
            first = best
            turns = deque(_worth_reading(image, dpi, geo, [rotation, *turns], options.language))
    assert best is not None
    first = first or best
    if geo.strip is None and best[2].confidence < LOW_CONFIDENCE:
        return first  # no text lines and no good reading either way (a QR sheet, a photo): leave it be
    return best


def _worth_reading(image: Image.Image, dpi: int, geo: Geometry, turns: list[int], lang: str) -> list[int]:
    """The turns after the first still worth a full read, most likely first, judged on a strip."""
    first, rest = turns[0], turns[1:]
    scores = strip_scores(image, dpi, geo, turns, lang)
    if first not in scores:
        return rest
    scored = [t for t in rest if t in scores]
    if scored and all(scores[first] - scores[t] >= STRIP_MARGIN for t in scored):
        return [t for t in rest if t not in scores]  # the first way up was right: the page is just hard
    return sorted(rest, key=lambda t: -scores.get(t, -1.0))


def process_page(page: PageImage, options: OcrOptions) -> RecognizedPage:
    """Triage, straighten, recognise one page and write its one-page searchable PDF.

    The PDF page keeps the original image (shown upright through /Rotate) with the text layer mapped
    onto it.
    """
    image, index, dpi = page.image, page.index, page.dpi
    gray = to_gray(image)
    tri = triage(gray, dpi)
    if tri.kind == "blank":
        page.write_pdf(None)
        return RecognizedPage(
            index=index,
            kind="blank",
            rotation=0,
            dpi=dpi,
            width_px=image.width,
            height_px=image.height,
            text="",
            confidence=0.0,
            rescan_reason=None,
        )
    flat, to_photo = image, None
    quad = find_page_quad(gray, dpi)
    if quad is not None:  # a photo of the page on a desk: OCR the page flattened to a rectangle
        flat, to_photo = flatten_page(image, quad)
        gray = to_gray(flat)
    geo = analyse_geometry(gray, dpi)
    # Tesseract reads grey: drop the colour (and the seals with it) once, before any turning.
    ocr_page = grey_for_ocr(flat, dpi, gray)
    del gray
    rotation, skew, rec = _recognize_upright(ocr_page, dpi, geo, options)
    del ocr_page
    text_pdf = text_layer_pdf(rec.lines, rec.width, rec.height, rec.dpi) if rec.lines else None
    page.write_pdf(
        text_pdf, rotation=rotation, skew=skew, flattened=None if to_photo is None else (to_photo, flat.size)
    )
    f = dpi / rec.dpi
    words = [
        Word(
            text=w.text,
            left=round(w.left * f),
            top=round(w.top * f),
            width=round(w.width * f),
            height=round(w.height * f),
            confidence=w.confidence,
        )
        for w in rec.words
    ]
    return RecognizedPage(
        index=index,
        kind=tri.kind,
        rotation=rotation,  # type: ignore[arg-type]
        skew_degrees=round(skew, 2),
        dpi=dpi,
        width_px=flat.height if rotation % 180 else flat.width,
        height_px=flat.width if rotation % 180 else flat.height,
        text=rec.text,
        words=words,
        confidence=round(rec.confidence, 4),
        separator_payload=tri.separator_payload,
        rescan_reason=tri.rescan_reason,
    )


@dataclass(frozen=True)
class TesseractEngine:
    """Tesseract (``HOSO_OCR_LANGUAGE``, ``vie`` by default) with hoso's page preparation around it."""

    name: str = "tesseract"

    def identity(self, options: OcrOptions) -> str:
        """Tesseract's backend, version and language models: a change in any may change what it reads."""
        return tesseract_identity(options.language)

    def recognize_page(self, page: PageImage, options: OcrOptions) -> RecognizedPage:
        return process_page(page, options)
