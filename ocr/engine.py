"""Stage 6: the OCR run: validate, stream pages to an engine (in worker processes), merge in page order."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import cv2
from PIL import Image

from ocr.load import InputInfo, LoadedPage, inspect_input, iter_pages
from ocr.models import OcrOptions, OcrResult, RecognizedPage
from ocr.pdf import assemble
from ocr.plugin import OcrEngine, PageImage
from ocr.tesseract import TesseractEngine
from pipeline.core.errors import OcrFailed

__all__ = ["inspect_input", "ocr_input", "page_pool", "InputInfo"]


@dataclass(frozen=True)
class PageJob:
    index: int
    image_path: Path
    dpi: int
    pdf_path: Path
    pdf_source: tuple[Path, int] | None = None  # the input page whose image is kept as it is
    jpeg_file: Path | None = None


def _page_image(job: PageJob, image: Image.Image) -> PageImage:
    return PageImage(
        job.index, image, job.dpi, job.pdf_path, keep_source=job.pdf_source is not None, jpeg_file=job.jpeg_file
    )


def _run_job(engine: OcrEngine, job: PageJob, options: OcrOptions) -> RecognizedPage:
    """Recognise a spooled page (in a worker process)."""
    with Image.open(job.image_path) as im:
        im.load()
        page = engine.recognize_page(_page_image(job, im), options)
    job.image_path.unlink(missing_ok=True)
    return page


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent decides (a watcher finishes its dossier first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_THREAD_LIMIT"] = "1"
    cv2.setNumThreads(1)  # parallelism is across pages


def page_pool(jobs: int) -> ProcessPoolExecutor:
    """Worker processes for :func:`ocr_input`, one engine thread each; whoever makes it shuts it down.

    Starting workers costs ~1 s, a lot for a 5-page dossier: keep one pool per process and reuse it.
    """
    ctx = multiprocessing.get_context("forkserver")  # no fork of a possibly threaded parent
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)


def _job(page: LoadedPage, image_path: Path, work: Path) -> PageJob:
    pdf_path = work / f"page-{page.index:05d}.pdf"
    return PageJob(page.index, image_path, page.dpi, pdf_path, page.pdf_source, page.jpeg_file)


def _spool(pages: Iterable[LoadedPage], work: Path) -> Iterator[PageJob]:
    """Write each page to a temp file for a worker (uncompressed TIFF: fast to write and read)."""
    for page in pages:
        img_path = work / f"in-{page.index:05d}.tiff"
        page.image.save(img_path, "TIFF")
        yield _job(page, img_path, work)


def _recognize_here(
    engine: OcrEngine, pages: Iterable[LoadedPage], work: Path, options: OcrOptions
) -> Iterator[tuple[PageJob, RecognizedPage]]:
    """Each page recognised in this process, in order."""
    for page in pages:
        job = _job(page, Path(), work)
        result = engine.recognize_page(_page_image(job, page.image), options)
        del page  # one decoded page in memory at a time
        yield job, result


def _recognize_in(
    executor: Executor, engine: OcrEngine, jobs: Iterable[PageJob], options: OcrOptions, window: int
) -> Iterator[tuple[PageJob, RecognizedPage]]:
    """Each spooled page recognised by ``executor``'s workers, in order; at most ``window`` pages wait."""
    pending: deque[tuple[PageJob, Future[RecognizedPage]]] = deque()
    try:
        for job in jobs:
            pending.append((job, executor.submit(_run_job, engine, job, options)))
            while len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    except BrokenProcessPool as exc:
        raise OcrFailed(f"an OCR worker process died: {exc}") from exc
    finally:
        for _, future in pending:
            future.cancel()


def ocr_input(
    info: InputInfo,
    out_pdf: Path,
    options: OcrOptions,
    *,
    engine: OcrEngine | None = None,
    executor: Executor | None = None,
) -> OcrResult:
    """OCR an inspected input (:func:`inspect_input`) into a searchable PDF and per-page results.

    ``engine`` recognises each page (Tesseract unless given). With an ``executor`` (:func:`page_pool`)
    several pages are recognised at once; without one, with ``jobs=1`` or for a one-page input, one
    after another in this process.
    """
    start = time.monotonic()
    page_engine: OcrEngine = engine or TesseractEngine()
    jobs = options.jobs or os.cpu_count() or 1
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hoso-ocr-", dir=out_pdf.parent))
    try:
        pages = iter_pages(info, options)
        if jobs == 1:  # one core for OCR (a worker per core): OpenCV's own threads would take another
            cv2.setNumThreads(1)
        if executor is None or jobs == 1 or info.page_count == 1:
            done = _recognize_here(page_engine, pages, work, options)
        else:  # at most 2 pages per worker wait on disk: memory and temp space stay bounded
            done = _recognize_in(executor, page_engine, _spool(pages, work), options, window=2 * jobs)
        job_list: list[PageJob] = []
        results: list[RecognizedPage] = []
        for job, page in done:
            job_list.append(job)
            results.append(page)
        tmp_out = work / "out.pdf"
        assemble([j.pdf_path for j in job_list], tmp_out, [j.pdf_source for j in job_list])
        shutil.move(tmp_out, out_pdf)
        return OcrResult(pages=results, pdf_path=out_pdf, seconds=round(time.monotonic() - start, 3))
    finally:
        shutil.rmtree(work, ignore_errors=True)
