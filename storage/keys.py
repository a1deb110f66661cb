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

Keys derive from the dossier code alone, so a resumed intake writes to the same keys and never stores
a dossier twice. Stored keys are recorded in the registry: never move existing objects.
"""

from __future__ import annotations

DOSSIERS = "dossiers"

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
