"""The learned document-type model: tiny reproducible training, safe save/load, the bundled model."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigurationError
from pipeline.domain.catalog import load_catalog
from pipeline.domain.classify import classify
from pipeline.domain.doctype_model import (
    NGRAMS,
    DocTypeModel,
    bundled_model,
    char_wb_ngrams,
    count_ngrams,
    features_text,
    load_model,
    save_model,
)
from pipeline.training.synth import ocr_noise, synthetic_document, templates
from pipeline.training.train import train_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    model, metrics = train_model(seed=3, per_type=8, max_features=3000)
    assert metrics["heldout_accuracy"] >= 0.8  # 17 types from 8 noisy examples each
    path = tmp_path_factory.mktemp("model") / "m.npz"
    return path, save_model(model, path)


def test_every_catalog_type_has_a_template() -> None:
    assert set(templates()["types"]) == set(load_catalog().document_types)


@pytest.mark.slow  # a second training
def test_training_is_deterministic_for_a_seed(tiny: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = tiny
    again, _ = train_model(seed=3, per_type=8, max_features=3000)
    assert save_model(again, tmp_path / "again.npz") == digest
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_saved_model_has_no_pickled_objects_and_round_trips(tiny: tuple[Path, str]) -> None:
    path, _ = tiny
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    model = load_model(path)
    text = synthetic_document("giay_bao_tu", random.Random(5)).text
    probs = model.probabilities(text)
    assert max(probs, key=probs.__getitem__) == "giay_bao_tu"
    assert abs(sum(probs.values()) - 1.0) < 1e-6


def test_tampered_or_unchecked_model_is_refused(tiny: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = tiny
    bad = tmp_path / "bad.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.npz.sha256").write_text(path.with_name(path.name + ".sha256").read_text())
    with pytest.raises(ConfigurationError, match="SHA-256"):
        load_model(bad)
    lonely = tmp_path / "lonely.npz"
    lonely.write_bytes(path.read_bytes())
    with pytest.raises(ConfigurationError) as exc:
        load_model(lonely)
    assert "hoso train" in exc.value.message_vi


def test_bundled_model_classifies_damaged_synthetic_documents() -> None:
    model = bundled_model()
    assert model is not None
    cat = load_catalog()
    rng = random.Random(2024)  # another seed than training's
    wrong = 0
    for key in sorted(cat.document_types):
        for _ in range(3):
            text = ocr_noise(synthetic_document(key, rng).text, rng, 0.12)
            got, conf = classify(text, cat, method="model")
            wrong += got != key
            assert 0.0 <= conf <= 1.0
    assert wrong <= 2, wrong


@pytest.mark.slow  # a third training
def test_cli_train_writes_model_and_checksum(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    out = tmp_path / "cli.npz"
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--seed", "1", "--per-type", "4"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "cli.npz.sha256").is_file()
    load_model(out)


# Upper case, NFC and NFD diacritics, đ/Đ, tabs and runs of spaces, one-letter words, punctuation, digits, an MRZ
# line, a word exactly as long as an n-gram with its padding, nothing at all.
VARIED_TEXTS = [
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc",
    "GIẤY KHAI SINH\tHọ, chữ đệm, tên:  NGUYỄN   Văn A\r\nNgày sinh: 01/02/2003",
    "Căn cước công dân số 001203004567 — Quê quán: Xã Đông Hưng, tỉnh Thái Bình",
    "IDVNM2030045671001203004567<<8\n0302015M3302013VNM<<<<<<<<<<<6\nNGUYEN<<VAN<A<<<<<<<<<<<<<<<<<",
    "a b cd efg hijk ở ồ ữ Đ đ",
    unicodedata.normalize("NFD", "nghiêng Đường phố"),  # marks as code points of their own
    "",
    "   \n\t  ",
    "x" * 9 + " ab  abc   abcd",
]


def _sklearn_vectorize(model: DocTypeModel, texts: list[str]) -> np.ndarray:
    """The vectorizer doctype_model used before it counted n-grams itself: scikit-learn's, then sublinear tf-idf."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(analyzer="char_wb", ngram_range=NGRAMS, vocabulary=model.vocabulary)
    counts = cv.transform([features_text(t) for t in texts]).astype(np.float64)
    counts.data = 1.0 + np.log(counts.data)
    x = counts.multiply(model.idf).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ x).toarray()


def test_ngram_counts_are_bit_identical_to_scikit_learn() -> None:
    from sklearn.feature_extraction.text import CountVectorizer

    rng = random.Random(11)
    noisy = [ocr_noise(synthetic_document(k, rng).text, rng, 0.2) for k in sorted(load_catalog().document_types)]
    texts = VARIED_TEXTS + noisy
    analyzer = CountVectorizer(analyzer="char_wb", ngram_range=NGRAMS).build_analyzer()
    for text in texts:  # raw text (case and diacritics kept) and what the model sees
        for doc in (text, features_text(text)):
            assert list(char_wb_ngrams(doc)) == analyzer(doc), doc

    fitted = CountVectorizer(analyzer="char_wb", ngram_range=NGRAMS).fit(texts)
    ours = count_ngrams(texts, fitted.vocabulary_)
    theirs = fitted.transform(texts)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.nnz == theirs.nnz > 1000
    assert np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
    assert np.array_equal(ours.data, theirs.data)

    model = bundled_model()
    assert model is not None
    expected = _sklearn_vectorize(model, texts)
    got = model._vectorize(texts).toarray()
    assert np.count_nonzero(got) > 1000
    assert got.tobytes() == expected.tobytes()  # bit for bit, not merely close
