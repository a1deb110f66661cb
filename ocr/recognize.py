"""Stage 4: Tesseract on one prepared page: lines of words with boxes and confidences, in reading order.

Tesseract renders TSV (words, boxes, confidences); :mod:`ocr.layout` drops noise and fixes the reading
order, and :mod:`ocr.pdf` draws the invisible text layer from the same words, so the PDF's text is the
page text. Tesseract is held to one thread: pages run in parallel processes instead, which is faster.
Through tesserocr the engine stays loaded in each worker process (no process start and model load per
page; see bench/ocr_sample.py --backends); the ``tesseract`` command is the fallback when the module is
missing or finds no language data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytesseract
from PIL import Image

from ocr.layout import Line, drop_noise, reading_order, split_wide_gaps, text_of
from ocr.models import Word
from pipeline.core.errors import OcrFailed

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

# psm 4 (one column of lines of varying size) beat psm 3 (automatic layout) on 30-page samples of the
# public corpus (CER 0.0715 -> 0.0708) and of its harder variants (0.0693 -> 0.0668); psm 6 was far worse
# (0.137). bench/ocr_sample.py --variants no-upscale,psm4-no-upscale,psm6
DEFAULT_PSM = 4
STRIP_PSM = 6  # a strip of a few lines is one uniform block of text
TIMEOUT_S = 180
_CACHE_VERSION = "3"
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
    """Tesseract's reading of one page image: lines of words in reading order (boxes in that image's
    pixels), noise dropped; ``width`` x ``height`` pixels at ``dpi``."""

    lines: list[Line]
    width: int = 0
    height: int = 0
    dpi: int = 300

    @property
    def text(self) -> str:
        return text_of(self.lines)

    @property
    def words(self) -> list[Word]:
        return [w for line in self.lines for w in line]

    @property
    def confidence(self) -> float:
        """Mean word confidence (0..1), 0 when no word was found."""
        words = self.words
        return float(np.mean([w.confidence for w in words])) if words else 0.0


def parse_tsv_lines(tsv: str) -> list[Line]:
    """Lines of words (NFC) from Tesseract's TSV output, in Tesseract's order."""
    lines: list[Line] = []
    line_key: tuple[str, ...] | None = None
    for row in tsv.splitlines():
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = unicodedata.normalize("NFC", cols[11]).strip()
        if not text:
            continue
        key = tuple(cols[1:5])  # page, block, paragraph, line
        if key != line_key or not lines:
            lines.append([])
        line_key = key
        conf = max(0.0, min(100.0, float(cols[10]))) / 100
        left, top, width, height = (int(c) for c in cols[6:10])
        lines[-1].append(Word(text=text, left=left, top=top, width=width, height=height, confidence=conf))
    return lines


def parse_tsv(tsv: str) -> tuple[str, list[Word]]:
    """Text (one line per Tesseract line) and words from Tesseract's TSV output."""
    lines = parse_tsv_lines(tsv)
    return text_of(lines), [w for line in lines for w in line]


def _cache_key(gray: np.ndarray, lang: str, config: str) -> str:
    h = hashlib.sha256()
    h.update(f"{_CACHE_VERSION}|{backend()}|{lang}|{config}|{gray.shape}|".encode())
    h.update(np.ascontiguousarray(gray).tobytes())
    return h.hexdigest()


def recognize(
    gray: np.ndarray, dpi: int, lang: str = "vie", psm: int = DEFAULT_PSM, cache_dir: Path | None = None
) -> Recognition:
    """OCR a greyscale page: lines of NFC words in reading order, noise dropped.

    With tesserocr, regions Tesseract's layout analysis set aside as pictures (text under a seal or a
    signature, a certification stamp in a frame) are read again as plain blocks of text.
    """
    config = f"--psm {psm} --dpi {dpi}"
    entry: Path | None = None
    raw: dict | None = None
    if cache_dir is not None:
        entry = Path(cache_dir) / f"{_cache_key(gray, lang, config)}.json"
        if entry.exists():
            raw = json.loads(entry.read_text(encoding="utf-8"))
    if raw is None:
        if backend() == "tesserocr":
            tsv, pictures = _run_tesserocr(gray, dpi, lang, psm)
        else:
            tsv, pictures = _run_tesseract(gray, lang, config), []
        raw = {"tsv": tsv, "pictures": pictures}
        if entry is not None:
            _write_cache(entry, json.dumps(raw, ensure_ascii=False))
    lines = drop_noise(parse_tsv_lines(raw["tsv"]))
    taken = [w for line in lines for w in line]
    for origin, picture_tsv in raw["pictures"]:
        lines += _picture_lines(picture_tsv, origin, taken)
    lines = reading_order(split_wide_gaps(lines))
    return Recognition(lines, gray.shape[1], gray.shape[0], dpi)


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


