"""Stage 4: Tesseract on one prepared page: text, words with boxes, and a text-only PDF page.

One Tesseract run renders both TSV (words, boxes, confidences) and a text-only PDF (the invisible text
layer). Tesseract is held to one thread: pages run in parallel processes instead, which is faster.
Through tesserocr the engine stays loaded in each worker process (no process start and model load per
page; see bench/ocr_sample.py --backends); the ``tesseract`` command is the fallback when the module is
missing or finds no language data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytesseract
from PIL import Image

from ocr.models import Word
from pipeline.errors import OcrFailed

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

# psm 4 (one column of lines of varying size) beat psm 3 (automatic layout) on 30-page samples of the
# public corpus (CER 0.0715 -> 0.0708) and of its harder variants (0.0693 -> 0.0668); psm 6 was far worse
# (0.137). bench/ocr_sample.py --variants no-upscale,psm4-no-upscale,psm6
DEFAULT_PSM = 4
STRIP_PSM = 6  # a strip of a few lines is one uniform block of text
TIMEOUT_S = 180
_CACHE_VERSION = "2"
_TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)

try:
    import tesserocr
except ImportError:  # pragma: no cover - the command-line fallback
    tesserocr = None


@dataclass
class Recognition:
    """Tesseract's output for one page image (boxes in that image's pixels)."""

    text: str
    words: list[Word] = field(default_factory=list)
    pdf: bytes = b""

    @property
    def confidence(self) -> float:
        """Mean word confidence (0..1), 0 when no word was found."""
        return float(np.mean([w.confidence for w in self.words])) if self.words else 0.0


def _config(dpi: int, psm: int) -> str:
    return f"--psm {psm} --dpi {dpi} -c textonly_pdf=1"


def parse_tsv(tsv: str) -> tuple[str, list[Word]]:
    """Text (NFC, one line per Tesseract line) and words from Tesseract's TSV output."""
    words: list[Word] = []
    lines: list[str] = []
    current: list[str] = []
    line_key: tuple[str, ...] | None = None
    for row in tsv.splitlines():
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = unicodedata.normalize("NFC", cols[11]).strip()
        if not text:
            continue
        key = tuple(cols[1:5])  # page, block, paragraph, line
        if key != line_key and current:
            lines.append(" ".join(current))
            current = []
        line_key = key
        current.append(text)
        conf = max(0.0, min(100.0, float(cols[10]))) / 100
        left, top, width, height = (int(c) for c in cols[6:10])
        words.append(Word(text=text, left=left, top=top, width=width, height=height, confidence=conf))
    if current:
        lines.append(" ".join(current))
    return "\n".join(lines), words


def _cache_key(gray: np.ndarray, lang: str, config: str) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_VERSION}|{backend()}|{lang}|{config}|{gray.shape}|".encode())
    h.update(np.ascontiguousarray(gray).tobytes())
    return h.hexdigest()


def recognize(
    gray: np.ndarray, dpi: int, lang: str = "vie", psm: int = DEFAULT_PSM, cache_dir: Path | None = None
) -> Recognition:
    """OCR a greyscale page; returns NFC text, words and a text-only PDF page sized at ``dpi``."""
    config = _config(dpi, psm)
    entry: Path | None = None
    if cache_dir is not None:
        entry = Path(cache_dir) / _cache_key(gray, lang, config)
        if (entry / "page.pdf").exists() and (entry / "page.tsv").exists():
            text, words = parse_tsv((entry / "page.tsv").read_text(encoding="utf-8"))
            return Recognition(text, words, (entry / "page.pdf").read_bytes())
    if backend() == "tesserocr":
        pdf, tsv_text = _run_tesserocr(gray, dpi, lang, psm)
    else:
        pdf, tsv_text = _run_tesseract(gray, lang, config)
    if entry is not None:
        _write_cache(entry, pdf, tsv_text)
    text, words = parse_tsv(tsv_text)
    return Recognition(text, words, pdf)


def text_confidence(gray: np.ndarray, dpi: int, lang: str = "vie") -> float:
    """Character-weighted mean word confidence (0..1) of a small image (a strip of a few text lines).

    Cheap enough to try a strip both ways up: upright text scores high, upside-down text low.
    """
    if backend() == "tesserocr":
        with _API_LOCK:
            api = _api(lang, STRIP_PSM)
            api.SetImage(Image.fromarray(gray))
            api.SetSourceResolution(dpi)
            api.Recognize()
            pairs = [(w, c / 100) for w, c in api.MapWordConfidences()]
            api.Clear()
    else:
        tsv = pytesseract.image_to_data(
            gray, lang=lang, config=f"--psm {STRIP_PSM} --dpi {dpi}", timeout=TIMEOUT_S
        )
        pairs = [(w.text, w.confidence) for w in parse_tsv(tsv)[1]]
    total = sum(len(w.strip()) for w, _ in pairs)
    if not total:
        return 0.0
    return float(sum(len(w.strip()) * max(0.0, min(c, 1.0)) for w, c in pairs) / total)


