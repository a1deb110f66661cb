"""Measure dossier understanding (segmentation, classification, extraction, validation) on the public corpus.

Two sources of page text:

- ``gt``: each ground-truth page text fed as if it were OCR output (every page as ``content``: separator
  and blank pages must be recognised from their text) — the ceiling;
- ``ocr``: hoso's own OCR (``ocr.engine.ocr_input``) of each dossier PDF, run once and cached as
  ``RecognizedPage`` JSON under ``--cache`` (``var/bench-cache/ocr/<sha256 of the PDF>.json``).

and three classifiers (``--classifier``): ``rules``, ``model``, ``combined`` (the desk's default).

    .venv/bin/python bench/understanding_bench.py [--source gt,ocr] [--classifier combined] [-v]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from ocr.models import OcrOptions, RecognizedPage
from pipeline.core.models import DocumentInfo
from pipeline.core.text import fold
from pipeline.domain.catalog import load_catalog
from pipeline.domain.classify import ClassifierMethod, classify
from pipeline.domain.extract import extract_fields
from pipeline.domain.segment import page_kind, segment
from pipeline.domain.validate import validate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "public"
DEFAULT_CACHE = ROOT / "var" / "bench-cache" / "ocr"
FIELDS = (
    "id_number",
    "full_name",
    "date_of_birth",
    "gender",
    "parcel_number",
    "map_sheet",
    "certificate_serial",
    "area_m2",
    "business_name",
    "business_code",
)


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


def gt_pages(gt: dict[str, Any], noise: float, seed: int) -> list[RecognizedPage]:
    """The ground-truth page texts as recognised pages (all ``content``)."""
    rng = random.Random(f"{seed}:{gt['dossier_id']}")
    return [
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


@functools.cache
def _page_pool(jobs: int) -> Executor:
    """One pool of OCR workers for the whole run (it ends with the process)."""
    from ocr.engine import page_pool

    return page_pool(jobs)


def ocr_pages(pdf: Path, cache: Path, jobs: int) -> list[RecognizedPage]:
    """hoso's OCR of ``pdf``, from the cache when this PDF (by SHA-256) was recognised before."""
    from ocr.engine import inspect_input, ocr_input  # imported late: the GT mode needs no OCR stack

    sha = hashlib.sha256(pdf.read_bytes()).hexdigest()
    path = cache / f"{sha}.json"
    if path.is_file():
        return [RecognizedPage.model_validate(p) for p in json.loads(path.read_text(encoding="utf-8"))]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        options = OcrOptions.model_validate({"jobs": jobs})
        result = ocr_input(inspect_input(pdf, options), Path(tmp) / "out.pdf", options, executor=_page_pool(jobs))
    raw = [p.model_dump(mode="json") for p in result.pages]
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    tmp_path.replace(path)
    return result.pages


def run_dossier(
    gt: dict[str, Any],
    pages: list[RecognizedPage],
    counts: Counter[str],
    verbose: bool,
    method: ClassifierMethod = "combined",
) -> None:
    """Run the understanding stages on one dossier's pages and add to ``counts``."""
    catalog = load_catalog()
    did = gt["dossier_id"]
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
        t, c = classify(g.text, catalog, method=method)
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
        counts[f"tp:{gd['doc_type']}"] += pred.type == gd["doc_type"]
        counts[f"gold:{gd['doc_type']}"] += 1
        counts[f"pred:{pred.type}"] += 1
        if verbose and pred.type != gd["doc_type"]:
            print(f"  {did} doc {gd['pages']}: type {pred.type} ({pred.confidence}) != {gd['doc_type']}")
        for fname in FIELDS:
            if fname in gd["fields"]:
                counts[f"{fname}_n"] += 1
                ok = pred.fields.get(fname) == str(gd["fields"][fname])
                counts[f"{fname}_ok"] += ok
                if verbose and not ok:
                    print(
                        f"  {did} {gd['doc_type']} {fname}: {pred.fields.get(fname)!r} != "
                        f"{gd['fields'][fname]!r}"
                    )

    proc = catalog.procedure(gt["procedure"])
    v = validate(proc, docs, catalog)
    counts["status_ok"] += (v.status == "accepted") == bool(gt["is_complete"])
    # gt required_missing lists the types of unfilled slots; ours lists each unfilled slot's alternatives.
    got_missing = sorted(t for slot in v.missing for t in slot)
    counts["missing_ok"] += got_missing == sorted(gt["required_missing"])
    gt_unexpected = {gt["documents"][i]["doc_type"] for i in gt["unexpected_documents"]}
    counts["unexpected_ok"] += set(v.unexpected) == gt_unexpected
    if verbose and (
        (v.status == "accepted") != gt["is_complete"] or got_missing != sorted(gt["required_missing"])
    ):
        print(
            f"  {did}: status {v.status} missing {got_missing}; gt complete={gt['is_complete']} "
            f"missing={gt['required_missing']} reasons={v.reasons_vi}"
        )