def tessdata_file(name: str) -> Path | None:
    """The file ``name`` in the first tessdata directory that has it (TESSDATA_PREFIX first), or None."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    dirs = [prefix, str(Path(prefix) / "tessdata")] if prefix else []
    for d in [*dirs, *_TESSDATA_DIRS]:
        if (Path(d) / name).exists():
            return Path(d) / name
    return None


def tessdata_dir(lang: str = "vie") -> str | None:
    """The directory holding ``<lang>.traineddata`` (TESSDATA_PREFIX first), or None."""
    found = tessdata_file(f"{lang.split('+')[0]}.traineddata")
    return str(found.parent) if found is not None else None


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


_IDENTITY: dict[str, str] = {}


def tesseract_identity(lang: str) -> str:
    """Tesseract as it reads ``lang`` here: backend, version and each language model's size and time (what the
    OCR result cache keys on; :mod:`ocr.result_cache`). Once per process and language."""
    if lang not in _IDENTITY:
        try:
            version = tesserocr.tesseract_version() if backend() == "tesserocr" else pytesseract.get_tesseract_version()
        except Exception as err:  # noqa: BLE001 — an unknown version is still an identity, if a poorer one
            version = f"unknown ({type(err).__name__})"
        models = []
        for part in lang.split("+"):
            found = tessdata_file(f"{part}.traineddata")
            stat = found.stat() if found is not None else None
            models.append(f"{part}:{stat.st_size}:{stat.st_mtime_ns}" if stat else f"{part}:missing")
        _IDENTITY[lang] = f"{backend()}|{' '.join(str(version).split())}|{','.join(models)}"
    return _IDENTITY[lang]


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


#: Picture regions re-read as text must be at least this big (px at the OCR dpi, ~300).
RESCUE_MIN_SIDE = 40
RESCUE_MIN_CONFIDENCE = 0.6
_IMAGE_BLOCKS = (9, 10, 11)  # tesseract PolyBlockType: flowing, heading, pull-out image


def _run_tesserocr(
    gray: np.ndarray, dpi: int, lang: str, psm: int
) -> tuple[str, list[tuple[tuple[int, int], str]]]:
    """The page's TSV, and the TSV of each picture region read again as text (with its origin)."""
    with _API_LOCK:
        api = _api(lang, psm)
        try:
            api.SetImage(Image.fromarray(gray))
            api.SetSourceResolution(dpi)
            if not api.Recognize(timeout=TIMEOUT_S * 1000):
                raise OcrFailed(f"tesseract failed or took more than {TIMEOUT_S} s on one page")
            tsv = api.GetTSVText(0)
            boxes = _picture_blocks(api)
        except RuntimeError as exc:
            raise OcrFailed(f"tesseract failed: {exc}") from exc
        finally:
            api.Clear()
        return tsv, [_read_picture(gray, dpi, lang, box) for box in boxes]


def _overlaps(word: Word, others: list[Word]) -> bool:
    """Whether a third of ``word``'s box is covered by one of ``others``."""
    area = max(word.width * word.height, 1)
    for o in others:
        dx = min(word.left + word.width, o.left + o.width) - max(word.left, o.left)
        dy = min(word.top + word.height, o.top + o.height) - max(word.top, o.top)
        if dx > 0 and dy > 0 and dx * dy * 3 > area:
            return True
    return False


def _picture_blocks(api) -> list[tuple[int, int, int, int]]:  # type: ignore[no-untyped-def]
    boxes = []
    it = api.GetIterator()
    level = tesserocr.RIL.BLOCK
    for block in tesserocr.iterate_level(it, level):
        if block.BlockType() in _IMAGE_BLOCKS:
            box = block.BoundingBox(level)
            if box and min(box[2] - box[0], box[3] - box[1]) >= RESCUE_MIN_SIDE:
                boxes.append(box)
    return boxes


def _read_picture(
    gray: np.ndarray, dpi: int, lang: str, box: tuple[int, int, int, int]
) -> tuple[tuple[int, int], str]:
    """Read a picture region as one block of text (psm 6): its origin on the page and the TSV."""
    x0, y0, x1, y1 = box
    pad = 8
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(gray.shape[1], x1 + pad), min(gray.shape[0], y1 + pad)
    api = _api(lang, STRIP_PSM)
    try:
        api.SetImage(Image.fromarray(np.ascontiguousarray(gray[y0:y1, x0:x1])))
        api.SetSourceResolution(dpi)
        tsv = api.GetTSVText(0) if api.Recognize(timeout=TIMEOUT_S * 1000) else ""
    finally:
        api.Clear()
    return (x0, y0), tsv


def _picture_lines(tsv: str, origin: tuple[int, int], taken: list[Word]) -> list[Line]:
    """The lines of a picture region's reading that Tesseract is sure of, without the words the page's
    own reading already has (a picture block may hold text blocks); ``taken`` grows by those kept."""
    x0, y0 = origin
    kept = []
    for read in drop_noise(parse_tsv_lines(tsv)):
        moved = (w.model_copy(update={"left": w.left + x0, "top": w.top + y0}) for w in read)
        line = [w for w in moved if not _overlaps(w, taken)]
        chars = sum(len(w.text) for w in line)
        conf = sum(len(w.text) * w.confidence for w in line) / max(chars, 1)
        if conf >= RESCUE_MIN_CONFIDENCE and chars >= 3:
            kept.append(line)
            taken.extend(line)
    return kept


def _run_tesseract(gray: np.ndarray, lang: str, config: str) -> str:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    with tempfile.TemporaryDirectory(prefix="hoso-tess-") as tmp:
        src = Path(tmp) / "page.pgm"  # uncompressed: the cheapest for us to write and for Leptonica to read
        if not cv2.imwrite(str(src), gray):
            raise OcrFailed("cannot write the page image for tesseract")
        base = Path(tmp) / "out"
        tess = pytesseract.pytesseract.tesseract_cmd
        cmd = [tess, str(src), str(base), "-l", lang, *config.split(), "tsv"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise OcrFailed(f"tesseract took more than {TIMEOUT_S} s on one page") from exc
        except OSError as exc:
            raise OcrFailed(f"cannot run tesseract: {exc}") from exc
        tsv_path = base.with_suffix(".tsv")
        if proc.returncode != 0 or not tsv_path.exists():
            err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            raise OcrFailed(f"tesseract failed (exit {proc.returncode}): {err}")
        return tsv_path.read_text(encoding="utf-8")


def _write_cache(entry: Path, data: str) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    os.replace(tmp, entry)  # atomic: parallel workers may race on the same page
