"""The object-key layout (storage/keys.py): one place, stable keys, nothing outside a dossier's folder."""

from __future__ import annotations

import pytest

from storage import keys

CODE = "000.00.00.H00-250714-0001"


def test_layout() -> None:
    assert keys.dossier_prefix(CODE) == f"dossiers/{CODE}/"
    assert keys.input_key(CODE, "scan.pdf") == f"dossiers/{CODE}/input/scan.pdf"
    assert keys.digitised_key(CODE) == f"dossiers/{CODE}/digitised.pdf"
    assert keys.manifest_key(CODE) == f"dossiers/{CODE}/manifest.json"
    assert keys.result_key(CODE) == f"dossiers/{CODE}/result.pdf"
    assert keys.history_prefix(CODE, keys.RESULT) == f"dossiers/{CODE}/history/result/"
    assert keys.history_key(CODE, keys.DIGITISED, 2) == f"dossiers/{CODE}/history/digitised/2.pdf"
    assert [keys.input_artifact(1, 1), keys.input_artifact(1, 3), keys.input_artifact(12, 13)] == [
        "input", "input-0001", "input-0012"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: keys.dossier_prefix(""),
        lambda: keys.dossier_prefix("a/b"),
        lambda: keys.digitised_key(".."),
        lambda: keys.input_key(CODE, "../manifest.json"),
        lambda: keys.input_key(CODE, ""),
        lambda: keys.history_key(CODE, keys.RESULT, 0),
    ],
)
def test_a_key_never_leaves_its_dossier(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()
