"""OCR benchmark: hoso's OCR stage against raw Tesseract and OCRmyPDF, on the same pages in one run.

Run by hand (needs the ``bench`` extra: ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/ocr_bench.py                       # public corpus, every tool
    .venv/bin/python bench/ocr_bench.py --make-hard var/hard  # harder variants (phone photos, noise, low dpi)
    .venv/bin/python bench/ocr_bench.py --tools hoso --limit 5 -v
    .venv/bin/python bench/ocr_bench.py --rss 10,300          # peak RSS of hoso OCR on 10- and 300-page PDFs

Text is taken from each tool's output PDF with PyMuPDF (raw Tesseract: its own PDF renderer), Unicode NFC,
whitespace runs collapsed; CER = Levenshtein edits / reference length and WER the same on words, summed over
non-blank pages. Peak RSS is the sum over the tool's process tree, sampled every 50 ms. Every tool runs as
its own process tree with 2 page-parallel workers; the machine is shared, so timings are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pikepdf
import psutil
from PIL import Image
from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "public"
TOOLS = ("hoso", "tesseract", "ocrmypdf", "ocrmypdf-rd")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


class PeakRss:
    """Peak resident memory of a process tree (sum over the processes alive at each sample)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command; return its wall time and the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakRss(proc.pid) as rss:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return time.perf_counter() - start, rss.peak


@dataclass
class ToolRun:
    """One tool's output on the corpus: per-dossier page texts and rotations, time and memory."""

    name: str
    seconds: float = 0.0
    peak_rss: int = 0
    texts: dict[str, list[str]] = field(default_factory=dict)
    rotations: dict[str, list[int]] = field(default_factory=dict)
    kinds: dict[str, list[str]] = field(default_factory=dict)  # hoso only: content / blank / separator


def pdf_texts(path: Path) -> tuple[list[str], list[int]]:
    """Text of every page (PyMuPDF) and each page's /Rotate."""
    import pymupdf

    with pymupdf.open(path) as doc:
        return [page.get_text() for page in doc], [int(page.rotation) % 360 for page in doc]


# --- the tools -----------------------------------------------------------------------------------------


