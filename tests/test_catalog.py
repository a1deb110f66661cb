"""The bundled catalog loads, is consistent with the taxonomy rules, and rejects broken data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import ConfigurationError, ExitCode, UnknownProcedure
from pipeline.domain.catalog import Catalog, load_catalog, load_catalog_file

PILOT_PROCEDURES = {
    "birth_registration",
    "marriage_registration",
    "death_registration",
    "land_transfer_registration",
    "construction_permit",
    "business_household_registration",
    "business_household_change",
    "certified_copy",
}


def test_bundled_catalog_is_package_data_and_complete() -> None:
    import pipeline

    assert (Path(pipeline.__file__).parent / "data" / "catalog.yaml").is_file()
    cat = load_catalog()
    assert isinstance(cat, Catalog)
    assert load_catalog() is cat  # cached
    assert set(cat.procedures) == PILOT_PROCEDURES
    assert {"separator", "blank"} <= set(cat.doc_types)
    assert "separator" not in cat.document_types and "cccd" in cat.document_types
    for proc in cat.procedures.values():
        for t in {t for slot in proc.required for t in slot} | set(proc.optional):
            assert t in cat.document_types
    assert cat.doc_types["giay_khai_sinh"].label == "Giấy khai sinh"


def test_procedure_lookup_by_key_and_national_code() -> None:
    cat = load_catalog()
    p = cat.procedure("1.001612")
    assert p.key == "business_household_registration"
    assert p.processing_days == 3
    assert cat.procedure("business_household_registration") is p
    assert cat.procedure("birth_registration").processing_days == 0
    assert cat.procedure("land_transfer_registration").processing_days == 5
    assert cat.procedure("2.000815").key == "certified_copy"
    assert cat.procedure("business_household_change").national_code is None


def test_unknown_procedure_lists_valid_keys_in_both_languages() -> None:
    with pytest.raises(UnknownProcedure) as info:
        load_catalog().procedure("9.999999")
    err = info.value
    assert err.exit_code == ExitCode.unknown_procedure
    assert "birth_registration (1.001193)" in str(err)
    assert "Không tìm thấy thủ tục" in err.message_vi and "certified_copy" in err.message_vi


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _minimal() -> dict:
    return {
        "doc_types": {
            "a": {"label": "A", "title_phrases": ["GIẤY A"]},
            "b": {"label": "B", "title_phrases": ["B"]},
        },
        "procedures": {
            "p": {
                "national_code": "1.1",
                "label": "P",
                "processing_days": 1,
                "required": [["a"]],
                "optional": ["b"],
            }
        },
    }


def test_minimal_catalog_file_loads(tmp_path: Path) -> None:
    cat = load_catalog_file(_write(tmp_path, _minimal()))
    assert cat.procedure("1.1").required == [["a"]]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["procedures"]["p"].update(required=[["zzz"]]), "unknown document type 'zzz'"),
        (lambda d: d["procedures"]["p"].update(required=[[]]), "empty slot"),
        (lambda d: d["procedures"]["p"].update(required=[]), "no required slot"),
        (lambda d: d["procedures"].update(q={**d["procedures"]["p"]}), "not unique"),
        (lambda d: d["procedures"]["p"].update(processing_days=-1), "processing_days"),
        (lambda d: d["doc_types"]["a"].update(title_phrases=[]), "no title phrase"),
    ],
)
def test_broken_catalog_is_a_configuration_error(tmp_path: Path, mutate, message: str) -> None:
    data = _minimal()
    mutate(data)
    with pytest.raises(ConfigurationError) as info:
        load_catalog_file(_write(tmp_path, data))
    assert message in str(info.value)
    assert info.value.message_vi


def test_unreadable_catalog_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("doc_types: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_catalog_file(bad)
    with pytest.raises(ConfigurationError):
        load_catalog_file(tmp_path / "missing.yaml")
