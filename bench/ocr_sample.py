"""Preprocessing, page segmentation mode and Tesseract binding measured on a sample of corpus pages.

Run by hand (single process, Tesseract output cached under var/bench/ocr-cache so re-runs are cheap)::

    .venv/bin/python bench/ocr_sample.py                              # 30 public pages, every variant
    .venv/bin/python bench/ocr_sample.py --corpus var/hard --pages 30 # harder variants (ocr_bench --make-hard)
    .venv/bin/python bench/ocr_sample.py --variants base --backends   # tesserocr vs the tesseract command

Pages are spread over document types (round robin, separators and blanks left out). Each page is turned
upright with its ground-truth orientation and levelled by hoso's deskew, so the variants differ only in
the step measured. CER = Levenshtein edits / reference length over the sample (NFC, whitespace collapsed).
Timings are per page on a shared 2-core machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr import recognize as rec_mod  # noqa: E402
from ocr.load import inspect_input, iter_pages  # noqa: E402
from ocr.models import OcrOptions  # noqa: E402
from ocr.preprocess import analyse_geometry, find_page_quad, flatten_page, normalise_for_ocr, rotate_image  # noqa: E402
from ocr.triage import to_gray  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "public"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def sample(corpus: Path, n: int) -> list[tuple[dict, dict]]:
    """(dossier gt, page gt) pairs spread over document types."""
    by_type: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for p in sorted((corpus / "gt").glob("*.json")):
        gt = json.loads(p.read_text(encoding="utf-8"))
        for page in gt["pages"]:
            if page["doc_type"] not in ("blank", "separator"):
                by_type[page["doc_type"]].append((gt, page))
    picked: list[tuple[dict, dict]] = []
    while len(picked) < n and any(by_type.values()):
        for t in sorted(by_type):
            if by_type[t] and len(picked) < n:
                picked.append(by_type[t].pop(len(by_type[t]) // 2))
    return picked


def upright_pages(corpus: Path, picked: list[tuple[dict, dict]]) -> list[tuple[Image.Image, int, str]]:
    """Each picked page flattened (phone photos), turned by its true orientation and levelled."""
    options = OcrOptions()
    wanted: dict[str, set[int]] = defaultdict(set)
    for gt, page in picked:
        wanted[gt["pdf"]].add(page["index"])
    refs = {(gt["pdf"], page["index"]): page for gt, page in picked}
    out = []
    for pdf, indexes in wanted.items():
        for loaded in iter_pages(inspect_input(corpus / pdf, options), options):
            if loaded.index not in indexes:
                continue
            ref = refs[(pdf, loaded.index)]
            image = loaded.image
            quad = find_page_quad(to_gray(image), loaded.dpi)
            if quad is not None:
                image, _ = flatten_page(image, quad)
            geo = analyse_geometry(to_gray(image), loaded.dpi)
            rotation = ref["orientation"]
            skew = geo.skew if rotation % 180 == geo.rotation % 180 else geo.other_skew
            out.append((rotate_image(image, rotation, skew), loaded.dpi, ref["text"]))
    return out


def _binarise(gray: np.ndarray) -> np.ndarray:
    return cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 31, 15)


def _plain(image: Image.Image, dpi: int) -> tuple[np.ndarray, int]:
    """Greyscale and upscaling only: no light flattening, no contrast stretch."""
    gray = np.asarray(image.convert("L"))
    if dpi < 250:
        f = 300 / dpi
        gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        dpi = 300
    return gray, dpi


Prep = Callable[[Image.Image, int], tuple[np.ndarray, int]]
VARIANTS: dict[str, tuple[Prep, int]] = {
    "base": (normalise_for_ocr, 3),
    "psm4": (normalise_for_ocr, 4),
    "psm6": (normalise_for_ocr, 6),
    "psm4-no-upscale": (lambda im, dpi: normalise_for_ocr(im, dpi, upscale=False), 4),
    "plain": (_plain, 3),
    "no-upscale": (lambda im, dpi: normalise_for_ocr(im, dpi, upscale=False), 3),
    "binarise": (lambda im, dpi: (lambda g: (_binarise(g[0]), g[1]))(normalise_for_ocr(im, dpi)), 3),
    "denoise": (lambda im, dpi: (lambda g: (cv2.medianBlur(g[0], 3), g[1]))(normalise_for_ocr(im, dpi)), 3),
    "denoise-no-upscale": (
        lambda im, dpi: (lambda g: (cv2.medianBlur(g[0], 3), g[1]))(normalise_for_ocr(im, dpi, upscale=False)),
        3,
    ),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--pages", type=int, default=30)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--backends", action="store_true", help="time tesserocr against the tesseract command")
    ap.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "ocr-cache")
    args = ap.parse_args()
    os.environ["OMP_THREAD_LIMIT"] = "1"
    cv2.setNumThreads(1)
    pages = upright_pages(args.corpus, sample(args.corpus, args.pages))
    print(f"\n## {args.corpus} — {len(pages)} pages\n\n| variant | CER | s/page (uncached) |\n|---|---|---|")
    for name in args.variants.split(","):
        prep, psm = VARIANTS[name]
        edits = chars = 0
        spent, fresh = 0.0, 0
        for image, dpi, ref in pages:
            gray, ocr_dpi = prep(image, dpi)
            cached = (args.cache / rec_mod._cache_key(gray, "vie", rec_mod._config(ocr_dpi, psm))).exists()
            t = time.perf_counter()
            text = rec_mod.recognize(gray, ocr_dpi, psm=psm, cache_dir=args.cache).text
            if not cached:
                spent, fresh = spent + time.perf_counter() - t, fresh + 1
            edits += Levenshtein.distance(norm(text), norm(ref))
            chars += len(norm(ref))
        per_page = f"{spent / fresh:.2f}" if fresh else "cached"
        print(f"| {name} (psm {psm}) | {edits / max(chars, 1):.4f} | {per_page} |", flush=True)
    if args.backends:
        print("\n| backend | s/page | CER |\n|---|---|---|")
        for backend in ("tesserocr", "cli", "tesserocr", "cli"):  # interleaved: the machine is shared
            rec_mod._BACKEND = backend
            edits = chars = 0
            t = time.perf_counter()
            for image, dpi, ref in pages:
                gray, ocr_dpi = normalise_for_ocr(image, dpi)
                text = rec_mod.recognize(gray, ocr_dpi).text
                edits += Levenshtein.distance(norm(text), norm(ref))
                chars += len(norm(ref))
            print(f"| {backend} | {(time.perf_counter() - t) / len(pages):.2f} | {edits / max(chars, 1):.4f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
