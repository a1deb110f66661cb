"""Stage 6: the OCR run: validate, stream pages to worker processes, merge results in page order."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ocr.load import InputInfo, LoadedPage, inspect_input, iter_pages
from ocr.models import OcrOptions, OcrResult, RecognizedPage, Word
from ocr.pdf import assemble, text_layer_pdf, write_page_pdf
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
from ocr.recognize import Recognition, recognize, text_confidence
from ocr.triage import to_gray, triage
from pipeline.core.errors import OcrFailed

__all__ = ["inspect_input", "ocr_input", "process_page", "InputInfo"]

# Upright text scores ~0.85-0.96 mean word confidence; upside-down or sideways text ~0.35-0.55.
LOW_CONFIDENCE = 0.7
# A strip read both ways up: a difference this large settles 0 against 180 without reading the page twice.
STRIP_MARGIN = 0.15
STRIP_DPI = 200  # the strip is read at this resolution: fast, and enough to tell upright text


@dataclass(frozen=True)
class PageJob:
    index: int
    image_path: Path
    dpi: int
    pdf_path: Path
    pdf_source: tuple[Path, int] | None = None  # the input page whose image is kept as it is
    jpeg_file: Path | None = None


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


def process_page(
    image: Image.Image,
    index: int,
    dpi: int,
    options: OcrOptions,
    pdf_path: Path,
    *,
    keep_source: bool = False,
    jpeg_file: Path | None = None,
) -> RecognizedPage:
    """Triage, straighten, recognise one page and write its one-page searchable PDF to ``pdf_path``.

    The PDF page keeps the original image (shown upright through /Rotate) with the text layer mapped
    onto it; ``keep_source`` leaves a placeholder for the input PDF's own image stream, ``jpeg_file``
    embeds that file's bytes.
    """
    jpeg = jpeg_file.read_bytes() if jpeg_file is not None and not keep_source else None
    gray = to_gray(image)
    tri = triage(gray, dpi)
    if tri.kind == "blank":
        write_page_pdf(image, dpi, None, pdf_path, jpeg=jpeg, placeholder=keep_source)
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
    page, to_photo = image, None
    quad = find_page_quad(gray, dpi)
    if quad is not None:  # a photo of the page on a desk: OCR the page flattened to a rectangle
        page, to_photo = flatten_page(image, quad)
        gray = to_gray(page)
    geo = analyse_geometry(gray, dpi)
    # Tesseract reads grey: drop the colour (and the seals with it) once, before any turning.
    ocr_page = grey_for_ocr(page, dpi, gray)
    del gray
    rotation, skew, rec = _recognize_upright(ocr_page, dpi, geo, options)
    del ocr_page
    text_pdf = text_layer_pdf(rec.lines, rec.width, rec.height, rec.dpi) if rec.lines else None
    write_page_pdf(
        image, dpi, text_pdf, pdf_path, rotation=rotation, skew=skew, jpeg=jpeg, placeholder=keep_source,
        flattened=None if to_photo is None else (to_photo, page.size),
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
        width_px=page.height if rotation % 180 else page.width,
        height_px=page.width if rotation % 180 else page.height,
        text=rec.text,
        words=words,
        confidence=round(rec.confidence, 4),
        separator_payload=tri.separator_payload,
        rescan_reason=tri.rescan_reason,
    )


def _run_job(job: PageJob, options: OcrOptions) -> RecognizedPage:
    with Image.open(job.image_path) as im:
        im.load()
        page = process_page(
            im, job.index, job.dpi, options, job.pdf_path, keep_source=job.pdf_source is not None,
            jpeg_file=job.jpeg_file,
        )
    job.image_path.unlink(missing_ok=True)
    return page


def _worker_init() -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"
    cv2.setNumThreads(1)  # parallelism is across pages


_POOL: tuple[int, ProcessPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool(jobs: int) -> ProcessPoolExecutor:
    """A process pool kept across runs: starting workers costs ~1 s, a lot for a 5-page dossier."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL[0] != jobs:
            _POOL[1].shutdown(wait=True)
            _POOL = None
        if _POOL is None:
            ctx = multiprocessing.get_context("forkserver")  # no fork of a possibly threaded parent
            _POOL = (jobs, ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init))
        return _POOL[1]


def _shutdown_pool() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL[1].shutdown(wait=False, cancel_futures=True)
            _POOL = None


atexit.register(_shutdown_pool)


def _spool(pages: Iterator[LoadedPage], work: Path) -> Iterator[PageJob]:
    """Write each page to a temp file for a worker (uncompressed TIFF: fast to write and read)."""
    for page in pages:
        img_path = work / f"in-{page.index:05d}.tiff"
        page.image.save(img_path, "TIFF")
        yield PageJob(
            page.index, img_path, page.dpi, work / f"page-{page.index:05d}.pdf", page.pdf_source, page.jpeg_file
        )


def ocr_input(info: InputInfo, out_pdf: Path, options: OcrOptions) -> OcrResult:
    """OCR an inspected input (:func:`inspect_input`) into a searchable PDF and per-page results."""
    start = time.monotonic()
    jobs = options.jobs or os.cpu_count() or 1
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hoso-ocr-", dir=out_pdf.parent))
    try:
        results: list[RecognizedPage] = []
        job_list: list[PageJob] = []
        if jobs == 1 or info.page_count == 1:
            for page in iter_pages(info, options):
                pdf_path = work / f"page-{page.index:05d}.pdf"
                job_list.append(PageJob(page.index, Path(), page.dpi, pdf_path, page.pdf_source))
                results.append(
                    process_page(
                        page.image, page.index, page.dpi, options, pdf_path,
                        keep_source=page.pdf_source is not None, jpeg_file=page.jpeg_file,
                    )
                )
                del page
        else:
            pool = _pool(jobs)
            pending: deque[Future[RecognizedPage]] = deque()
            try:
                # At most 2 pages per worker wait on disk: memory and temp space stay bounded.
                for job in _spool(iter_pages(info, options), work):
                    job_list.append(job)
                    pending.append(pool.submit(_run_job, job, options))
                    while len(pending) >= 2 * jobs:
                        results.append(pending.popleft().result())
                while pending:
                    results.append(pending.popleft().result())
            except BrokenProcessPool as exc:
                _shutdown_pool()
                raise OcrFailed(f"an OCR worker process died: {exc}") from exc
            finally:
                for fut in pending:
                    fut.cancel()
        tmp_out = work / "out.pdf"
        assemble([j.pdf_path for j in job_list], tmp_out, [j.pdf_source for j in job_list])
        shutil.move(tmp_out, out_pdf)
        return OcrResult(pages=results, pdf_path=out_pdf, seconds=round(time.monotonic() - start, 3))
    finally:
        shutil.rmtree(work, ignore_errors=True)
