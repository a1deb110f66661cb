"""Rule-based document classification from the catalog's printed phrases, tolerant of OCR errors.

Text is diacritic- and case-folded (``đ`` → ``d``) before matching. The printed title, searched in the
first lines, is the strongest signal and is matched fuzzily line by line; body keywords add weaker evidence.
Between similar types (e.g. *Giấy khai sinh* vs *Tờ khai đăng ký khai sinh*) the longer matching title wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rapidfuzz import fuzz

from pipeline.core.text import squash
from pipeline.domain.catalog import UNKNOWN, Catalog

if TYPE_CHECKING:
    from pipeline.domain.doctype_model import DocTypeModel

ClassifierMethod = Literal["rules", "model", "combined"]

TITLE_LINES = 14  # agency header + motto + title fit in the first lines of every pilot form
TITLE_MIN = 0.84  # a title line must match at least this well (rapidfuzz ratio / 100)
KEYWORD_MIN = 88.0
UNKNOWN_BELOW = 0.45
# Combined: the rules' score and the model's calibrated probability, averaged with these weights.
RULES_WEIGHT = 0.5
COMBINED_UNKNOWN_BELOW = 0.4
MODEL_UNKNOWN_BELOW = 0.5
_TITLE_WEIGHT = 0.75

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def title_windows(text: str, max_lines: int = TITLE_LINES) -> list[str]:
    """Squashed title-region candidates: the first lines, alone and joined with the next one or two."""
    lines = [squash(line) for line in text.splitlines()]
    lines = [line for line in lines if line][:max_lines]
    out: list[str] = []
    for i in range(len(lines)):
        for n in (1, 2, 3):
            if i + n <= len(lines):
                out.append(" ".join(lines[i : i + n]))
    return out


def phrase_line_score(phrase: str, windows: list[str], *, prefix: bool = True) -> float:
    """How well a squashed phrase matches one of the windows (0..1); with ``prefix`` their start."""
    best = 0.0
    for w in windows:
        if prefix and len(w) > len(phrase) + 3:
            # The title may be followed by more words on its line ("GIẤY KHAI SINH (BẢN SAO)").
            s = fuzz.ratio(phrase, w[: len(phrase)]) * 0.98
        else:
            s = fuzz.ratio(phrase, w)
        best = max(best, s / 100.0)
    return best


@dataclass(frozen=True)
class _Matcher:
    key: str
    titles: tuple[str, ...]
    keywords: tuple[str, ...]
    negative: tuple[str, ...]


_MATCHERS: dict[int, tuple[Catalog, tuple[_Matcher, ...]]] = {}


def _matchers(catalog: Catalog) -> tuple[_Matcher, ...]:
    cached = _MATCHERS.get(id(catalog))
    if cached is not None and cached[0] is catalog:
        return cached[1]
    matchers = tuple(
        _Matcher(
            key=dt.key,
            titles=tuple(squash(p) for p in dt.title_phrases),
            keywords=tuple(squash(p) for p in dt.keywords),
            negative=tuple(squash(p) for p in dt.negative),
        )
        for dt in catalog.document_types.values()
    )
    _MATCHERS[id(catalog)] = (catalog, matchers)
    return matchers


def best_title(windows: list[str], titles: tuple[str, ...]) -> tuple[float, int]:
    """Best (score, phrase length) over title phrases; score 0 below :data:`TITLE_MIN`."""
    best = (0.0, 0)
    for phrase in titles:
        s = phrase_line_score(phrase, windows)
        if s >= TITLE_MIN and (s, len(phrase)) > best:
            best = (s, len(phrase))
    return best


def scores(text: str, catalog: Catalog) -> dict[str, float]:
    """Score in 0..1 of every document type for ``text`` (a document's text, first page first)."""
    windows = title_windows(text)
    body = squash(text)
    title_hits = {m.key: best_title(windows, m.titles) for m in _matchers(catalog)}
    longest = max((length for _, length in title_hits.values()), default=0)
    out: dict[str, float] = {}
    for m in _matchers(catalog):
        t_score, t_len = title_hits[m.key]
        if t_score and t_len < longest:
            # A longer title of another type matched too: this one is probably its prefix or sibling.
            t_score *= 0.85 + 0.15 * t_len / longest
        for neg in m.negative:
            if neg and phrase_line_score(neg, windows) >= 0.9 and len(neg) > t_len:
                t_score *= 0.5
        if m.keywords and body:
            found = sum(1 for k in m.keywords if fuzz.partial_ratio(k, body) >= KEYWORD_MIN)
            k_score = min(1.0, found / min(len(m.keywords), 5))
        else:
            k_score = 0.0
        if t_score:
            out[m.key] = _TITLE_WEIGHT * t_score + (1 - _TITLE_WEIGHT) * k_score
        else:
            # Without a title (a back page, a damaged header) the body alone is weaker evidence.
            out[m.key] = 0.6 * k_score
    return out


def _decide(ranked: list[tuple[str, float]], unknown_below: float) -> tuple[str, float]:
    if not ranked:
        return UNKNOWN, 0.0
    key, score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    # Two types almost tied: lower the confidence so the clerk looks at it.
    confidence = score - max(0.0, 0.1 - (score - runner_up))
    confidence = round(max(0.0, min(1.0, confidence)), 3)
    if score < unknown_below:
        return UNKNOWN, confidence
    return key, confidence


def combined_scores(
    text: str, catalog: Catalog, method: ClassifierMethod = "combined", model: DocTypeModel | None = None
) -> dict[str, float]:
    """Per-type scores in 0..1 by the rules, the learned model, or their blend."""
    if method == "rules":
        return scores(text, catalog)
    if model is None:
        from pipeline.domain.doctype_model import bundled_model

        model = bundled_model()
    if model is None:  # no model shipped: the rules alone
        return scores(text, catalog)
    probs = {k: v for k, v in model.probabilities(text).items() if k in catalog.document_types}
    if method == "model":
        return probs
    rules = scores(text, catalog)
    return {k: RULES_WEIGHT * rules.get(k, 0.0) + (1 - RULES_WEIGHT) * probs.get(k, 0.0) for k in rules}


def classify(
    text: str,
    catalog: Catalog,
    *,
    method: ClassifierMethod = "combined",
    model: DocTypeModel | None = None,
) -> tuple[str, float]:
    """The most likely document type of ``text`` and a confidence in 0..1; ``unknown`` when unsure.

    ``method``: ``rules`` (printed titles and keywords), ``model`` (the learned model,
    :mod:`pipeline.domain.doctype_model`; the bundled one unless ``model`` is given) or ``combined`` (their average).
    """
    if not text.strip():
        return UNKNOWN, 0.0
    s = combined_scores(text, catalog, method, model)
    ranked = sorted(s.items(), key=lambda kv: kv[1], reverse=True)
    threshold = {"rules": UNKNOWN_BELOW, "model": MODEL_UNKNOWN_BELOW}.get(method, COMBINED_UNKNOWN_BELOW)
    return _decide(ranked, threshold)
