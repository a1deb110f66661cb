"""What a citizen's input is, found once: its files in page order, their formats, digests and signatures.

:func:`identify_input` is the one place that looks at an input path. It refuses what is not a plain file
or a folder of plain files — symlinks, FIFOs, devices, sockets, subfolders — from ``lstat`` alone, before
a byte is read (reading ``/dev/zero`` or a FIFO would never end). It refuses file names that cannot
become an object key, a log line or a registry row (:func:`name_problem`), and inputs larger than
:data:`MAX_INPUT_BYTES`, before their digest is read. Formats are told by magic bytes, never by the file
name. Digests and signature fields are read on first use, then kept.

The input's SHA-256 identifies it in the registry: a file's is that of its bytes; a folder's is that of
one line per page file, ``name NUL sha256-hex LF``, in name order. Never change it: re-runs of inputs
already recorded must find their dossier.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Literal

from pipeline.core.errors import InputBadName, InputCorrupt, InputMissing, InputNotRegular, InputTooLarge

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

# A file name becomes an object key (dossiers/<code>/input/<name>), a local-store file with a suffix,
# ``--out`` files and a registry row: 200 UTF-8 bytes leave room for the store's own suffixes under
# the 255-byte limit of common file systems.
MAX_NAME_BYTES = 200
# A 2000-page scan at 300 dpi is well under 2 GiB; reading the digest of a larger (or sparse) file, or
# letting qpdf scan it for objects, would take minutes before anything could refuse it.
MAX_INPUT_BYTES = 4 << 30
MAX_FOLDER_ENTRIES = 100_000  # a folder of pages; max_pages refuses far fewer, but only once listed


def _odd_char(ch: str) -> bool:
    """Whether ``ch`` cannot stand in a file name that is shown, logged and used as a key: control
    characters, format characters (bidi overrides that make ``gpj.exe`` read as ``exe.jpg``,
    zero-width spaces), line separators, lone surrogates (bytes that were not UTF-8), a backslash."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") or ch == "\\"


def display_name(name: str, limit: int = 120) -> str:
    """``name`` as one safe line for logs, JSON and registry rows.

    Bytes that are not UTF-8 (decoded by Python as lone surrogates) show as ``\\xNN``, control and
    invisible characters as ``\\uNNNN``, a backslash doubled; a long name keeps its start and its end.
    """
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")  # so that an escape shown is never a name's own text
        elif _odd_char(ch):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    shown = "".join(out)
    return shown if len(shown) <= limit else f"{shown[: limit - 41]}…{shown[-40:]}"


def name_problem(name: str) -> tuple[str, str] | None:
    """Why a file name is refused, as (English, Vietnamese), or None when it is accepted.

    Accepted: any UTF-8 name of at most :data:`MAX_NAME_BYTES` bytes without control or invisible
    characters and without a backslash — Vietnamese in NFC or NFD, spaces, a leading ``-``, ``..``
    inside a name (a name never holds ``/``, so it stays one segment of an object key).
    """
    shown = display_name(name)
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in name):
        return (
            f"file name '{shown}' holds bytes that are not UTF-8",
            f"Tên tệp '{shown}' có ký tự không đọc được (không phải UTF-8, có thể do bảng mã cũ); "
            "vui lòng đổi tên tệp rồi nộp lại.",
        )
    odd = next((ch for ch in name if _odd_char(ch)), None)
    if odd is not None:
        what = "a backslash" if odd == "\\" else f"the control or invisible character U+{ord(odd):04X}"
        return (
            f"file name '{shown}' holds {what}",
            f"Tên tệp '{shown}' chứa ký tự điều khiển, ký tự ẩn hoặc dấu '\\'; vui lòng đổi tên tệp rồi nộp lại.",
        )
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return (
            f"file name '{shown}' is {size} bytes long, more than {MAX_NAME_BYTES}",
            f"Tên tệp '{shown}' quá dài ({size} byte, tối đa {MAX_NAME_BYTES}); vui lòng đặt tên ngắn hơn.",
        )
    if not name.strip():
        return (f"file name '{shown}' is blank", "Tên tệp để trống; vui lòng đặt tên cho tệp.")
    return None


def check_name(path: Path) -> None:
    """Raise InputBadName unless ``path``'s last segment is an acceptable name (:func:`name_problem`).

    ``.``, ``..`` and ``/`` (an input given as such) name no file of their own and are not checked.
    """
    if path.name in ("", ".", ".."):
        return
    problem = name_problem(path.name)
    if problem is not None:
        raise InputBadName(f"{display_name(str(path), 240)}: {problem[0]}; refused before reading", problem[1])


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