def run_hoso(pdfs: list[Path], out: Path, jobs: int) -> ToolRun:
    """hoso's OCR stage in one child process over all dossiers (as `hoso reprocess` runs it)."""
    listing = out / "hoso-list.json"
    listing.write_text(json.dumps([str(p) for p in pdfs]))
    cmd = [sys.executable, __file__, "--_hoso-child", str(listing), str(out), str(jobs)]
    seconds, peak = run_measured(cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
    run = ToolRun("hoso", seconds, peak)
    for pdf in pdfs:
        texts, _ = pdf_texts(out / f"hoso-{pdf.stem}.pdf")
        meta = json.loads((out / f"hoso-{pdf.stem}.json").read_text())
        run.texts[pdf.stem] = texts
        run.rotations[pdf.stem] = [p["rotation"] for p in meta]
        run.kinds[pdf.stem] = [p["kind"] for p in meta]
    return run


def _hoso_child(listing: Path, out: Path, jobs: int) -> None:
    from ocr.engine import inspect_input, ocr_input, page_pool
    from ocr.models import OcrOptions

    options = OcrOptions(jobs=jobs)
    with page_pool(jobs) as pool:  # one pool for the run, as a hoso process keeps one
        for pdf in map(Path, json.loads(listing.read_text())):
            result = ocr_input(inspect_input(pdf, options), out / f"hoso-{pdf.stem}.pdf", options, executor=pool)
            pages = [{"rotation": p.rotation, "text": p.text, "kind": p.kind} for p in result.pages]
            (out / f"hoso-{pdf.stem}.json").write_text(json.dumps(pages, ensure_ascii=False))


def page_images(pdf: Path, out: Path) -> list[Path]:
    """The dossier's page images as PNG at their own dpi (input for raw Tesseract; not timed)."""
    from ocr.load import inspect_input, iter_pages
    from ocr.models import OcrOptions

    options = OcrOptions()
    paths = []
    for page in iter_pages(inspect_input(pdf, options), options):
        p = out / f"{pdf.stem}-{page.index:03d}.png"
        page.image.save(p, dpi=(page.dpi, page.dpi))
        paths.append(p)
    return paths


def run_tesseract(pdfs: list[Path], out: Path, jobs: int) -> ToolRun:
    """Raw `tesseract -l vie` per page image (PDF renderer), `jobs` pages at a time."""
    images = {pdf.stem: page_images(pdf, out) for pdf in pdfs}
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def one(img: Path) -> tuple[float, int]:
        return run_measured(["tesseract", str(img), str(img.with_suffix("")), "-l", "vie", "pdf"], env)

    all_images = [i for imgs in images.values() for i in imgs]
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        measures = list(pool.map(one, all_images))
    run = ToolRun("tesseract", time.perf_counter() - start, max(m[1] for m in measures) * jobs)
    for stem, imgs in images.items():
        texts = [pdf_texts(i.with_suffix(".pdf"))[0][0] for i in imgs]
        run.texts[stem], run.rotations[stem] = texts, [0] * len(imgs)
    return run


def run_ocrmypdf(pdfs: list[Path], out: Path, jobs: int, extra: list[str], name: str) -> ToolRun:
    """`ocrmypdf -l vie -j N [extra]` per dossier."""
    run = ToolRun(name)
    ocrmypdf = str(Path(sys.executable).with_name("ocrmypdf"))
    for pdf in pdfs:
        dst = out / f"{name}-{pdf.stem}.pdf"
        seconds, peak = run_measured([ocrmypdf, "-q", "-l", "vie", "-j", str(jobs), *extra, str(pdf), str(dst)])
        run.seconds += seconds
        run.peak_rss = max(run.peak_rss, peak)
        texts, rotate = pdf_texts(dst)
        with pikepdf.open(pdf) as src:
            before = [int(p.obj.get("/Rotate", 0)) % 360 for p in src.pages]
        run.texts[pdf.stem] = texts
        # OCRmyPDF turns a page by setting /Rotate (clockwise); the content had been turned the other way.
        run.rotations[pdf.stem] = [(b - r) % 360 for r, b in zip(rotate, before, strict=True)]
    return run


# --- scoring -------------------------------------------------------------------------------------------


@dataclass
class Score:
    pages: int = 0
    edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0
    orient_ok: int = 0
    orient_n: int = 0
    by_type: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # per kind (blank, separator): [pages of it found, pages of it, other pages taken for it]; None: not reported
    kinds_found: dict[str, list[int]] | None = None
    worst: list[tuple[float, str]] = field(default_factory=list)


def score(run: ToolRun, gts: list[dict]) -> Score:
    s = Score()
    for gt in gts:
        stem = Path(gt["pdf"]).stem
        texts, rotations = run.texts[stem], run.rotations[stem]
        kinds = run.kinds.get(stem)
        if kinds is not None:
            s.kinds_found = s.kinds_found or {"blank": [0, 0, 0], "separator": [0, 0, 0]}
            for ref, kind in zip(gt["pages"], kinds, strict=True):
                if ref["doc_type"] in s.kinds_found:
                    s.kinds_found[ref["doc_type"]][1] += 1
                    s.kinds_found[ref["doc_type"]][0] += kind == ref["doc_type"]
                elif kind in s.kinds_found:
                    s.kinds_found[kind][2] += 1
        for ref, text, rot in zip(gt["pages"], texts, rotations, strict=True):
            s.pages += 1
            if ref["doc_type"] == "blank":
                continue
            r, h = norm(ref["text"]), norm(text)
            e = Levenshtein.distance(h, r)
            s.edits += e
            s.chars += len(r)
            s.word_edits += Levenshtein.distance(h.split(), r.split())
            s.words += len(r.split())
            s.by_type[ref["doc_type"]][0] += e
            s.by_type[ref["doc_type"]][1] += len(r)
            s.worst.append((e / max(len(r), 1), f"{gt['dossier_id']} p{ref['index']} {ref['doc_type']}"))
            s.orient_n += 1
            s.orient_ok += rot == ref["orientation"]
    s.worst.sort(reverse=True)
    return s


def print_table(runs: list[ToolRun], scores: list[Score], title: str) -> None:
    names = [r.name for r in runs]
    rows: list[tuple[str, list[str]]] = [
        ("pages", [str(s.pages) for s in scores]),
        ("seconds", [f"{r.seconds:.1f}" for r in runs]),
        ("pages/s", [f"{s.pages / r.seconds:.2f}" for r, s in zip(runs, scores, strict=True)]),
        ("CER", [f"{s.edits / max(s.chars, 1):.4f}" for s in scores]),
        ("WER", [f"{s.word_edits / max(s.words, 1):.4f}" for s in scores]),
        ("orientation", [f"{s.orient_ok}/{s.orient_n}" for s in scores]),
        ("peak RSS MB", [f"{r.peak_rss / 2**20:.0f}" for r in runs]),
        *(
            (f"{kind}s found (wrongly)", [
                "{}/{} ({})".format(*s.kinds_found[kind]) if s.kinds_found else "-" for s in scores
            ])
            for kind in ("blank", "separator")
        ),
    ]
    types = sorted({t for s in scores for t in s.by_type})
    for t in types:
        rows.append((f"CER {t}", [f"{s.by_type[t][0] / max(s.by_type[t][1], 1):.3f}" for s in scores]))
    width = max(len(k) for k, _ in rows)
    print(f"\n## {title}\n")
    print("| " + " | ".join([" " * width, *names]) + " |")
    print("|" + "|".join(["-" * (width + 2)] + ["-" * (len(n) + 2) for n in names]) + "|")
    for k, vals in rows:
        print("| " + " | ".join([f"{k:<{width}}", *[v.rjust(len(n)) for v, n in zip(vals, names, strict=True)]]) + " |")
    for r, s in zip(runs, scores, strict=True):
        print(f"worst {r.name}: " + ", ".join(f"{n} {c:.2f}" for c, n in s.worst[:5]))
    if "hoso" in names and any(n.startswith("ocrmypdf") or n == "tesseract" for n in names):
        hs = scores[names.index("hoso")]
        others = [(s.edits / max(s.chars, 1), n) for s, n in zip(scores, names, strict=True) if n != "hoso"]
        best_cer, best = min(others)
        cer = hs.edits / max(hs.chars, 1)
        print(f"hoso CER / best other ({best}) = {cer / max(best_cer, 1e-9):.2f}  (target <= 0.60)")
        if "ocrmypdf" in names:
            i, h = names.index("ocrmypdf"), names.index("hoso")
            speed = (scores[h].pages / runs[h].seconds) / (scores[i].pages / runs[i].seconds)
            print(f"hoso pages/s / ocrmypdf -j 2 = {speed:.2f}  (target >= 1.30)")


# --- harder variants -----------------------------------------------------------------------------------


def phone_photo(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A page as a phone photo: perspective on a darker desk, a shadow, noise, some blur."""
    h, w = page.shape[:2]
    pad = int(0.08 * max(h, w))
    canvas_h, canvas_w = h + 2 * pad, w + 2 * pad
    desk = np.full((canvas_h, canvas_w, 3), rng.integers(60, 120, 3), np.uint8)
    jitter = rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    dst = (src + pad + jitter).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    color = page if page.ndim == 3 else cv2.cvtColor(page, cv2.COLOR_GRAY2BGR)
    warped = cv2.warpPerspective(color, m, (canvas_w, canvas_h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_TRANSPARENT, dst=desk.copy())
    # A soft shadow across one side (a hand or a phone) and warmer indoor light.
    xx = np.linspace(0, 1, canvas_w, dtype=np.float32)[None, :]
    yy = np.linspace(0, 1, canvas_h, dtype=np.float32)[:, None]
    a, b = rng.uniform(-1, 1, 2)
    ramp = np.clip(0.5 + a * (xx - 0.5) + b * (yy - 0.5), 0, 1)
    shade = 0.55 + 0.45 * cv2.GaussianBlur(ramp, (0, 0), 25)
    out = warped.astype(np.float32) * shade[..., None] * np.array([0.92, 0.97, 1.0], dtype=np.float32)
    out += rng.normal(0, 9, out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(out, (0, 0), 0.8)


def make_hard(src: Path, dst: Path, seed: int = 7) -> Path:
    """Harder variants of the corpus: phone photos, heavy noise or low dpi, written as a corpus folder."""
    from ocr.load import inspect_input, iter_pages
    from ocr.models import OcrOptions

    rng = np.random.default_rng(seed)
    (dst / "dossiers").mkdir(parents=True, exist_ok=True)
    (dst / "gt").mkdir(exist_ok=True)
    options = OcrOptions()
    for gt_path in sorted((src / "gt").glob("*.json")):
        gt = json.loads(gt_path.read_text(encoding="utf-8"))
        pdf = pikepdf.new()
        info = inspect_input(src / gt["pdf"], options)
        for page, ref in zip(iter_pages(info, options), gt["pages"], strict=True):
            arr = np.asarray(page.image.convert("RGB"))[..., ::-1]
            dpi = page.dpi
            kind = rng.choice(["photo", "noise", "lowdpi"], p=[0.5, 0.25, 0.25])
            if ref["doc_type"] in ("blank", "separator"):
                kind = "noise"
            if kind == "photo":
                arr = phone_photo(arr, rng)
            elif kind == "noise":
                arr = np.clip(arr + rng.normal(0, 22, arr.shape), 0, 255).astype(np.uint8)
            else:
                f = 150 / dpi
                arr = cv2.resize(arr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else arr
                dpi = min(dpi, 150)
            ref["degradations"] = [*ref.get("degradations", []), f"bench-{kind}"]
            buf = io.BytesIO()
            Image.fromarray(arr[..., ::-1]).save(buf, "JPEG", quality=75)
            h, w = arr.shape[:2]
            wp, hp = w * 72 / dpi, h * 72 / dpi
            p = pdf.add_blank_page(page_size=(wp, hp))
            img = pikepdf.Stream(pdf, buf.getvalue(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                 Width=w, Height=h, ColorSpace=pikepdf.Name.DeviceRGB, BitsPerComponent=8,
                                 Filter=pikepdf.Name.DCTDecode)
            p.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=img))
            p.Contents = pikepdf.Stream(pdf, f"q {wp:.3f} 0 0 {hp:.3f} 0 0 cm /Im0 Do Q".encode())
        pdf.save(dst / gt["pdf"])
        (dst / "gt" / gt_path.name).write_text(json.dumps(gt, ensure_ascii=False), encoding="utf-8")
        print(f"hard variant: {gt['dossier_id']}", file=sys.stderr)
    return dst


# --- peak RSS against page count -----------------------------------------------------------------------


def rss_by_pages(corpus: Path, counts: list[int], jobs: int) -> None:
    """Peak RSS of hoso's OCR stage on PDFs of N pages (every page recognised: no Tesseract cache).

    Two inputs per N: the first ``min(counts)`` corpus pages repeated (memory against length alone),
    and corpus pages in order, repeated when N is larger than the corpus (length and page mix together:
    phone photos and large colour pages come later in the corpus than in the first pages).
    """
    sources = sorted((corpus / "dossiers").glob("*.pdf"))
    first = min(counts)
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| input | pages | seconds | peak RSS MB |\n|---|---|---|---|")
        for label, pool_size in ((f"first {first} pages repeated", first), ("corpus pages in order", None)):
            for n in counts:
                path = Path(tmp) / f"in-{n}.pdf"
                _concat_pages(sources, n, pool_size, path)
                listing = Path(tmp) / "list.json"
                listing.write_text(json.dumps([str(path)]))
                cmd = [sys.executable, __file__, "--_hoso-child", str(listing), tmp, str(jobs)]
                seconds, peak = run_measured(cmd, {**os.environ, "PYTHONPATH": str(ROOT)})
                print(f"| {label} | {n} | {seconds:.1f} | {peak / 2**20:.0f} |", flush=True)


def _concat_pages(sources: list[Path], n: int, pool_size: int | None, out: Path) -> None:
    """An n-page PDF of corpus pages in order; with ``pool_size``, only the first that many, cycled."""
    big = pikepdf.new()
    opened = []
    try:
        pool = []
        for s in sources:
            src = pikepdf.open(s)
            opened.append(src)
            pool.extend(src.pages)
            if pool_size is not None and len(pool) >= pool_size:
                pool = pool[:pool_size]
                break
            if len(pool) >= n:
                break
        for i in range(n):
            big.pages.append(pool[i % len(pool)])
        big.save(out)
    finally:
        for src in opened:
            src.close()
        big.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_hoso-child":
        _hoso_child(Path(argv[1]), Path(argv[2]), int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--make-hard", type=Path, default=None, help="build harder variants here and bench them")
    ap.add_argument("--limit", type=int, default=0, help="first N dossiers only")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--rss", default="", help="page counts for the peak-RSS table, e.g. 10,300")
    ap.add_argument("--verbose", "-v", action="store_true", help="hoso's per-page CER")
    args = ap.parse_args(argv)
    if args.rss:
        rss_by_pages(args.corpus, [int(n) for n in args.rss.split(",")], args.jobs)
        return 0
    corpus = args.corpus
    if args.make_hard is not None:
        corpus = args.make_hard if (args.make_hard / "gt").exists() else make_hard(args.corpus, args.make_hard)
    gts = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((corpus / "gt").glob("*.json"))]
    if args.limit:
        gts = gts[: args.limit]
    if not gts:
        print(f"no ground truth under {corpus}", file=sys.stderr)
        return 2
    pdfs = [corpus / gt["pdf"] for gt in gts]
    runners: dict[str, Callable[[Path], ToolRun]] = {
        "hoso": lambda out: run_hoso(pdfs, out, args.jobs),
        "tesseract": lambda out: run_tesseract(pdfs, out, args.jobs),
        "ocrmypdf": lambda out: run_ocrmypdf(pdfs, out, args.jobs, [], "ocrmypdf"),
        "ocrmypdf-rd": lambda out: run_ocrmypdf(pdfs, out, args.jobs, ["--rotate-pages", "--deskew"], "ocrmypdf-rd"),
    }
    runs: list[ToolRun] = []
    for name in args.tools.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"running {name} on {len(pdfs)} dossiers…", file=sys.stderr)
            runs.append(runners[name](Path(tmp)))
    scores = [score(r, gts) for r in runs]
    if args.verbose and "hoso" in [r.name for r in runs]:
        for c, n in scores[[r.name for r in runs].index("hoso")].worst:
            print(f"{c:.3f} {n}")
    title = f"{corpus} — {sum(len(g['pages']) for g in gts)} pages, {len(gts)} dossiers, -j {args.jobs}"
    print_table(runs, scores, title)
    print(f"\ncommand: .venv/bin/python bench/ocr_bench.py {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
