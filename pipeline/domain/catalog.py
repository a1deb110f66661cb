"""The catalog of document types and procedures, loaded from ``pipeline/data/catalog.yaml`` and validated."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.core.errors import ConfigurationError, UnknownProcedure

UNKNOWN = "unknown"


class DocType(BaseModel):
    key: str
    label: str
    title_phrases: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)
    page_only: bool = False


FeeKind = Literal["phi", "le_phi"]
#: verified: the sources agree on the amount; conditional: it depends on the case (on-time registration,
#: residence…), the officer decides at the desk; unverified: the amount was not confirmed.
FeeStatus = Literal["verified", "unverified", "conditional"]

FEE_KIND_VI: dict[FeeKind | None, str] = {"phi": "Phí", "le_phi": "Lệ phí", None: "Phí, lệ phí"}
FEE_STATUS_NOTE_VI: dict[FeeStatus, str] = {
    "verified": "",
    "unverified": "mức phí chưa được xác minh — hỏi tại quầy",
    "conditional": "áp dụng tùy trường hợp — cán bộ tiếp nhận xác định tại quầy",
}


def format_dong(amount: int) -> str:
    """``200000`` → ``"200.000 đồng"`` (Vietnamese thousands separator)."""
    return f"{amount:,} đồng".replace(",", ".")


class FeeRate(BaseModel):
    """One amount of a fee schedule, in đồng per ``unit``."""

    amount: int = Field(ge=0)
    unit: str = Field(min_length=1, description="per what: lần, trang, bản, trường hợp…")
    applies_vi: str | None = Field(None, description="when this rate applies, e.g. 'nộp trực tuyến'")

    def text_vi(self) -> str:
        text = f"{format_dong(self.amount)}/{self.unit}"
        return f"{text} ({self.applies_vi})" if self.applies_vi else text


class Fee(BaseModel):
    """A procedure's fee (phí) or charge (lệ phí), as the sources state it; nothing is inferred."""

    kind: FeeKind | None = Field(None, description="phi (fee) or le_phi (charge); None when the source is silent")
    free: bool = Field(False, description="the source says nothing is collected (see conditions_vi)")
    rates: list[FeeRate] = Field(default_factory=list)
    max_amount: int | None = Field(None, ge=0, description="cap in đồng per max_unit")
    max_unit: str | None = None
    set_by_vi: str | None = Field(None, description="who sets the amount when the law leaves it local, e.g. HĐND")
    conditions_vi: str | None = None
    exemptions_vi: list[str] = Field(default_factory=list)
    legal_basis: str | None = None
    source: str = Field(min_length=1, description="where this comes from (shared catalogue references)")
    status: FeeStatus

    @model_validator(mode="after")
    def _consistent(self) -> Fee:
        if self.free and (self.rates or self.set_by_vi or self.max_amount is not None):
            raise ValueError("a free fee has no rates, cap or local amount")
        if (self.max_amount is None) != (self.max_unit is None):
            raise ValueError("max_amount and max_unit go together")
        if self.status == "conditional" and not self.conditions_vi:
            raise ValueError("a conditional fee needs conditions_vi")
        if not (self.free or self.rates or self.set_by_vi) and self.status != "unverified":
            raise ValueError("a fee with no amount, no local rule and not free can only be unverified")
        return self

    def line_vi(self) -> str:
        """The fee line printed on the receipt (Mẫu 01), e.g. ``"Phí: 10.000 đồng/trường hợp."``."""
        parts: list[str] = []
        if self.free:
            parts.append("Không thu phí" + (f" {self.conditions_vi}" if self.conditions_vi else ""))
        else:
            if self.set_by_vi:
                parts.append(f"theo mức do {self.set_by_vi} quy định")
            parts.extend(rate.text_vi() for rate in self.rates)
            if self.max_amount is not None:
                parts.append(f"tối đa {format_dong(self.max_amount)}/{self.max_unit}")
            if self.conditions_vi:
                parts.append(self.conditions_vi)
            if not parts:
                parts.append("chưa có thông tin")
        if self.exemptions_vi:
            parts.append("miễn: " + ", ".join(self.exemptions_vi))
        text = "; ".join(parts)
        text = text[0].upper() + text[1:]
        note = FEE_STATUS_NOTE_VI[self.status]
        return f"{FEE_KIND_VI[self.kind]}: {text}" + (f" ({note})." if note else ".")


