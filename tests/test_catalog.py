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
        (lambda d: d["procedures"]["p"].update(fee={"status": "verified", "source": "x"}), "only be unverified"),
        (lambda d: d["procedures"]["p"].update(fee={"free": True, "status": "conditional", "source": "x"}),
         "needs conditions_vi"),
        (lambda d: d["procedures"]["p"].update(
            fee={"free": True, "rates": [{"amount": 1, "unit": "lần"}], "status": "verified", "source": "x"}),
         "a free fee has no rates"),
        (lambda d: d["procedures"]["p"].update(
            fee={"rates": [{"amount": -5, "unit": "lần"}], "status": "verified", "source": "x"}), "amount"),
        (lambda d: d["procedures"]["p"].update(fee={"status": "maybe", "source": "x"}), "status"),
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


# What shared/catalog/forms.md's fee table says, procedure by procedure (status, free, amounts in đồng).
FEES_FROM_FORMS_MD = {
    "birth_registration": ("conditional", True, []),
    "marriage_registration": ("conditional", True, []),
    "death_registration": ("conditional", True, []),
    "land_transfer_registration": ("unverified", False, []),  # not in the table: procedures.yaml examples only
    "construction_permit": ("unverified", False, []),
    "business_household_registration": ("unverified", False, [100_000]),
    "business_household_change": ("unverified", False, []),  # no source at all
    "certified_copy": ("verified", False, [2_000, 1_000]),
}


def test_every_procedure_has_its_fee_from_the_sources() -> None:
    cat = load_catalog()
    for key, (status, free, amounts) in FEES_FROM_FORMS_MD.items():
        fee = cat.procedures[key].fee
        assert fee is not None, key
        assert (fee.status, fee.free, [r.amount for r in fee.rates]) == (status, free, amounts), key
        assert fee.source
    copy = cat.procedure("2.000815").fee
    assert copy is not None and (copy.kind, copy.max_amount, copy.max_unit) == ("phi", 200_000, "bản")


def test_fee_lines_say_what_is_not_verified() -> None:
    cat = load_catalog()
    lines = {key: p.fee_line_vi() for key, p in cat.procedures.items()}
    assert lines["certified_copy"] == (
        "Phí: 2.000 đồng/trang (trang thứ nhất và thứ hai); 1.000 đồng/trang (từ trang thứ ba trở lên); "
        "tối đa 200.000 đồng/bản."
    )
    for key in ("business_household_registration", "construction_permit", "land_transfer_registration",
                "business_household_change"):
        assert "mức phí chưa được xác minh — hỏi tại quầy" in lines[key], key
    assert lines["business_household_registration"].startswith(
        "Lệ phí: Theo mức do HĐND cấp tỉnh quy định; 100.000 đồng/lần"
    )
    assert lines["business_household_change"] == (
        "Phí, lệ phí: Chưa có thông tin (mức phí chưa được xác minh — hỏi tại quầy)."
    )
    for key in ("birth_registration", "marriage_registration", "death_registration"):
        assert lines[key].startswith("Lệ phí: Không thu phí "), key
        assert "áp dụng tùy trường hợp" in lines[key] and "chưa được xác minh" not in lines[key], key
    assert "60 ngày" in lines["birth_registration"] and "15 ngày" in lines["death_registration"]
    # "Không thu phí" only where the source says so.
    assert [k for k, line in lines.items() if "Không thu phí" in line] == [
        "birth_registration", "marriage_registration", "death_registration"
    ]


def test_a_procedure_without_fee_data_guesses_nothing(tmp_path: Path) -> None:
    cat = load_catalog_file(_write(tmp_path, _minimal()))
    proc = cat.procedure("p")
    assert proc.fee is None
    assert proc.fee_line_vi() == "Phí, lệ phí: Chưa có thông tin (mức phí chưa được xác minh — hỏi tại quầy)."