def _shown(path: Path) -> tuple[str, str]:
    """(full path, last segment) of ``path``, safe to print."""
    return display_name(str(path), 240), display_name(path.name)


def _not_regular(path: Path, what: str) -> InputNotRegular:
    full, name = _shown(path)
    return InputNotRegular(
        f"{full}: {what}, not a regular file; refused before reading",
        f"'{name}' không phải là tệp thông thường (liên kết, thiết bị hoặc đường ống); "
        "vui lòng nộp tệp PDF/ảnh hoặc thư mục ảnh trang.",
    )


def _too_big(path: Path, size: int) -> InputTooLarge:
    full, name = _shown(path)
    return InputTooLarge(
        f"{full}: {size} bytes, more than the {MAX_INPUT_BYTES} an input may have",
        f"'{name}' quá lớn ({size / 2**30:.1f} GiB, tối đa {MAX_INPUT_BYTES / 2**30:.0f} GiB); "
        "vui lòng chia hồ sơ hoặc quét lại ở 200–300 dpi.",
    )


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        full, name = _shown(path)
        raise InputMissing(f"input not found: {full}", f"Không tìm thấy tệp hoặc thư mục: {name}") from exc
    except OSError as exc:  # ENAMETOOLONG, ELOOP in a parent, EACCES...
        full, name = _shown(path)
        raise InputCorrupt(f"{full}: cannot be read: {exc.strerror}", f"Không đọc được '{name}'.") from exc


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for reading, never following a symlink nor blocking on a FIFO or device.

    The file is checked again once open, so one swapped in after :func:`identify_input` is refused too.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        full, name = _shown(path)
        raise InputMissing(f"input not found: {full}", f"Không tìm thấy tệp: {name}") from exc
    except OSError as exc:  # ELOOP: a symlink was swapped in
        if os.path.islink(path):
            raise _not_regular(path, "a symbolic link") from exc
        full, name = _shown(path)
        raise InputCorrupt(f"{full}: cannot be opened: {exc.strerror}", f"Không mở được tệp '{name}'.") from exc
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
            full, name = _shown(self.path)
            raise InputCorrupt(f"{full}: read failed: {exc.strerror}", f"Không đọc được tệp '{name}'.") from exc
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
    if st.st_size > MAX_INPUT_BYTES:
        raise _too_big(path, st.st_size)
    try:
        with open_regular(path) as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        full, name = _shown(path)
        raise InputCorrupt(f"{full}: read failed: {exc.strerror}", f"Không đọc được tệp '{name}'.") from exc
    return InputFile(path, sniff(head), st.st_size)


def folder_entries(folder: Path, limit: int | None = None) -> list[Path]:
    """A folder's entries that count, in name order: everything but hidden names (``.DS_Store``…).

    More than ``limit`` of them is InputTooLarge (the names are not all read into memory first).
    """
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                names.append(e.name)
                if limit is not None and len(names) > limit:
                    full, shown = _shown(folder)
                    raise InputTooLarge(
                        f"{full}: a folder of pages holds more than {limit} entries",
                        f"Thư mục '{shown}' có hơn {limit} tệp; vui lòng chia hồ sơ.",
                    )
    except OSError as exc:
        full, shown = _shown(folder)
        raise InputCorrupt(
            f"{full}: cannot list the folder: {exc.strerror}", f"Không đọc được thư mục '{shown}'."
        ) from exc
    return [folder / n for n in sorted(names)]


def identify_input(path: Path) -> Input:
    """Identify an input path (see the module docstring), or raise InputMissing, InputBadName,
    InputNotRegular or InputTooLarge.

    A folder's pages are its non-hidden entries in name order; each must be a plain file with an
    acceptable name (a subfolder, symlink, FIFO or odd name among them refuses the folder rather than
    being skipped). An empty file or folder, or an unknown format, is identified as it is: refusing
    those is the loader's job.
    """
    path = Path(path)
    st = _lstat(path)
    check_name(path)
    if not stat.S_ISDIR(st.st_mode):
        return Input(path, False, (_identify_file(path, st),))
    files = []
    for entry in folder_entries(path, MAX_FOLDER_ENTRIES):
        entry_st = _lstat(entry)
        check_name(entry)
        if stat.S_ISDIR(entry_st.st_mode):
            full, name = _shown(entry)
            raise InputNotRegular(
                f"{full}: a folder of pages holds a subfolder",
                f"Thư mục '{display_name(path.name)}' chứa thư mục con '{name}'; chỉ được chứa ảnh trang.",
            )
        files.append(_identify_file(entry, entry_st))
    total = sum(f.size for f in files)
    if total > MAX_INPUT_BYTES:
        raise _too_big(path, total)
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
