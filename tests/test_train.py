"""The learned document-type model: tiny reproducible training, safe save/load, the bundled model."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigurationError
from pipeline.domain.catalog import load_catalog
from pipeline.domain.classify import classify
from pipeline.domain.doctype_model import bundled_model, load_model, save_model
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


def test_cli_train_writes_model_and_checksum(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "cli.npz"
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--seed", "1", "--per-type", "4"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "cli.npz.sha256").is_file()
    load_model(out)
