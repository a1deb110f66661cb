"""The catalog of document types and procedures, loaded from ``pipeline/data/catalog.yaml`` and validated."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

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


class Procedure(BaseModel):
    key: str
    national_code: str | None = None
    label: str
    processing_days: int = Field(ge=0)
    required: list[list[str]]
    optional: list[str] = Field(default_factory=list)

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
