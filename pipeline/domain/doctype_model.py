"""The learned document-type model as the runtime sees it: features, prediction, safe saving and loading.

A character n-gram TF-IDF (diacritic-folded text, n = 2..4 within words) and a multinomial logistic
regression with temperature-calibrated probabilities; trained by :mod:`pipeline.training.train` (not
imported at run time). The n-grams are counted here exactly as scikit-learn's ``char_wb`` analyzer counts
them (tests/test_train.py compares both), so that classifying a dossier does not import scikit-learn (~1 s).
Saved without pickle: a ``.npz`` of plain arrays (vocabulary, idf, coefficients, intercepts, classes,
temperature), loaded with ``allow_pickle=False``; a ``.sha256`` file next to it records its checksum,
checked on every load.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import sparse

from pipeline.core.errors import ConfigurationError
from pipeline.core.text import fold

MODEL_FORMAT = "hoso-doctype-1"
NGRAMS = (2, 4)
MAX_FEATURES = 24000
TITLE_LINES = 12
MAX_CHARS = 3000
_NON_ALNUM = re.compile(r"[^0-9a-z<]+")
_MRZ = re.compile(r"[A-Z0-9<]{25,}")
_WHITE_SPACES = re.compile(r"\s\s+")


def features_text(text: str) -> str:
    """What the vectorizer sees: folded words of the title region (twice: it matters most), then the body."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = " ".join(lines[:TITLE_LINES])
    cues = " zzmrz" if _MRZ.search(text.replace(" ", "")) else ""
    squashed = _NON_ALNUM.sub(" ", fold(" ".join([head, head, *lines[TITLE_LINES:]])))
    return (squashed[:MAX_CHARS] + cues).strip()


def char_wb_ngrams(text: str, ngram_range: tuple[int, int] = NGRAMS) -> Iterator[str]:
    """The n-grams scikit-learn's ``CountVectorizer(analyzer="char_wb")`` takes from ``text``, in its order.

    Lower-cased; each whitespace-separated word padded with one space on either side; a word no longer than
    ``n`` (with its padding) gives itself once and no longer n-grams.
    """
    low, high = ngram_range
    for word in _WHITE_SPACES.sub(" ", text.lower()).split():
        padded = f" {word} "
        for n in range(low, high + 1):
            yield padded[:n]
            yield from (padded[i : i + n] for i in range(1, len(padded) - n + 1))
            if len(padded) <= n:
                break


def count_ngrams(texts: list[str], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    """Counts of the vocabulary's n-grams, one row per text: ``CountVectorizer(vocabulary=…).transform`` (int64,
    column indices sorted in each row)."""
    indices: list[int] = []
    values: list[int] = []
    indptr = [0]
    for text in texts:
        counts = Counter(j for j in map(vocabulary.get, char_wb_ngrams(text)) if j is not None)
        indices.extend(counts)
        values.extend(counts.values())
        indptr.append(len(indices))
    matrix = sparse.csr_matrix(
        (np.asarray(values, dtype=np.int64), np.asarray(indices, dtype=np.int32), np.asarray(indptr, dtype=np.int32)),
        shape=(len(texts), len(vocabulary)),
    )
    matrix.sort_indices()
    return matrix


@dataclass
class DocTypeModel:
    """A loaded model: predicts calibrated type probabilities from a document's text."""

    classes: list[str]
    vocabulary: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray  # (classes, features)
    intercept: np.ndarray
    temperature: float = 1.0
    meta: dict[str, object] = field(default_factory=dict)

    def _vectorize(self, texts: list[str]) -> sparse.csr_matrix:
        counts = count_ngrams([features_text(t) for t in texts], self.vocabulary).astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf
        x = counts.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        norms[norms == 0] = 1.0
        return sparse.csr_matrix(sparse.diags(1.0 / norms) @ x)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities, one row per text, columns in :attr:`classes` order."""
        logits = (self._vectorize(texts) @ self.coef.T + self.intercept) / self.temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def probabilities(self, text: str) -> dict[str, float]:
        """Calibrated probability of every type for one document text."""
        return dict(zip(self.classes, self.predict_proba([text])[0].tolist(), strict=True))


def save_model(model: DocTypeModel, path: Path) -> str:
    """Write ``path`` (.npz, no pickled objects) and ``path.sha256``; return the SHA-256."""
    terms = sorted(model.vocabulary, key=model.vocabulary.__getitem__)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        terms=np.array(terms, dtype=np.str_),
        idf=model.idf.astype(np.float32),
        coef=model.coef.astype(np.float32),
        intercept=model.intercept.astype(np.float32),
        classes=np.array(model.classes, dtype=np.str_),
        temperature=np.array(model.temperature, dtype=np.float64),
        meta=np.array(json.dumps(model.meta, sort_keys=True), dtype=np.str_),
    )
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest


def _bad_model(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"Document-type model {path}: {why}",
        "Mô hình phân loại giấy tờ bị hỏng hoặc không khớp tổng kiểm tra; chạy lại `hoso train`.",
    )


def load_model(path: Path) -> DocTypeModel:
    """Load a model saved by :func:`save_model` after checking its SHA-256; never unpickles."""
    path = Path(path)
    try:
        data = path.read_bytes()
        recorded = path.with_name(path.name + ".sha256").read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError) as exc:
        raise _bad_model(path, f"cannot read model or checksum ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != recorded:
        raise _bad_model(path, "SHA-256 does not match the recorded checksum")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            terms = [str(t) for t in z["terms"]]
            meta = json.loads(str(z["meta"]))
            model = DocTypeModel(
                classes=[str(c) for c in z["classes"]],
                vocabulary={t: i for i, t in enumerate(terms)},
                idf=z["idf"].astype(np.float64),
                coef=z["coef"].astype(np.float64),
                intercept=z["intercept"].astype(np.float64),
                temperature=float(z["temperature"]),
                meta=meta,
            )
    except (ValueError, KeyError, OSError) as exc:
        raise _bad_model(path, f"unreadable ({exc})") from exc
    n = len(terms)
    if (
        meta.get("format") != MODEL_FORMAT
        or model.coef.shape != (len(model.classes), n)
        or model.idf.shape != (n,)
        or model.intercept.shape != (len(model.classes),)
    ):
        raise _bad_model(path, "unexpected format or array shapes")
    return model


def bundled_model_path() -> Path:
    return Path(str(resources.files("pipeline").joinpath("data/model/doctype.npz")))


@lru_cache(maxsize=1)
def bundled_model() -> DocTypeModel | None:
    """The committed model, or None when it is absent (classification then uses the rules alone)."""
    path = bundled_model_path()
    if not path.is_file():
        return None
    return load_model(path)
