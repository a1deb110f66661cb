"""Measure dossier understanding (segmentation, classification, extraction, validation) on ground truth.

Feeds each ground-truth page text to the pipeline as if it were OCR output (every page as ``content``:
separator and blank pages must be recognised from their text) and compares with ``gt/*.json``.

    .venv/bin/python bench/understanding_bench.py [--gt ../shared/corpus/public/gt] [-v]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ocr.models import RecognizedPage
from pipeline.catalog import load_catalog
from pipeline.classify import classify, fold
from pipeline.extract import extract_fields
from pipeline.models import DocumentInfo
from pipeline.segment import page_kind, segment
from pipeline.validate import validate

DEFAULT_GT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "public" / "gt"
FIELDS = ("id_number", "full_name", "date_of_birth")


def damage(text: str, rate: float, rng: random.Random) -> str:
    """OCR-like damage: words lose their diacritics (rate × 5) and letters are substituted (rate)."""
    if rate <= 0:
        return text
    out = []
    for line in text.split("\n"):
        words = []
        for w in line.split(" "):
            if rng.random() < rate * 5:
                w = "".join(fold(c).upper() if c.isupper() else fold(c) for c in w)
            w = "".join(rng.choice("aeiounmcrl1") if c.isalpha() and rng.random() < rate else c for c in w)
            words.append(w)
        out.append(" ".join(words))
    return "\n".join(out)


def run_dossier(
    gt: dict[str, Any], counts: Counter[str], verbose: bool, noise: float = 0.0, seed: int = 0
) -> None:
    """Run the understanding stages on one dossier's ground-truth texts and add to ``counts``."""
    catalog = load_catalog()
    did = gt["dossier_id"]
    rng = random.Random(f"{seed}:{did}")
    pages = [
        RecognizedPage.model_validate(
            {
                "index": p["index"],
                "kind": "content",
                "dpi": 300,
                "width_px": 1,
                "height_px": 1,
                "text": damage(p["text"], noise, rng),
            }
        )
        for p in gt["pages"]
    ]
    for page, gp in zip(pages, gt["pages"], strict=True):
        want = gp["doc_type"] if gp["doc_type"] in ("separator", "blank") else "document"
        got = page_kind(page, catalog)
        counts["pages"] += 1
        counts["page_kind_ok"] += got == want
        if verbose and got != want:
            print(f"  {did} p{page.index}: kind {got} != {want}")

    groups = segment(pages, catalog)
    docs: list[DocumentInfo] = []
    for g in groups:
        t, c = classify(g.text, catalog)
        f, fc = extract_fields(t, g.text)
        docs.append(DocumentInfo(type=t, pages=g.pages, confidence=c, fields=f, field_confidence=fc))
    by_pages = {tuple(d.pages): d for d in docs}

    counts["dossiers"] += 1
    gt_sets = {tuple(d["pages"]) for d in gt["documents"]}
    counts["grouping_dossier_ok"] += gt_sets == set(by_pages)
    for gd in gt["documents"]:
        counts["docs"] += 1
        pred = by_pages.get(tuple(gd["pages"]))
        counts["group_ok"] += pred is not None
        if pred is None:
            if verbose:
                print(f"  {did} doc {gd['pages']} {gd['doc_type']}: no group {[d.pages for d in docs]}")
            continue
        counts["type_ok"] += pred.type == gd["doc_type"]
        if verbose and pred.type != gd["doc_type"]:
            print(f"  {did} doc {gd['pages']}: type {pred.type} ({pred.confidence}) != {gd['doc_type']}")
        for fname in FIELDS:
            if fname in gd["fields"]:
                counts[f"{fname}_n"] += 1
                ok = pred.fields.get(fname) == str(gd["fields"][fname])
                counts[f"{fname}_ok"] += ok
                if verbose and not ok:
                    print(
                        f"  {did} {gd['doc_type']} {fname}: {pred.fields.get(fname)} != {gd['fields'][fname]}"
                    )

    proc = catalog.procedure(gt["procedure"])
    v = validate(proc, docs, catalog)
    counts["status_ok"] += (v.status == "accepted") == bool(gt["is_complete"])
    got_missing = sorted(t for slot in v.missing for t in slot)
    counts["missing_ok"] += got_missing == sorted(gt["required_missing"])
    gt_unexpected = {gt["documents"][i]["doc_type"] for i in gt["unexpected_documents"]}
    counts["unexpected_ok"] += set(v.unexpected) == gt_unexpected
    if verbose and (
        (v.status == "accepted") != gt["is_complete"] or got_missing != sorted(gt["required_missing"])
    ):
        print(
            f"  {did}: status {v.status} missing {got_missing}; gt complete={gt['is_complete']} "
            f"missing={gt['required_missing']}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=DEFAULT_GT, help="folder of gt/*.json")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mismatch")
    ap.add_argument(
        "--noise", type=float, default=0.0, help="letter substitution rate of simulated OCR damage"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = sorted(args.gt.glob("*.json"))
    if not files:
        print(f"no ground truth in {args.gt}", file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()
    t0 = time.perf_counter()
    for f in files:
        run_dossier(json.loads(f.read_text(encoding="utf-8")), counts, args.verbose, args.noise, args.seed)
    secs = time.perf_counter() - t0

    def row(name: str, ok: int, n: int) -> None:
        print(f"| {name:<34} | {ok:>4}/{n:<4} | {100 * ok / n if n else 0:6.1f}% |")

    print(
        f"\n{counts['dossiers']} dossiers, {counts['pages']} pages, {counts['docs']} documents, "
        f"{secs:.2f} s\n"
    )
    print(f"| {'metric':<34} | {'count':^9} | {'acc':^7} |\n|{'-' * 36}|{'-' * 11}|{'-' * 9}|")
    row("page kind (document/separator/blank)", counts["page_kind_ok"], counts["pages"])
    row("document grouping (exact pages)", counts["group_ok"], counts["docs"])
    row("dossier grouping (all exact)", counts["grouping_dossier_ok"], counts["dossiers"])
    row("doc type (of grouped documents)", counts["type_ok"], counts["docs"])
    for f in FIELDS:
        row(f"{f} exact", counts[f"{f}_ok"], counts[f"{f}_n"])
    row("completeness decision (status)", counts["status_ok"], counts["dossiers"])
    row("missing types (exact)", counts["missing_ok"], counts["dossiers"])
    row("unexpected types (exact)", counts["unexpected_ok"], counts["dossiers"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
