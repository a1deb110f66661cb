"""Peak memory of ``hoso ingest`` on hostile inputs: the whole process tree (CLI and OCR workers), summed.

    .venv/bin/python bench/hostile_rss.py            # the heaviest hostile files + the largest accepted input
    .venv/bin/python bench/hostile_rss.py --all      # every file of the corpus (a few minutes)
    .venv/bin/python bench/hostile_rss.py pdf-q png-idat   # cases whose name contains one of these

The corpus is tests/support/hostile.py's. "Largest accepted" inputs are the worst that pass every check
and go through OCR: pages just under the decoding limit, several at once (the workers run in parallel
while the next page is decoded). Each run polls the RSS of the CLI and all its descendants every 10 ms
(needs psutil: ``pip install -e '.[bench]'``); shared pages count once per process, so the sum
overstates a little.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.hostile import write_corpus  # noqa: E402

Image.MAX_IMAGE_PIXELS = None  # the accepted inputs are made here, near hoso's own limit

HEAVY = ("bomb", "flate-in-flate", "huge", "q-nesting", "fanout", "too-many", "many-frames", "sparse",
         "apng", "too-big", "progressive", "lying")


FONT = Path("/usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf")
TEXT = ("Cộng hòa xã hội chủ nghĩa Việt Nam — Độc lập, Tự do, Hạnh phúc. Tờ khai đăng ký hộ kinh doanh, "
        "họ và tên, ngày sinh, số định danh cá nhân, nơi cư trú, ngành nghề kinh doanh, vốn kinh doanh.")


def _page(path: Path, size: tuple[int, int], dpi: int, fmt: str) -> None:
    """A colour page of 12 pt Vietnamese text at ``dpi`` (so OCR has real work) with a red seal."""
    from PIL import ImageFont

    im = Image.new("RGB", size, (250, 248, 240))
    draw = ImageDraw.Draw(im)
    px = round(12 * dpi / 72)
    font = ImageFont.truetype(str(FONT), px) if FONT.exists() else ImageFont.load_default(px)
    margin = size[0] // 10
    words = TEXT.split()
    y, k = margin, 0
    while y < size[1] - margin:
        line, x = [], margin
        while k < 10**9:
            word = words[k % len(words)]
            width = draw.textlength(word + " ", font=font)
            if x + width > size[0] - margin:
                break
            line.append(word)
            x += width
            k += 1
        draw.text((margin, y), " ".join(line), fill=(20, 20, 40), font=font)
        y += round(px * 1.6)
    r = size[0] // 8
    draw.ellipse((size[0] // 2, size[1] // 2, size[0] // 2 + 2 * r, size[1] // 2 + 2 * r),
                 outline=(220, 30, 30), width=max(4, size[0] // 200))
    im.save(path, fmt, dpi=(dpi, dpi))


def accepted_inputs(root: Path) -> list[tuple[str, Path]]:
    """The largest inputs that pass the checks: three 40 Mpx colour PNG pages (decoded whole, just under
    the decoding limit, then reduced), a 96 Mpx colour JPEG (decoded at half scale), a PDF of three
    pages each holding that JPEG (rendered by pdfium straight to the work size), and a TIFF of three
    97 Mpx 1-bit pages (decoded whole, then reduced)."""
    import pikepdf

    folder = root / "accepted-3x40Mpx-png"
    folder.mkdir()
    for k in range(3):
        _page(folder / f"p{k + 1}.png", (5400, 7400), 600, "PNG")
    jpeg = root / "accepted-96Mpx.jpg"
    _page(jpeg, (8200, 11700), 1000, "JPEG")
    pdf = pikepdf.new()
    data = jpeg.read_bytes()
    w_pt, h_pt = 8200 * 72 / 1000, 11700 * 72 / 1000
    for _ in range(3):
        page = pdf.add_blank_page(page_size=(w_pt, h_pt))
        image = pikepdf.Stream(pdf, data, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=8200,
                               Height=11700, BitsPerComponent=8, ColorSpace=pikepdf.Name.DeviceRGB,
                               Filter=pikepdf.Name.DCTDecode)
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.Contents = pikepdf.Stream(pdf, f"q {w_pt} 0 0 {h_pt} 0 0 cm /Im0 Do Q".encode())
    scans = root / "accepted-3x96Mpx.pdf"
    pdf.save(scans)
    bilevel = root / "accepted-3x97Mpx-1bit.tif"
    _page(bilevel, (8270, 11690), 1000, "PNG")  # drawn in colour, then stored as a 1-bit fax TIFF
    with Image.open(bilevel) as im:
        page = im.convert("1")
    page.save(bilevel, "TIFF", save_all=True, append_images=[page, page], compression="group4", dpi=(1000, 1000))
    return [(folder.name, folder), (jpeg.name, jpeg), (scans.name, scans), (bilevel.name, bilevel)]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just ended
            total += p.memory_info().rss
    return total


def measure(path: Path, data_dir: Path, timeout: float) -> tuple[int, float, int]:
    """(exit code, seconds, peak tree RSS in bytes) of one ``hoso ingest``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_API_URL"))}
    env |= {"HOSO_DATA_DIR": str(data_dir), "HOSO_NATDB": "off", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ingest", os.fsencode(path), "--procedure",
         "business_household_registration", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    proc = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        if time.perf_counter() - start > timeout:
            child.kill()
            child.wait()
            return -9, timeout, peak
        time.sleep(0.01)
    return child.returncode, time.perf_counter() - start, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="cases whose name contains one of these")
    parser.add_argument("--all", action="store_true", help="every file of the corpus")
    parser.add_argument("--no-accepted", action="store_true", help="skip the largest accepted inputs")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hoso-hostile-rss-") as tmp:
        base = Path(tmp)
        runs: list[tuple[str, Path, str]] = []
        for case, path in write_corpus(base / "corpus"):
            wanted = args.all or (any(o in case.shown for o in args.only) if args.only else
                                  any(h in case.shown for h in HEAVY))
            if wanted:
                runs.append((case.shown, path, f"{int(case.expect)} {case.expect.name}"))
        if not args.no_accepted and (not args.only or any("accepted" in o for o in args.only)):
            runs += [(name, path, "0 ok") for name, path in accepted_inputs(base)
                     if not args.only or any(o in name for o in args.only)]
        data_dir = base / "var"
        measure(base / "corpus" / "empty.pdf", data_dir, args.timeout)  # the first run creates the dev PKI
        print(f"{'input':44s} {'expected':22s} {'exit':>5s} {'seconds':>8s} {'peak tree RSS':>14s}")
        worst = ("", 0)
        for name, path, expected in runs:
            code, seconds, peak = measure(path, data_dir, args.timeout)
            print(f"{name[:44]:44s} {expected:22s} {code:5d} {seconds:8.1f} {peak / 2**20:11.0f} MB", flush=True)
            worst = max(worst, (name, peak), key=lambda w: w[1])
        print(f"worst: {worst[0]} at {worst[1] / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
