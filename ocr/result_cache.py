"""What an OCR run computed for one input, kept so that a retry of the same input does not OCR it again.

A dossier whose attempt failed after OCR — the store or the registry away while it was recorded — is tried
again (:class:`pipeline.usecases.archive.Retries`, Prefect task retries, ``hoso watch``'s later passes); OCR
is most of a dossier's time, and its output for the same bytes with the same engine and settings is the same.
So the desk keeps each completed OCR run here until the dossier is recorded.

Never a half result, never a stale or corrupt one:

- an entry is written only after the whole input was OCR'd, in a hidden folder of its own, each file flushed
  to disk, then published by one ``rename``: a reader sees a whole entry or none;
- its key is the SHA-256 of the input's SHA-256, the engine (class, name, its own ``identity`` — for
  Tesseract its version, backend and language models — or a dataclass engine's fields), the options that
  change the output (language, limits) and the source of the ``ocr`` package and of the engine's module:
  other bytes, another engine or model, other settings or other OCR code give another key;
- on reading, the entry's recorded key and the searchable PDF's SHA-256 and size are checked and the pages
  are validated, with the page count the caller expects: any mismatch, or an entry older than ``max_age``,
  is removed and reported as a miss (the input is OCR'd again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ocr.models import OcrOptions, OcrResult, RecognizedPage
from ocr.plugin import OcrEngine

log = logging.getLogger(__name__)

FORMAT = 1  # the entry layout; a change makes every older entry a miss
ENTRY, PDF = "entry.json", "searchable.pdf"
_PAGES = TypeAdapter(list[RecognizedPage])


@cache
def _source_digest(*files: str) -> str:
    """SHA-256 over the given source files (once per process)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        try:
            h.update(Path(name).read_bytes())
        except OSError:
            h.update(b"<unreadable>")
    return h.hexdigest()


def _ocr_sources() -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(Path(__file__).parent.glob("*.py")))


def engine_identity(engine: OcrEngine, options: OcrOptions) -> dict[str, Any]:
    """What identifies the engine and settings that produce an OCR result (part of the cache key)."""
    kind = type(engine)
    module_file = inspect.getsourcefile(kind) or ""
    own = getattr(engine, "identity", None)
    return {
        "engine": f"{kind.__module__}.{kind.__qualname__}",
        "name": engine.name,
        "engine_identity": own(options) if callable(own) else None,
        "engine_fields": repr(engine) if dataclasses.is_dataclass(engine) else None,  # a plugin's settings
        "options": options.model_dump(mode="json", include={"language", "max_image_pixels", "max_pages"}),
        "code": _source_digest(*_ocr_sources(), module_file),
    }


class OcrResultCache:
    """Completed OCR runs by input and engine, in a private folder (``<data_dir>/ocr-results``)."""

    def __init__(self, folder: Path, *, max_age: float = 24 * 3600) -> None:
        self.folder = Path(folder)
        self.max_age = max_age

    def key(self, input_sha256: str, engine: OcrEngine, options: OcrOptions) -> str:
        material = {"format": FORMAT, "input_sha256": input_sha256, **engine_identity(engine, options)}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / key

    def load(self, key: str, out_pdf: Path, *, page_count: int) -> OcrResult | None:
        """The OCR result kept under ``key`` (its searchable PDF copied to ``out_pdf``), or None: absent,
        too old, or not exactly what was stored (then it is removed)."""
        entry = self._entry(key)
        if not entry.is_dir():
            return None
        try:
            meta = json.loads((entry / ENTRY).read_text(encoding="utf-8"))
            if time.time() - float(meta["stored_at"]) > self.max_age:
                raise ValueError("older than the cache keeps results")
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("made for another key")
            pdf = (entry / PDF).read_bytes()
            if len(pdf) != meta["pdf_size"] or hashlib.sha256(pdf).hexdigest() != meta["pdf_sha256"]:
                raise ValueError("searchable PDF differs from the one stored")
            pages = _PAGES.validate_python(meta["pages"])
            if len(pages) != page_count or [p.index for p in pages] != list(range(1, page_count + 1)):
                raise ValueError(f"{len(pages)} page(s) kept, {page_count} expected")
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as err:
            log.warning("OCR result cache: entry %s… not used, removed: %s", key[:12], err)
            self.discard(key)
            return None
        out_pdf.parent.mkdir(parents=True, exist_ok=True)
        out_pdf.write_bytes(pdf)
        return OcrResult(pages=pages, pdf_path=out_pdf, seconds=0.0)

    def store(self, key: str, result: OcrResult) -> None:
        """Keep a completed OCR run under ``key`` (written whole, then published by one rename). A failure to
        keep it is logged and otherwise ignored: the cache only saves time."""
        entry = self._entry(key)
        tmp = self.folder / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sweep()
            tmp.mkdir(mode=0o700)
            pdf = result.pdf_path.read_bytes()
            meta = {
                "format": FORMAT, "key": key, "stored_at": time.time(), "pdf_size": len(pdf),
                "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
                "pages": [p.model_dump(mode="json") for p in result.pages],
            }
            _write_synced(tmp / PDF, pdf)
            _write_synced(tmp / ENTRY, json.dumps(meta, ensure_ascii=False).encode())
            try:
                os.rename(tmp, entry)  # atomic; refused when another run published the same key first
            except OSError:
                if not entry.is_dir():
                    raise
        except OSError as err:
            log.warning("OCR result cache: could not keep %s…: %s", key[:12], err)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, key: str) -> None:
        """Forget the entry under ``key`` (the dossier is recorded, or failed for good)."""
        entry = self._entry(key)
        gone = self.folder / f".{key}.{uuid.uuid4().hex}.gone"
        try:
            os.rename(entry, gone)  # out of readers' way at once, then removed
        except OSError:
            return
        shutil.rmtree(gone, ignore_errors=True)

    def _sweep(self) -> None:
        """Remove entries past ``max_age`` and leftovers of writers that died (hidden folders over an hour old)."""
        now = time.time()
        for path in self.folder.iterdir():
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue
            if (path.name.startswith(".") and age > 3600) or (not path.name.startswith(".") and age > self.max_age):
                shutil.rmtree(path, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    """A new private file (mode 0600: a citizen's pages and their text) with ``data``, flushed to disk."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
