"""OCR benchmark on the public corpus: speed, CER, orientation accuracy, blank/separator recall.

Run by hand: ``.venv/bin/python bench/ocr_bench.py [--limit N] [--jobs 2] [--corpus PATH]``.
CER: Unicode NFC, whitespace runs collapsed, Levenshtein edits / reference length, summed over the
non-blank pages (as the corpus README says).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from ocr.engine import ocr_input
from ocr.models import OcrOptions

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "public"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--limit", type=int, default=0, help="first N dossiers only")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="Tesseract cache folder (re-runs)")
    ap.add_argument("--verbose", "-v", action="store_true", help="one line per page")
    args = ap.parse_args(argv)
    gts = sorted((args.corpus / "gt").glob("*.json"))
    if args.limit:
        gts = gts[: args.limit]
    if not gts:
        print(f"no ground truth under {args.corpus}", file=sys.stderr)
        return 2
    options = OcrOptions.model_validate({"jobs": args.jobs, "cache_dir": args.cache})
    edits = ref_len = pages = 0
    orient_ok = orient_n = 0
    blank_hit = blank_n = sep_hit = sep_n = false_blank = false_sep = 0
    seconds = 0.0
    worst: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for gt_path in gts:
            gt = json.loads(gt_path.read_text(encoding="utf-8"))
            t0 = time.monotonic()
            result = ocr_input(args.corpus / gt["pdf"], Path(tmp) / "out.pdf", options)
            seconds += time.monotonic() - t0
            for page, ref in zip(result.pages, gt["pages"], strict=True):
                pages += 1
                kind = ref["doc_type"] if ref["doc_type"] in ("blank", "separator") else "content"
                blank_n += kind == "blank"
                sep_n += kind == "separator"
                blank_hit += kind == "blank" and page.kind == "blank"
                sep_hit += kind == "separator" and page.kind == "separator"
                false_blank += kind != "blank" and page.kind == "blank"
                false_sep += kind != "separator" and page.kind == "separator"
                if kind == "blank":
                    continue
                orient_n += 1
                orient_ok += page.rotation == ref["orientation"]
                r, h = norm(ref["text"]), norm(page.text)
                e = Levenshtein.distance(h, r)
                edits += e
                ref_len += len(r)
                worst.append((e / max(len(r), 1), f"{gt['dossier_id']} p{page.index} {ref['doc_type']}"))
                if args.verbose:
                    print(
                        f"{gt['dossier_id']} p{page.index:<3} {page.kind:9} rot {page.rotation:3}/"
                        f"{ref['orientation']:<3} skew {page.skew_degrees:+.2f} conf {page.confidence:.2f} "
                        f"cer {e / max(len(r), 1):.3f}"
                    )
    worst.sort(reverse=True)
    rows = [
        ("dossiers", f"{len(gts)}"),
        ("pages", f"{pages}"),
        ("jobs", f"{args.jobs}"),
        ("seconds", f"{seconds:.1f}"),
        ("pages/s", f"{pages / seconds:.2f}"),
        ("CER (non-blank)", f"{edits / max(ref_len, 1):.4f}"),
        ("orientation acc", f"{orient_ok}/{orient_n} = {orient_ok / max(orient_n, 1):.3f}"),
        ("blank recall", f"{blank_hit}/{blank_n}  (false blanks {false_blank})"),
        ("separator recall", f"{sep_hit}/{sep_n}  (false separators {false_sep})"),
        ("worst pages", ", ".join(f"{name} {c:.2f}" for c, name in worst[:5])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