def macro_f1(counts: Counter[str]) -> float:
    """Macro-averaged F1 of document types over the types present in the ground truth."""
    f1s = []
    for key in [k[5:] for k in counts if k.startswith("gold:")]:
        tp, gold, pred = counts[f"tp:{key}"], counts[f"gold:{key}"], counts[f"pred:{key}"]
        p = tp / pred if pred else 0.0
        r = tp / gold if gold else 0.0
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder with gt/ and dossiers/")
    ap.add_argument("--source", default="gt,ocr", help="comma list of gt, ocr")
    ap.add_argument("--classifier", default="combined", help="comma list of rules, model, combined")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="OCR result cache folder")
    ap.add_argument("--jobs", type=int, default=2, help="OCR worker processes on a cache miss")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every mismatch")
    ap.add_argument("--noise", type=float, default=0.0, help="simulated OCR damage on GT text (gt source)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = sorted((args.corpus / "gt").glob("*.json"))
    if not files:
        print(f"no ground truth in {args.corpus / 'gt'}", file=sys.stderr)
        return 2
    gts = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    columns: list[tuple[str, Counter[str], float]] = []
    for source in args.source.split(","):
        t0 = time.perf_counter()
        pages = {
            g["dossier_id"]: (
                gt_pages(g, args.noise, args.seed)
                if source == "gt"
                else ocr_pages(args.corpus / g["pdf"], args.cache, args.jobs)
            )
            for g in gts
        }
        load_secs = time.perf_counter() - t0
        for method in args.classifier.split(","):
            if args.verbose:
                print(f"== {source} / {method}")
            counts: Counter[str] = Counter()
            t0 = time.perf_counter()
            for g in gts:
                run_dossier(g, pages[g["dossier_id"]], counts, args.verbose, method)  # type: ignore[arg-type]
            columns.append((f"{source}/{method}", counts, time.perf_counter() - t0))
        if source == "ocr":
            print(f"OCR pages loaded (cache {args.cache}) in {load_secs:.1f} s")

    first = columns[0][1]
    print(f"\n{first['dossiers']} dossiers, {first['pages']} pages, {first['docs']} documents\n")
    head = "| metric                               | " + " | ".join(f"{c[0]:>18}" for c in columns) + " |"
    print(head)
    print("|" + "-" * 38 + "|" + "|".join("-" * 20 for _ in columns) + "|")

    def row(name: str, ok_key: str, n_key: str) -> None:
        cells = []
        for _, c, _ in columns:
            n = c[n_key]
            cells.append(f"{c[ok_key]:>4}/{n:<4} {100 * c[ok_key] / n if n else 0:6.1f}%")
        print(f"| {name:<36} | " + " | ".join(f"{x:>18}" for x in cells) + " |")

    row("page kind (document/separator/blank)", "page_kind_ok", "pages")
    row("document grouping (exact pages)", "group_ok", "docs")
    row("dossier grouping (all exact)", "grouping_dossier_ok", "dossiers")
    row("doc type (of all documents)", "type_ok", "docs")
    print(
        f"| {'doc type macro-F1':<36} | "
        + " | ".join(f"{100 * macro_f1(c):>17.1f}%" for _, c, _ in columns)
        + " |"
    )
    for f in FIELDS:
        row(f"{f} exact", f"{f}_ok", f"{f}_n")
    row("completeness decision (status)", "status_ok", "dossiers")
    row("missing types (exact)", "missing_ok", "dossiers")
    row("unexpected types (exact)", "unexpected_ok", "dossiers")
    print(
        f"| {'seconds (understanding only)':<36} | "
        + " | ".join(f"{secs:>18.2f}" for _, _, secs in columns)
        + " |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
