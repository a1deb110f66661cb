"""Pages → documents: separator and blank pages split and belong to none; titled pages start a document."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from ocr.models import RecognizedPage
from pipeline.core.models import PageKind
from pipeline.core.text import squash
from pipeline.domain.catalog import Catalog
from pipeline.domain.classify import TITLE_LINES, phrase_line_score, title_windows

START_MIN = 0.88  # stricter than classification: a false start splits a document in two
_MIN_TEXT_CHARS = 8  # fewer alphanumerics than this on a "content" page: treat it as blank (scanner dust)
_ALNUM = re.compile(r"[0-9A-Za-zÀ-ỹĐđ]")


class PageGroup(BaseModel):
    """The pages of one document, in input order."""

    pages: list[int] = Field(description="1-based input page numbers")
    texts: list[str] = Field(default_factory=list, description="Recognised text of each page")

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def page_kind(page: RecognizedPage, catalog: Catalog) -> PageKind:
    """The kind of a page: OCR's separator/blank verdicts, else from its text (empty, separator title)."""
    if page.kind == "separator":
        return "separator"
    if page.kind == "blank" or len(_ALNUM.findall(page.text)) < _MIN_TEXT_CHARS:
        return "blank"
    sep = catalog.doc_types.get("separator")
    if sep is not None:
        windows = title_windows(page.text, max_lines=4)
        if any(phrase_line_score(squash(p), windows) >= START_MIN for p in sep.title_phrases):
            return "separator"
    return "document"


def starts_document(text: str, catalog: Catalog) -> bool:
    """True when the page opens a document: the national motto or a known title in its first lines."""
    windows = title_windows(text, max_lines=TITLE_LINES)
    phrases = list(catalog.national_motto)
    for dt in catalog.document_types.values():
        phrases.extend(dt.title_phrases)
    # Whole-line matches only: a body sentence may begin with a title ("Hợp đồng chuyển nhượng … giao kết").
    return any(phrase_line_score(squash(p), windows, prefix=False) >= START_MIN for p in phrases)


def segment(pages: list[RecognizedPage], catalog: Catalog) -> list[PageGroup]:
    """Group document pages into documents (see the module docstring); page kinds via :func:`page_kind`."""
    groups: list[PageGroup] = []
    current: PageGroup | None = None
    for page in sorted(pages, key=lambda p: p.index):
        kind = page_kind(page, catalog)
        if kind == "separator":
            current = None  # the next content page starts a new document
            continue
        if kind == "blank":
            continue  # blank backs do not end a document: page 2 may follow the blank back of page 1
        if current is None or starts_document(page.text, catalog):
            current = PageGroup(pages=[page.index], texts=[page.text])
            groups.append(current)
        else:
            current.pages.append(page.index)
            current.texts.append(page.text)
    return groups