_API_LOCK = threading.Lock()  # a Tesseract engine serves one page at a time
_APIS: dict[tuple[str, int], object] = {}
_BACKEND: str | None = None


def tessdata_dir(lang: str = "vie") -> str | None:
    """The directory holding ``<lang>.traineddata`` (TESSDATA_PREFIX first), or None."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    dirs = [prefix, str(Path(prefix) / "tessdata")] if prefix else []
    for d in [*dirs, *_TESSDATA_DIRS]:
        if (Path(d) / f"{lang.split('+')[0]}.traineddata").exists():
            return d
    return None


def backend() -> str:
    """``tesserocr`` (engine kept loaded in the process) when usable, else ``cli`` (one process a page).

    ``HOSO_OCR_BACKEND=cli`` forces the command line (benchmarks, debugging).
    """
    global _BACKEND
    if _BACKEND is None:
        forced = os.environ.get("HOSO_OCR_BACKEND", "")
        usable = tesserocr is not None and tessdata_dir() is not None
        _BACKEND = "tesserocr" if usable and forced != "cli" else "cli"
    return _BACKEND


def _api(lang: str, psm: int):  # type: ignore[no-untyped-def]
    """This process's Tesseract engine for (lang, psm), loaded once (the caller holds _API_LOCK)."""
    api = _APIS.get((lang, psm))
    if api is None:
        path = tessdata_dir(lang)
        try:
            api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=psm, oem=tesserocr.OEM.LSTM_ONLY)
        except RuntimeError as exc:
            raise OcrFailed(f"cannot load Tesseract language {lang!r} from {path}: {exc}") from exc
        _APIS[(lang, psm)] = api
    return api


def _run_tesserocr(gray: np.ndarray, dpi: int, lang: str, psm: int) -> tuple[bytes, str]:
    # ProcessPages from a file: ProcessPage with an in-memory image leaves the PDF unfinished (tesserocr 2.13).
    with _API_LOCK, tempfile.TemporaryDirectory(prefix="hoso-tess-") as tmp:
        src = Path(tmp) / "page.pgm"
        if not cv2.imwrite(str(src), gray):
            raise OcrFailed("cannot write the page image for tesseract")
        api = _api(lang, psm)
        api.SetVariable("tessedit_create_pdf", "1")
        api.SetVariable("textonly_pdf", "1")
        api.SetVariable("user_defined_dpi", str(dpi))
        base = str(Path(tmp) / "out")
        try:
            ok = api.ProcessPages(base, str(src), timeout=TIMEOUT_S * 1000)
            tsv = api.GetTSVText(0)
        except RuntimeError as exc:
            raise OcrFailed(f"tesseract failed: {exc}") from exc
        finally:
            api.Clear()
        pdf_path = Path(base + ".pdf")
        if not ok or not pdf_path.exists():
            raise OcrFailed(f"tesseract failed or took more than {TIMEOUT_S} s on one page")
        return pdf_path.read_bytes(), tsv


def _run_tesseract(gray: np.ndarray, lang: str, config: str) -> tuple[bytes, str]:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    with tempfile.TemporaryDirectory(prefix="hoso-tess-") as tmp:
        src = Path(tmp) / "page.pgm"  # uncompressed: the cheapest for us to write and for Leptonica to read
        if not cv2.imwrite(str(src), gray):
            raise OcrFailed("cannot write the page image for tesseract")
        base = Path(tmp) / "out"
        tess = pytesseract.pytesseract.tesseract_cmd
        cmd = [tess, str(src), str(base), "-l", lang, *config.split(), "pdf", "tsv"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise OcrFailed(f"tesseract took more than {TIMEOUT_S} s on one page") from exc
        except OSError as exc:
            raise OcrFailed(f"cannot run tesseract: {exc}") from exc
        pdf_path, tsv_path = base.with_suffix(".pdf"), base.with_suffix(".tsv")
        if proc.returncode != 0 or not pdf_path.exists() or not tsv_path.exists():
            err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            raise OcrFailed(f"tesseract failed (exit {proc.returncode}): {err}")
        return pdf_path.read_bytes(), tsv_path.read_text(encoding="utf-8")


def _write_cache(entry: Path, pdf: bytes, tsv: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    (tmp / "page.pdf").write_bytes(pdf)
    (tmp / "page.tsv").write_text(tsv, encoding="utf-8")
    try:
        tmp.rename(entry)  # atomic: parallel workers may race on the same page
    except OSError:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
