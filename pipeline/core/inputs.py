"""What a citizen's input is, found once: its files in page order, their formats, digests and signatures.

:func:`identify_input` is the one place that looks at an input path. It refuses what is not a plain file
or a folder of plain files — symlinks, FIFOs, devices, sockets, subfolders — from ``lstat`` alone, before
a byte is read (reading ``/dev/zero`` or a FIFO would never end). Formats are told by magic bytes, never
by the file name. Digests and signature fields are read on first use, then kept.

The input's SHA-256 identifies it in the registry: a file's is that of its bytes; a folder's is that of
one line per page file, ``name NUL sha256-hex LF``, in name order. Never change it: re-runs of inputs
already recorded must find their dossier.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Literal

from pipeline.core.errors import InputCorrupt, InputMissing, InputNotRegular

FileFormat = Literal["pdf", "png", "jpeg", "tiff"]

CONTENT_TYPES: dict[FileFormat, str] = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}
UNKNOWN_CONTENT_TYPE = "application/octet-stream"

_MAGIC: list[tuple[bytes, FileFormat]] = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
]
HEAD_BYTES = 1024  # the PDF header may come after junk within the first 1024 bytes (ISO 32000-1, 7.5.2)
_CHUNK = 1 << 20


def sniff(head: bytes) -> FileFormat | None:
    """The format the first bytes of a file announce, or None when unknown."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if b"%PDF-" in head[:HEAD_BYTES]:
        return "pdf"
    return None


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in English, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(path: Path, what: str) -> InputNotRegular:
    return InputNotRegular(
        f"{path}: {what}, not a regular file; refused before reading",
        f"'{path.name}' không phải là tệp thông thường (liên kết, thiết bị hoặc đường ống); "
        "vui lòng nộp tệp PDF/ảnh hoặc thư mục ảnh trang.",
    )


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError as exc:
        raise InputMissing(f"input not found: {path}", f"Không tìm thấy tệp hoặc thư mục: {path.name}") from exc
    except OSError as exc:
        raise InputCorrupt(f"{path}: cannot be read: {exc}", f"Không đọc được '{path.name}'.") from exc


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for reading, never following a symlink nor blocking on a FIFO or device.

    The file is checked again once open, so one swapped in after :func:`identify_input` is refused too.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputMissing(f"input not found: {path}", f"Không tìm thấy tệp: {path.name}") from exc
    except OSError as exc:  # ELOOP: a symlink was swapped in
        if os.path.islink(path):
            raise _not_regular(path, "a symbolic link") from exc
        raise InputCorrupt(f"{path}: cannot be opened: {exc}", f"Không mở được tệp '{path.name}'.") from exc
    try:
        what = _kind_of(os.fstat(fd).st_mode)
        if what is not None:
            raise _not_regular(path, what)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


@dataclass(frozen=True)
class InputFile:
    """One regular file of an input: its format (from magic bytes, None when unknown) and size."""

    path: Path
    format: FileFormat | None
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def content_type(self) -> str:
        """The MIME type its bytes announce (``application/octet-stream`` when unknown)."""
        return CONTENT_TYPES[self.format] if self.format else UNKNOWN_CONTENT_TYPE

    @cached_property
    def sha256(self) -> str:
        """SHA-256 (hex) of the file's bytes, read once."""
        digest = hashlib.sha256()
        try:
            with open_regular(self.path) as fh:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise InputCorrupt(f"{self.path}: read failed: {exc}", f"Không đọc được tệp '{self.name}'.") from exc
        return digest.hexdigest()


@dataclass(frozen=True)
class Input:
    """A citizen's input, identified: one file, or a folder whose plain files are its pages in name order."""

    path: Path
    is_folder: bool
    files: tuple[InputFile, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    @cached_property
    def sha256(self) -> str:
        """The registry's identity of this input (see the module docstring); read once."""
        if not self.is_folder:
            return self.files[0].sha256
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f.name.encode() + b"\0" + f.sha256.encode() + b"\n")
        return digest.hexdigest()

    @cached_property
    def signature_fields(self) -> list[str]:
        """Names of the signed signature fields of a single-PDF input; [] for anything else."""
        if self.is_folder or self.files[0].format != "pdf":
            return []
        return pdf_signature_fields(self.files[0].path)


def _identify_file(path: Path, st: os.stat_result) -> InputFile:
    what = _kind_of(st.st_mode)
    if what is not None:
        raise _not_regular(path, what)
    try:
        with open_regular(path) as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InputCorrupt(f"{path}: read failed: {exc}", f"Không đọc được tệp '{path.name}'.") from exc
    return InputFile(path, sniff(head), st.st_size)


def folder_entries(folder: Path) -> list[Path]:
    """A folder's entries that count, in name order: everything but hidden names (``.DS_Store``…)."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith("."))
    except OSError as exc:
        raise InputCorrupt(
            f"{folder}: cannot list the folder: {exc}", f"Không đọc được thư mục '{folder.name}'."
        ) from exc
    return [folder / n for n in names]


def identify_input(path: Path) -> Input:
    """Identify an input path (see the module docstring); InputMissing / InputNotRegular when it is not one.

    A folder's pages are its non-hidden entries in name order; each must be a plain file (a subfolder,
    symlink or FIFO among them refuses the folder rather than being skipped). An empty file or folder,
    or an unknown format, is identified as it is: refusing those is the loader's job.
    """
    path = Path(path)
    st = _lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return Input(path, False, (_identify_file(path, st),))
    files = []
    for entry in folder_entries(path):
        entry_st = _lstat(entry)
        if stat.S_ISDIR(entry_st.st_mode):
            raise InputNotRegular(
                f"{entry}: a folder of pages holds a subfolder",
                f"Thư mục '{path.name}' chứa thư mục con '{entry.name}'; chỉ được chứa ảnh trang.",
            )
        files.append(_identify_file(entry, entry_st))
    return Input(path, True, tuple(files))


def pdf_signature_fields(path: Path) -> list[str]:
    """Names of the signed signature fields (AcroForm ``/FT /Sig`` with a ``/V``) of a PDF file."""
    import pikepdf  # only signed-input checks need it

    names: list[str] = []
    try:
        with open_regular(path) as fh, pikepdf.open(fh) as pdf:
            acroform = pdf.Root.get("/AcroForm")
            stack = list(acroform.get("/Fields", [])) if acroform is not None else []
            seen: set[tuple[int, int]] = set()
            while stack:
                fld = stack.pop()
                if not isinstance(fld, pikepdf.Dictionary) or (fld.is_indirect and fld.objgen in seen):
                    continue
                if fld.is_indirect:
                    seen.add(fld.objgen)
                if fld.get("/FT") == pikepdf.Name.Sig and fld.get("/V") is not None:
                    names.append(str(fld.get("/T", "")))
                stack.extend(fld.get("/Kids", []))
    except (pikepdf.PdfError, OSError):
        return []  # an unreadable PDF is refused by the loader with its own reason
    return sorted(names)