class Procedure(BaseModel):
    key: str
    national_code: str | None = None
    label: str
    processing_days: int = Field(ge=0)
    required: list[list[str]]
    optional: list[str] = Field(default_factory=list)
    fee: Fee | None = Field(None, description="None: no fee information at all")

    def fee_line_vi(self) -> str:
        """The receipt's fee line; a procedure without fee data says so rather than guessing."""
        if self.fee is None:
            return f"{FEE_KIND_VI[None]}: Chưa có thông tin ({FEE_STATUS_NOTE_VI['unverified']})."
        return self.fee.line_vi()

    @property
    def allowed_types(self) -> set[str]:
        """Every type that may appear in this procedure's dossier."""
        return {t for slot in self.required for t in slot} | set(self.optional)


class Catalog(BaseModel):
    national_motto: list[str] = Field(default_factory=list)
    doc_types: dict[str, DocType]
    procedures: dict[str, Procedure]

    @model_validator(mode="after")
    def _check_references(self) -> Catalog:
        problems: list[str] = []
        codes: dict[str, str] = {}
        for proc in self.procedures.values():
            if not proc.required:
                problems.append(f"procedure {proc.key}: no required slot")
            for slot in proc.required:
                if not slot:
                    problems.append(f"procedure {proc.key}: empty slot")
            for t in [t for slot in proc.required for t in slot] + proc.optional:
                dt = self.doc_types.get(t)
                if dt is None:
                    problems.append(f"procedure {proc.key}: unknown document type {t!r}")
                elif dt.page_only:
                    problems.append(f"procedure {proc.key}: page-only type {t!r} cannot be a component")
            if proc.national_code is not None:
                if proc.national_code in codes or proc.national_code in self.procedures:
                    problems.append(f"procedure {proc.key}: national code {proc.national_code} is not unique")
                codes[proc.national_code] = proc.key
        for dt in self.doc_types.values():
            if not dt.page_only and not dt.title_phrases:
                problems.append(f"document type {dt.key}: no title phrase")
        if UNKNOWN in self.doc_types:
            problems.append(f"{UNKNOWN!r} is reserved and cannot be a document type key")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def document_types(self) -> dict[str, DocType]:
        """Types that documents can have (page-only kinds excluded)."""
        return {k: v for k, v in self.doc_types.items() if not v.page_only}

    def label(self, type_key: str) -> str:
        """The Vietnamese label of a type (the key itself for ``unknown``)."""
        dt = self.doc_types.get(type_key)
        return dt.label if dt else ("Giấy tờ không xác định" if type_key == UNKNOWN else type_key)

    def procedure(self, key_or_code: str) -> Procedure:
        """Look a procedure up by key or national code; raise :class:`UnknownProcedure` otherwise."""
        proc = self.procedures.get(key_or_code)
        if proc is not None:
            return proc
        for proc in self.procedures.values():
            if proc.national_code is not None and proc.national_code == key_or_code.strip():
                return proc
        valid = ", ".join(
            f"{p.key} ({p.national_code})" if p.national_code else p.key for p in self.procedures.values()
        )
        raise UnknownProcedure(
            f"Unknown procedure {key_or_code!r}; valid: {valid}",
            f"Không tìm thấy thủ tục hành chính {key_or_code!r}. Các thủ tục hợp lệ: {valid}",
        )


def _build(raw: Any, source: str) -> Catalog:
    if not isinstance(raw, dict) or "doc_types" not in raw or "procedures" not in raw:
        raise ConfigurationError(
            f"Catalog {source} must be a mapping with doc_types and procedures",
            "Tệp danh mục thủ tục không đúng cấu trúc.",
        )
    try:
        return Catalog(
            national_motto=(raw.get("markers") or {}).get("national_motto", []),
            doc_types={k: DocType(key=k, **(v or {})) for k, v in raw["doc_types"].items()},
            procedures={k: Procedure(key=k, **(v or {})) for k, v in raw["procedures"].items()},
        )
    except (ValidationError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"Invalid catalog {source}: {exc}", "Danh mục thủ tục không hợp lệ; liên hệ quản trị hệ thống."
        ) from exc


def load_catalog_file(path: Path) -> Catalog:
    """Load and validate a catalog YAML file (tests and site-specific catalogs)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            f"Cannot read catalog {path}: {exc}", "Không đọc được danh mục thủ tục."
        ) from exc
    return _build(raw, str(path))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The bundled catalog (package data), loaded and validated once per process."""
    text = resources.files("pipeline").joinpath("data/catalog.yaml").read_text(encoding="utf-8")
    return _build(yaml.safe_load(text), "pipeline/data/catalog.yaml")
