"""What changed in a signed PDF after its signatures, judged more strictly than pyHanko's defaults.

pyHanko's default difference analysis counts any change to the document information dictionary or
the XMP metadata as a long-term-archival update (not a modification): a later incremental update
could retitle a signed e-result and every signature would still hold. :data:`DIFF_POLICY` accepts
only what signing software itself writes there (modification date, producer); anything else is a
modification.

After the last signature (or document timestamp) nothing is covered by a signature any more, so only
validation data may follow it (:func:`changes_after_last_signature`): each later revision must add
to the document security store (DSS), and nothing may follow the final ``%%EOF``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree
from pyhanko.pdf_utils import generic, misc
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader, RawPdfPath
from pyhanko.sign.diff_analysis import (
    CatalogModificationRule,
    DocInfoRule,
    DSSCompareRule,
    FormUpdatingRule,
    GenericFieldModificationRule,
    MetadataUpdateRule,
    ModificationLevel,
    ObjectStreamRule,
    SigFieldCreationRule,
    SigFieldModificationRule,
    StandardDiffPolicy,
    SuspiciousModification,
    XrefStreamRule,
)
from pyhanko.sign.diff_analysis.commons import safe_whitelist
from pyhanko.sign.diff_analysis.rules_api import Context, ReferenceUpdate

__all__ = [
    "DIFF_POLICY",
    "E_RESULT_TYPE",
    "Finding",
    "changes_after_last_signature",
    "declares_pdfa",
    "is_e_result",
]

#: XMP ``dc:type`` entry that marks a PDF as an e-result issued by hoso (see pipeline/domain/results.py).
E_RESULT_TYPE = "hoso:e-result"

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC_TYPE = "{http://purl.org/dc/elements/1.1/}type"
_PDFAID_PART = "{http://www.aiim.org/pdfa/ns/id/}part"
#: What signing software updates on every revision it writes (pyHanko: dates and its name).
_BOOKKEEPING_INFO = frozenset({"/ModDate", "/Producer"})
_BOOKKEEPING_XMP = frozenset({
    "{http://ns.adobe.com/xap/1.0/}ModifyDate",
    "{http://ns.adobe.com/xap/1.0/}MetadataDate",
    "{http://ns.adobe.com/pdf/1.3/}Producer",
})
_PDF_WHITESPACE = b"\x00\t\n\x0c\r "


@dataclass(frozen=True)
class Finding:
    """One problem with the document as a whole, for the logs (English) and the clerk (Vietnamese)."""

    en: str
    vi: str


# --- XMP --------------------------------------------------------------------------------------------


def _value(element: etree._Element) -> object:
    """A property value comparable across serialisations (attribute or element, whitespace, prefixes)."""
    attrs = tuple(sorted((k, v) for k, v in element.attrib.items() if k != f"{{{_RDF}}}about"))
    children = tuple((child.tag, _value(child)) for child in element if isinstance(child.tag, str))
    text = (element.text or "").strip()
    return text if not attrs and not children else (attrs, text, children)


def xmp_properties(data: bytes) -> dict[str, object]:
    """The top-level properties of an XMP packet by expanded name; raises ValueError if it is not XML."""
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"the XMP metadata is not well-formed XML ({exc})") from exc
    props: dict[str, object] = {}
    for desc in root.iter(f"{{{_RDF}}}Description"):
        for name, value in desc.attrib.items():
            if not name.startswith(f"{{{_RDF}}}"):
                props[name] = value.strip()
        for child in desc:
            if isinstance(child.tag, str):
                props[child.tag] = _value(child)
    return props


def _metadata_of(root: generic.DictionaryObject, *, for_writing: bool = False) -> dict[str, object] | None:
    """The XMP properties of the catalog ``root``, or None when it has no readable XMP.

    ``for_writing``: ``root`` belongs to a file about to be written; its stream is then read the way
    pyHanko's writer reads it (as its MetadataStream). A plain read would be cached, and the writer would
    then replace the whole XMP instead of updating it. (Historical revisions need the plain read.)
    """
    if "/Metadata" not in root:
        return None
    try:
        stream = root["/Metadata"] if for_writing else root.raw_get("/Metadata").get_object()
        if not isinstance(stream, generic.StreamObject):
            return None
        return xmp_properties(stream.data)
    except Exception:  # noqa: BLE001 — unreadable metadata marks nothing (the difference analysis judges changes)
        return None


def _dc_types(props: dict[str, object] | None) -> list[str]:
    value = (props or {}).get(_DC_TYPE)
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple):  # rdf:Bag / rdf:Seq of rdf:li
        items = [v for _tag, container in value[2] if isinstance(container, tuple) for _li, v in container[2]]
        return [v for v in items if isinstance(v, str)]
    return []


def is_e_result(reader: PdfFileReader) -> bool:
    """Whether the XMP metadata of any revision marks the PDF as a hoso e-result (:data:`E_RESULT_TYPE`).

    Every revision counts: a later update that drops the marker does not make the file an ordinary PDF.
    """
    for revision in range(reader.xrefs.total_revisions):
        try:
            root = reader.get_historical_root(revision)
        except (misc.PdfError, ValueError, KeyError, TypeError):
            continue
        if E_RESULT_TYPE in _dc_types(_metadata_of(root)):
            return True
    return False


def declares_pdfa(root: generic.DictionaryObject) -> bool:
    """Whether the XMP metadata of the catalog of a file being written declares PDF/A (``pdfaid:part``)."""
    return _PDFAID_PART in (_metadata_of(root, for_writing=True) or {})


# --- a stricter difference analysis -------------------------------------------------------------------


def _entry(info: generic.DictionaryObject, key: str) -> object:
    return info.raw_get(key).get_object() if key in info else None


class _InfoBookkeepingRule(DocInfoRule):
    """/Info may change only in what signing software updates itself (modification date, producer)."""

    def apply(self, old: HistoricalResolver, new: HistoricalResolver) -> Iterable[ReferenceUpdate]:
        new_info = new.trailer_view.get_value_as_reference("/Info", optional=True)
        if new_info is None:
            return
        old_info = old.trailer_view.get_value_as_reference("/Info", optional=True)
        before = old_info.get_object() if old_info is not None else generic.DictionaryObject()
        after = new_info.get_object()
        if not isinstance(before, generic.DictionaryObject) or not isinstance(after, generic.DictionaryObject):
            raise SuspiciousModification("/Info is not a dictionary")
        changed = {k for k in set(before) | set(after) if _entry(before, k) != _entry(after, k)} - _BOOKKEEPING_INFO
        if changed:
            raise SuspiciousModification(f"document information changed after signing: {', '.join(sorted(changed))}")
        yield from map(
            ReferenceUpdate.curry_ref(context_checked=Context.from_absolute(old, RawPdfPath("/Info"))),
            safe_whitelist(old, old_info, new_info),
        )


class _MetadataBookkeepingRule(MetadataUpdateRule):
    """XMP may change only in what signing software updates itself (dates, producer)."""

    def apply(self, old: HistoricalResolver, new: HistoricalResolver) -> Iterable[ReferenceUpdate]:
        updates = list(super().apply(old, new))  # well-formedness and reference checks first
        before, after = _metadata_of(old.root) or {}, _metadata_of(new.root) or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)} - _BOOKKEEPING_XMP
        if changed:
            names = ", ".join(sorted(k.rsplit("}", 1)[-1] for k in changed))
            raise SuspiciousModification(f"XMP metadata changed after signing: {names}")
        yield from updates


_LTA = ModificationLevel.LTA_UPDATES
#: pyHanko's default difference analysis (``DEFAULT_DIFF_POLICY``) with metadata changes limited to
#: signing bookkeeping.
DIFF_POLICY = StandardDiffPolicy(
    global_rules=[
        CatalogModificationRule(),
        _InfoBookkeepingRule().as_qualified(_LTA),
        XrefStreamRule().as_qualified(_LTA),
        ObjectStreamRule().as_qualified(_LTA),
        DSSCompareRule().as_qualified(_LTA),
        _MetadataBookkeepingRule().as_qualified(_LTA),
    ],
    form_rule=FormUpdatingRule(
        field_rules=[SigFieldCreationRule(), SigFieldModificationRule(), GenericFieldModificationRule()],
    ),
)


# --- after the last signature -------------------------------------------------------------------------


def _reachable_refs(obj: generic.PdfObject, limit: int = 100_000) -> Iterator[generic.Reference]:
    """References reachable from ``obj`` through dictionaries and arrays (stream dictionaries included)."""
    todo: list[generic.PdfObject] = [obj]
    seen: set[generic.Reference] = set()
    while todo and len(seen) < limit:
        item = todo.pop()
        if isinstance(item, generic.IndirectObject):
            ref = item.reference
            if ref in seen:
                continue
            seen.add(ref)
            yield ref
            item = item.get_object()
        if isinstance(item, generic.DictionaryObject):  # StreamObject included
            todo.extend(item.raw_get(k) for k in item)
        elif isinstance(item, generic.ArrayObject):
            todo.extend(item.raw_get(i) for i in range(len(item)))


def _adds_validation_data(reader: PdfFileReader, revision: int) -> bool:
    resolver = reader.get_historical_resolver(revision)
    root = resolver.root
    if "/DSS" not in root:
        return False
    written = reader.xrefs.explicit_refs_in_revision(revision)
    dss = root.raw_get("/DSS")
    if not isinstance(dss, generic.IndirectObject):  # a direct DSS changes with the catalog
        return resolver.root_ref in written
    return any(ref in written for ref in _reachable_refs(dss))


def _trailing_bytes(reader: PdfFileReader, pdf: bytes) -> int:
    """How many bytes other than whitespace follow the ``%%EOF`` that ends the last revision."""
    xrefs = reader.xrefs
    end = max(xrefs.get_xref_container_info(r).end_location for r in range(xrefs.total_revisions))
    eof = pdf.find(b"%%EOF", end)
    if eof < 0:
        return len(pdf[end:].strip(_PDF_WHITESPACE))
    return len(pdf[eof + 5 :].strip(_PDF_WHITESPACE))


def changes_after_last_signature(reader: PdfFileReader, pdf: bytes) -> list[Finding]:
    """Changes no signature covers: revisions after the last signature or document timestamp that do
    not add validation data, and bytes after the last revision's ``%%EOF``.

    (What those validation-data revisions change besides the DSS is judged by the last signature's
    modification level under :data:`DIFF_POLICY`.)
    """
    sigs = reader.embedded_signatures
    if not sigs:
        return []
    findings = []
    try:
        last_signed = max(sig.signed_revision for sig in sigs)
        unsigned = [
            revision for revision in range(last_signed + 1, reader.xrefs.total_revisions)
            if not _adds_validation_data(reader, revision)
        ]
        extra = _trailing_bytes(reader, pdf)
    except (misc.PdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        return [Finding(  # fail closed: what cannot be read cannot be shown to be unchanged
            f"the revisions after the last signature cannot be analysed ({type(exc).__name__}: {exc})",
            "không kiểm tra được các lần cập nhật sau chữ ký cuối cùng (tệp bị hỏng)",
        )]
    for revision in unsigned:
        findings.append(Finding(
            f"revision {revision + 1} after the last signature changes the document without adding "
            "validation data (an unsigned change)",
            f"tài liệu bị sửa đổi sau chữ ký cuối cùng (lần cập nhật thứ {revision + 1} không được ký)",
        ))
    if extra:
        findings.append(Finding(
            f"{extra} byte(s) appended after the end of the last revision (%%EOF)",
            f"có {extra} byte được thêm vào cuối tệp sau khi ký",
        ))
    return findings
