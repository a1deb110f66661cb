"""Stage 4: Tesseract on one prepared page: text, words with boxes, and a text-only PDF page.

One Tesseract run renders both TSV (words, boxes, confidences) and a text-only PDF (the invisible text
layer). Tesseract is held to one thread: pages run in parallel processes instead, which is faster.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytesseract

from ocr.models import Word
from pipeline.errors import OcrFailed

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

DEFAULT_PSM = 3
TIMEOUT_S = 180
_CACHE_VERSION = "1"


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
    for row in tsv.splitlines()[1:]:
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
    h.update(f"{_CACHE_VERSION}|{lang}|{config}|{gray.shape}|".encode())
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
    pdf, tsv_text = _run_tesseract(gray, lang, config)
    if entry is not None:
        _write_cache(entry, pdf, tsv_text)
    text, words = parse_tsv(tsv_text)
    return Recognition(text, words, pdf)


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
