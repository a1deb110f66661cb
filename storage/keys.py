"""Where a dossier's objects live in the object store, and the registry names of its artifacts.

    dossiers/<code>/input/<file name>             the citizen's input, byte for byte (artifact ``input``,
                                                  or ``input-0001``… for a folder of pages)
    dossiers/<code>/digitised.pdf                 the certified searchable copy (``digitised``)
    dossiers/<code>/manifest.json                 receipt + objects written at intake (``manifest``)
    dossiers/<code>/result-approved.pdf           the e-result signed by the approver, before the seal
                                                  (``result_approved``)
    dossiers/<code>/result.pdf                    the signed and sealed e-result (``result``)
    dossiers/<code>/history/<artifact>/<n>.pdf    earlier versions of a renewed signed PDF, n = 1, 2, …
    dossiers/<code>/forms/<NN>-<slug>-<n>.pdf     the stored copy of the n-th one-stop form NN (Mẫu 01–06)
                                                  (``form-<NN>-<n>``)
    handovers/<batch id>/bien-ban-ban-giao.pdf    the signed hand-over record of an archive batch (a batch's,
                                                  not a dossier's; record class ``form``)

Keys derive from the dossier code alone, so a resumed intake writes to the same keys and never stores
a dossier twice. Every write is a new version of its key (storage/objects.py), owned by the attempt
that made it; the registry records which version each artifact is. Never move existing objects.

Each key belongs to a record class (:func:`record_class`), which decides its retention
(``HOSO_RETENTION``): ``input``, ``digitised``, ``manifest``, ``result``, ``form``; a history copy has its
artifact's class.
"""

from __future__ import annotations

from typing import Literal

RecordClass = Literal["input", "digitised", "manifest", "result", "form"]

DOSSIERS = "dossiers"
HANDOVERS = "handovers"

INPUT = "input"
DIGITISED = "digitised"
MANIFEST = "manifest"
RESULT = "result"
RESULT_APPROVED = "result_approved"
FORM = "form"


def dossier_prefix(code: str) -> str:
    """The folder of every object of dossier ``code`` (with its trailing ``/``)."""
    if not code or "/" in code or code in (".", ".."):
        raise ValueError(f"not a dossier code: {code!r}")
    return f"{DOSSIERS}/{code}/"


def input_key(code: str, file_name: str) -> str:
    if not file_name or "/" in file_name or file_name in (".", ".."):
        raise ValueError(f"not a file name: {file_name!r}")
    return f"{dossier_prefix(code)}input/{file_name}"


def input_artifact(position: int, count: int) -> str:
    """Registry name of the input file at ``position`` (1-based) of ``count``."""
    return INPUT if count == 1 else f"{INPUT}-{position:04d}"


def digitised_key(code: str) -> str:
    return f"{dossier_prefix(code)}digitised.pdf"


def manifest_key(code: str) -> str:
    return f"{dossier_prefix(code)}manifest.json"


def result_key(code: str) -> str:
    return f"{dossier_prefix(code)}result.pdf"


def approved_result_key(code: str) -> str:
    return f"{dossier_prefix(code)}result-approved.pdf"


def history_prefix(code: str, artifact: str) -> str:
    """The folder of earlier versions of ``artifact`` (with its trailing ``/``)."""
    return f"{dossier_prefix(code)}history/{artifact}/"


def history_key(code: str, artifact: str, version: int) -> str:
    """Key of the ``version``-th (1-based) earlier version of ``artifact``."""
    if version < 1:
        raise ValueError(f"history versions start at 1, not {version}")
    return f"{history_prefix(code, artifact)}{version}.pdf"


def history_artifact(artifact: str, version: int) -> str:
    """Registry name of the ``version``-th earlier version of ``artifact`` kept under :func:`history_key`."""
    return f"history:{artifact}:{version}"


_CLASS_OF_NAME: dict[str, RecordClass] = {
    "input": "input",
    "digitised.pdf": "digitised",
    "manifest.json": "manifest",
    "result.pdf": "result",
    "result-approved.pdf": "result",
    "forms": "form",
}
_CLASS_OF_ARTIFACT: dict[str, RecordClass] = {
    DIGITISED: "digitised",
    MANIFEST: "manifest",
    RESULT: "result",
    "result_approved": "result",
}


def handover_key(batch_id: str) -> str:
    """Key of the signed hand-over record (biên bản bàn giao) of archive batch ``batch_id``."""
    if not batch_id or "/" in batch_id or batch_id in (".", ".."):
        raise ValueError(f"not a batch id: {batch_id!r}")
    return f"{HANDOVERS}/{batch_id}/bien-ban-ban-giao.pdf"


def record_class(key: str) -> RecordClass | None:
    """The record class of a dossier's object key (a hand-over record is a ``form``); None for a key outside
    ``dossiers/<code>/`` and ``handovers/``."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == HANDOVERS:
        return "form"
    if len(parts) < 3 or parts[0] != DOSSIERS:
        return None
    rest = parts[2:]
    if rest[0] == "history" and len(rest) >= 3:
        return _CLASS_OF_ARTIFACT.get(rest[1])
    return _CLASS_OF_NAME.get(rest[0])


def form_key(code: str, number: str, slug: str, n: int = 1) -> str:
    """Key of the stored copy of a dossier's ``n``-th (1-based) form ``number`` (e.g. ``01``, ``tiep-nhan``)."""
    if n < 1:
        raise ValueError("form sequence numbers start at 1")
    if not number.isdigit() or not slug or "/" in slug:
        raise ValueError(f"not a form number and slug: {number!r}, {slug!r}")
    return f"{dossier_prefix(code)}forms/{number}-{slug}-{n}.pdf"


def form_artifact(number: str, n: int = 1) -> str:
    """Registry name of the stored copy of a dossier's ``n``-th form ``number``, e.g. ``form-01-1``."""
    if n < 1 or not number.isdigit():
        raise ValueError(f"not a form number and sequence: {number!r}, {n}")
    return f"{FORM}-{number}-{n}"
