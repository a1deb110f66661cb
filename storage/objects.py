"""Content-verified, versioned object storage: a local folder or an S3 bucket (minio SDK).

Every object carries its SHA-256, recorded at write time and checked on every read, so a
tampered or truncated object is reported as :class:`~pipeline.core.errors.IntegrityError` rather
than handed on.

Records last: a write never destroys what was there. Both backends keep versions — the local
store itself, S3 through bucket versioning — so a put creates a new version (``ObjectInfo.version_id``)
and :meth:`ObjectStore.delete` only hides the current one (a delete marker). Only
:meth:`ObjectStore.delete_version` destroys bytes, one exact version, and never a locked one:
:meth:`ObjectStore.lock` puts a version under retention (S3 object lock, GOVERNANCE or COMPLIANCE;
the local store honours the same rules itself). Each write may name the *attempt* that made it
(``hoso-attempt`` metadata), so a failed attempt removes exactly its own versions and nobody else's.

An S3 bucket without versioning keeps one version per key (``version_id`` is None); hoso runs on it
in development, but production requires versioning and object lock (:meth:`ObjectStore.protection`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field

from pipeline.core.errors import IntegrityError, StorageFailed
from pipeline.core.faults import checkpoint
from pipeline.core.retry import S3_TRANSIENT_CODES

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK = 1024 * 1024
MAX_KEY_BYTES = 1024
RESERVED_TOP = frozenset({".meta", ".tmp", ".versions"})  # the local store's own folders; refused on S3 too
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SHA_META = "sha256"
_CT_META = "hoso-content-type"  # SeaweedFS sniffs application/octet-stream into text/plain: keep our own
_ATTEMPT_META = "hoso-attempt"
FILE_MODE = 0o600
DIR_MODE = 0o700

T = TypeVar("T")
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


class ObjectMissing(StorageFailed):
    """The requested object does not exist in the store."""

    default_vi = "Không tìm thấy dữ liệu lưu trữ của hồ sơ."
    transient = False


class ObjectLocked(StorageFailed):
    """The version is under retention (object lock) or legal hold: it cannot be destroyed."""

    default_vi = "Dữ liệu lưu trữ đang được khóa bảo toàn; không thể xóa hoặc ghi đè."
    transient = False


class Lock(BaseModel):
    """Retention of one object version: nobody may destroy it before ``until``.

    COMPLIANCE binds everyone, the bucket's administrator included; GOVERNANCE can be lifted by a
    holder of the special permission. Retention can be extended, never shortened.
    """

    mode: LockMode
    until: datetime

    def active(self, now: datetime | None = None) -> bool:
        return self.until > (now or datetime.now(UTC))


class ObjectInfo(BaseModel):
    """What the store knows about one object version."""

    key: str
    size: int
    sha256: str = Field(description="Hex SHA-256 recorded at write time ('' if unknown)")
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: dict[str, str] = Field(default_factory=dict)
    version_id: str | None = Field(None, description="This version's id (None: the store keeps no versions)")
    attempt: str | None = Field(None, description="The attempt that wrote it (hoso's own metadata)")
    lock: Lock | None = None


class ObjectVersion(BaseModel):
    """One version (or delete marker) of a key, as a version listing gives it."""

    key: str
    version_id: str | None
    is_latest: bool
    is_delete_marker: bool = False
    size: int = 0
    last_modified: datetime | None = None


class Protection(NamedTuple):
    """What the storage service itself enforces against a holder of its credentials.

    The local store keeps versions and honours locks too, but anyone with the folder can undo both:
    it reports neither.
    """

    versioning: bool
    object_lock: bool


class ObjectStore(Protocol):
    """The operations the pipeline needs from an object store."""

    describe: str

    @property
    def keeps_versions(self) -> bool:
        """True when every put keeps the previous version (local store; S3 with bucket versioning)."""
        ...

    @property
    def can_lock(self) -> bool:
        """True when :meth:`lock` can put versions under retention (local store; S3 with object lock)."""
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = ...,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo: ...

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = ...,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo: ...

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes: ...

    def get_file(self, key: str, dest: Path, version_id: str | None = None) -> ObjectInfo: ...

    def stat(self, key: str, version_id: str | None = None) -> ObjectInfo | None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_version(self, key: str, version_id: str | None) -> None: ...

    def versions(self, prefix: str = "") -> Iterator[ObjectVersion]: ...

    def lock(self, key: str, version_id: str | None, lock: Lock) -> Lock: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def protection(self) -> Protection: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if "\\" in key:
        raise ValueError(f"object key must not contain backslashes: {key!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ValueError(f"object key must not contain control characters: {key!r}")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise ValueError(f"object key must be relative: {key!r}")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    if parts[0] in RESERVED_TOP:
        raise ValueError(f"object key uses a reserved top-level name: {key!r}")
    return key


def validate_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """User metadata: lowercase ``[a-z0-9-]`` keys (S3 folds case), string values, no reserved keys."""
    clean: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not _META_KEY_RE.match(name) or name == _SHA_META or name.startswith("hoso-"):
            raise ValueError(f"invalid or reserved metadata key: {name!r}")
        if not isinstance(value, str):
            raise ValueError(f"metadata value for {name!r} must be a string")
        clean[name] = value
    return clean


def _validate_attempt(attempt: str | None) -> str | None:
    if attempt is not None and not _VERSION_RE.match(attempt):
        raise ValueError(f"not an attempt id: {attempt!r}")
    return attempt


def _validate_version(version_id: str | None) -> str | None:
    if version_id is not None and not _VERSION_RE.match(version_id):
        raise ValueError(f"not a version id: {version_id!r}")
    return version_id


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check(key: str, expected: str, actual: str) -> None:
    if not expected:
        raise IntegrityError(
            f"object {key!r} has no recorded SHA-256; its integrity cannot be checked",
            "Dữ liệu lưu trữ không có mã băm ghi nhận; không kiểm tra được tính toàn vẹn.",
        )
    if expected != actual:
        raise IntegrityError(
            f"object {key!r} fails its SHA-256 check: recorded {expected}, read {actual}",
        )


def private_dirs(path: Path, stop: Path | None = None) -> None:
    """Create ``path`` and any missing parents (up to ``stop``) with mode 0700."""
    missing: list[Path] = []
    here = Path(path)
    while not here.exists() and here != stop and here.parent != here:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)


class _HashingReader:
    """File-like wrapper that hashes what is read through it (and passes the ``store:upload_half`` checkpoint)."""

    def __init__(self, raw: IO[bytes], key: str = "", total: int = 0) -> None:
        self._raw = raw
        self._key = key
        self._half = total // 2
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._raw.read(n)
        self.digest.update(chunk)
        before, self.size = self.size, self.size + len(chunk)
        if before < self._half <= self.size:
            checkpoint("store:upload_half", self._key)
        return chunk


class BaseObjectStore:
    """Shared behaviour: ``exists`` on top of backend primitives."""

    describe: str = ""
    keeps_versions: bool = False
    can_lock: bool = False

    def stat(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """True if an object is stored (and not deleted) under ``key``."""
        return self.stat(key) is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe}>"


def _new_version_id() -> str:
    """Sortable by time (fixed-width nanoseconds) and unique (random suffix)."""
    return f"{time.time_ns():019d}{secrets.token_hex(4)}"


class LocalObjectStore(BaseObjectStore):
    """Objects as files under ``root``, with versions, locks and checksums in hidden folders.

    ``root/<key>`` is the current version and ``.meta/<key>.meta.json`` its sidecar (SHA-256,
    content type, metadata, version id, attempt, lock); earlier versions and delete markers live
    in ``.versions/<key>/<version>.data`` / ``.json``. Writes go to ``.tmp/`` first, are fsynced, then
    renamed into place (sidecar first, data last) under a store-wide lock, so a crash never leaves a
    partial object visible and two writers never lose a version. Files are 0600, folders 0700.
    """

    keeps_versions = True
    can_lock = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._meta_root = self.root / ".meta"
        self._tmp_root = self.root / ".tmp"
        self._versions_root = self.root / ".versions"
        try:
            private_dirs(self.root)
            for folder in (self.root, self._meta_root, self._tmp_root, self._versions_root):
                folder.mkdir(mode=DIR_MODE, exist_ok=True)
                if folder.stat().st_mode & 0o077:
                    os.chmod(folder, DIR_MODE)
        except OSError as err:
            raise StorageFailed(f"cannot create local object store at {self.root}: {err}") from err
        self._lock_path = self._tmp_root / "store.lock"
        self.describe = f"local:{self.root}"
        self._sweep_stale_parts()

    def protection(self) -> Protection:
        return Protection(False, False)

    def _sweep_stale_parts(self, older_than_s: float = 3600.0) -> None:
        """Remove temp files a killed writer left behind (old enough that no live writer owns them)."""
        cutoff = time.time() - older_than_s
        for part in self._tmp_root.glob("*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # paths

    def _data_path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        return self._meta_root.joinpath(*validate_key(key).split("/")).with_name(
            key.rsplit("/", 1)[-1] + ".meta.json"
        )

    def _version_dir(self, key: str) -> Path:
        return self._versions_root.joinpath(*validate_key(key).split("/"))

    def _tmp_path(self) -> Path:
        return self._tmp_root / f"{uuid.uuid4().hex}.part"

    def _write_private(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    # sidecars

    @staticmethod
    def _info_of(key: str, meta: dict[str, Any], size: int | None = None) -> ObjectInfo:
        lock = meta.get("lock")
        return ObjectInfo(
            key=key,
            size=int(meta.get("size", 0) if size is None else size),
            sha256=str(meta.get("sha256", "")),
            content_type=str(meta.get("content_type", DEFAULT_CONTENT_TYPE)),
            metadata=dict(meta.get("metadata") or {}),
            version_id=meta.get("version_id"),
            attempt=meta.get("attempt"),
            lock=Lock.model_validate(lock) if lock else None,
        )

    @staticmethod
    def _read_json(path: Path, key: str) -> dict[str, Any] | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as err:
            raise IntegrityError(f"object {key!r} has an unreadable sidecar: {err}") from err
        return raw if isinstance(raw, dict) else None

    def _replace_json(self, path: Path, meta: dict[str, Any]) -> None:
        tmp = self._tmp_path()
        try:
            self._write_private(tmp, json.dumps(meta, ensure_ascii=False, default=str).encode())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _current_meta(self, key: str) -> dict[str, Any] | None:
        """The current version's sidecar (with its version id: a legacy object gets one from its mtime)."""
        data_path = self._data_path(key)
        try:
            st = data_path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not data_path.is_file():
            return None
        meta = self._read_json(self._meta_path(key), key) or {}
        meta.setdefault("version_id", f"{st.st_mtime_ns:019d}legacy00")
        meta["size"] = st.st_size
        return meta

    def _noncurrent(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        """Earlier versions and delete markers of ``key``, newest first."""
        folder = self._version_dir(key)
        found = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in folder.iterdir():
                if entry.is_file() and entry.name.endswith(".json"):
                    meta = self._read_json(entry, key)
                    if meta is not None:
                        found.append((entry.name[: -len(".json")], meta))
        return sorted(found, key=lambda item: item[0], reverse=True)

    # writes

    def _archive_current(self, key: str) -> None:
        """Move the current version into ``.versions`` (the lock is held)."""
        meta = self._current_meta(key)
        if meta is None:
            return
        vid = _validate_version(str(meta["version_id"]))
        folder = self._version_dir(key)
        private_dirs(folder, self.root)
        os.replace(self._data_path(key), folder / f"{vid}.data")
        self._replace_json(folder / f"{vid}.json", meta)
        self._meta_path(key).unlink(missing_ok=True)
        _fsync_dir(folder)

    def _install(self, key: str, data_tmp: Path, meta: dict[str, Any]) -> None:
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        private_dirs(data_path.parent, self.root)
        private_dirs(meta_path.parent, self.root)
        # The data file's appearance is the commit point: sidecar first.
        self._replace_json(meta_path, meta)
        os.replace(data_tmp, data_path)
        _fsync_dir(meta_path.parent)
        _fsync_dir(data_path.parent)

    def _commit(
        self,
        key: str,
        data_tmp: Path,
        sha: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        attempt: str | None,
    ) -> ObjectInfo:
        try:
            with self._locked():
                info = ObjectInfo(
                    key=key, size=size, sha256=sha, content_type=content_type, metadata=metadata,
                    version_id=_new_version_id(), attempt=attempt,
                )
                if self._data_path(key).exists() and not self._data_path(key).is_file():
                    raise IsADirectoryError(f"{key!r} is a folder of other objects")
                self._archive_current(key)
                self._install(key, data_tmp, info.model_dump(mode="json", exclude={"key"}))
        except OSError as err:
            raise StorageFailed(f"cannot store object {key!r} in {self.describe}: {err}") from err
        finally:
            data_tmp.unlink(missing_ok=True)
        return info

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` as a new version of ``key`` (the previous one is kept)."""
        validate_key(key)
        meta = validate_metadata(metadata)
        _validate_attempt(attempt)
        tmp = self._tmp_path()
        try:
            self._write_private(tmp, data)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageFailed(f"cannot write object {key!r} in {self.describe}: {err}") from err
        return self._commit(key, tmp, sha256_bytes(data), len(data), content_type, meta, attempt)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo:
        """Copy the file at ``path`` into the store as a new version, hashing while streaming."""
        validate_key(key)
        meta = validate_metadata(metadata)
        _validate_attempt(attempt)
        tmp = self._tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                reader = _HashingReader(src, key, os.fstat(src.fileno()).st_size)
                while chunk := reader.read(CHUNK):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            digest, size = reader.digest, reader.size
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageFailed(f"cannot copy {path} into {self.describe} as {key!r}: {err}") from err
        return self._commit(key, tmp, digest.hexdigest(), size, content_type, meta, attempt)

    # reads

    def _locate(self, key: str, version_id: str | None) -> tuple[Path, dict[str, Any]] | None:
        """Data path and sidecar of a version (None: the current one); None if there is no such version."""
        _validate_version(version_id)
        current = self._current_meta(key)
        if version_id is None or (current is not None and current["version_id"] == version_id):
            return None if current is None else (self._data_path(key), current)
        folder = self._version_dir(key)
        meta = self._read_json(folder / f"{version_id}.json", key)
        if meta is None or meta.get("delete_marker"):
            return None
        return folder / f"{version_id}.data", meta

    def stat(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Info on a version (default: the current one), or None if there is none."""
        found = self._locate(key, version_id)
        if found is None:
            return None
        path, meta = found
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return self._info_of(key, meta, size)

    def _require(self, key: str, version_id: str | None) -> tuple[Path, ObjectInfo]:
        found = self._locate(key, version_id)
        if found is None:
            which = f" version {version_id}" if version_id else ""
            raise ObjectMissing(f"no object {key!r}{which} in {self.describe}")
        path, meta = found
        return path, self._info_of(key, meta)

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        """A version's bytes (default: the current one), verified against its recorded SHA-256."""
        for attempt in range(3):  # a concurrent write may move the version between sidecar and data
            path, info = self._require(key, version_id)
            try:
                data = path.read_bytes()
            except FileNotFoundError as err:
                if attempt == 2:
                    raise ObjectMissing(f"no object {key!r} in {self.describe}") from err
                continue
            except OSError as err:
                raise StorageFailed(f"cannot read object {key!r} from {self.describe}: {err}") from err
            if info.sha256 and sha256_bytes(data) != info.sha256 and attempt < 2 and version_id is None:
                continue
            _check(key, info.sha256, sha256_bytes(data))
            return data
        raise AssertionError("unreachable")

    def get_file(self, key: str, dest: Path, version_id: str | None = None) -> ObjectInfo:
        """Copy a version to ``dest`` (tmp file + rename), verified on the way."""
        path, info = self._require(key, version_id)

        def copy(out: IO[bytes]) -> tuple[str, ObjectInfo]:
            digest = hashlib.sha256()
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest(), info

        return _write_verified(key, Path(dest), copy, self.describe)

    # deletes and locks

    def delete(self, key: str) -> None:
        """Hide the current version behind a delete marker (it is kept); a missing key is fine."""
        validate_key(key)
        try:
            with self._locked():
                if self._current_meta(key) is None:
                    return
                self._archive_current(key)
                folder = self._version_dir(key)
                marker = {"delete_marker": True, "version_id": _new_version_id(), "at": datetime.now(UTC).isoformat()}
                self._replace_json(folder / f"{marker['version_id']}.json", marker)
        except OSError as err:
            raise StorageFailed(f"cannot delete object {key!r} from {self.describe}: {err}") from err

    def delete_version(self, key: str, version_id: str | None) -> None:
        """Destroy exactly one version (None: the current one); ObjectLocked if it is retained.

        Removing the current version brings the previous one back, as S3 does; a missing version is fine.
        """
        validate_key(key)
        _validate_version(version_id)
        try:
            with self._locked():
                current = self._current_meta(key)
                if current is not None and version_id in (None, current["version_id"]):
                    self._refuse_if_locked(key, current)
                    self._data_path(key).unlink(missing_ok=True)
                    self._meta_path(key).unlink(missing_ok=True)
                    self._promote(key)
                    return
                if version_id is None:
                    return
                folder = self._version_dir(key)
                meta = self._read_json(folder / f"{version_id}.json", key)
                if meta is None:
                    return
                self._refuse_if_locked(key, meta)
                (folder / f"{version_id}.data").unlink(missing_ok=True)
                (folder / f"{version_id}.json").unlink(missing_ok=True)
                if current is None:
                    self._promote(key)
                _fsync_dir(folder)
        except OSError as err:
            raise StorageFailed(f"cannot delete a version of {key!r} from {self.describe}: {err}") from err

    def _refuse_if_locked(self, key: str, meta: dict[str, Any]) -> None:
        lock = meta.get("lock")
        if lock and Lock.model_validate(lock).active():
            raise ObjectLocked(
                f"object {key!r} version {meta.get('version_id')} is retained "
                f"({lock['mode']} until {lock['until']}); it cannot be destroyed"
            )

    def _promote(self, key: str) -> None:
        """With no current version, the newest earlier one becomes current unless a delete marker is newer."""
        if self._current_meta(key) is not None:
            return
        earlier = self._noncurrent(key)
        if not earlier or earlier[0][1].get("delete_marker"):
            return
        vid, meta = earlier[0]
        folder = self._version_dir(key)
        tmp = self._tmp_path()
        os.replace(folder / f"{vid}.data", tmp)
        self._install(key, tmp, meta)
        (folder / f"{vid}.json").unlink(missing_ok=True)

    def lock(self, key: str, version_id: str | None, lock: Lock) -> Lock:
        """Retain a version (None: the current one) until ``lock.until``; an existing lock is only extended."""
        validate_key(key)
        _validate_version(version_id)
        try:
            with self._locked():
                found = self._locate(key, version_id)
                if found is None:
                    raise ObjectMissing(f"no object {key!r} version {version_id} to lock in {self.describe}")
                path, meta = found
                old = Lock.model_validate(meta["lock"]) if meta.get("lock") else None
                effective = lock
                if old is not None and old.active():
                    mode: LockMode = "COMPLIANCE" if "COMPLIANCE" in (old.mode, lock.mode) else lock.mode
                    effective = Lock(mode=mode, until=max(old.until, lock.until))
                meta["lock"] = effective.model_dump(mode="json")
                if path == self._data_path(key):
                    self._replace_json(self._meta_path(key), meta)
                else:
                    self._replace_json(path.with_suffix(".json"), meta)
        except OSError as err:
            raise StorageFailed(f"cannot lock object {key!r} in {self.describe}: {err}") from err
        return effective

    # listings

    def _keys_under(self, base: Path, prefix: str, *, versions: bool) -> list[str]:
        start = base
        if "/" in prefix:
            if ".." in prefix.split("/"):
                raise ValueError(f"invalid list prefix: {prefix!r}")
            start = base.joinpath(*prefix.rsplit("/", 1)[0].split("/"))
        keys: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            if here == self.root:
                dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP]
            if versions:
                if any(name.endswith(".json") for name in filenames):
                    key = here.relative_to(base).as_posix()
                    if key.startswith(prefix):
                        keys.add(key)
                continue
            rel = here.relative_to(base).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.add(key)
        return sorted(keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Current objects whose key starts with ``prefix``, in key order."""
        for key in self._keys_under(self.root, prefix, versions=False):
            info = self.stat(key)
            if info is not None:
                yield info

    def versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix``: by key, newest first."""
        keys = set(self._keys_under(self.root, prefix, versions=False))
        keys |= set(self._keys_under(self._versions_root, prefix, versions=True))
        for key in sorted(keys):
            with contextlib.suppress(ValueError):
                validate_key(key)
                current = self._current_meta(key)
                found: list[ObjectVersion] = []
                if current is not None:
                    found.append(self._version_of(key, str(current["version_id"]), current, latest=True))
                for vid, meta in self._noncurrent(key):
                    found.append(self._version_of(key, vid, meta, latest=not found))
                yield from found

    @staticmethod
    def _version_of(key: str, vid: str, meta: dict[str, Any], *, latest: bool) -> ObjectVersion:
        marker = bool(meta.get("delete_marker"))
        stamp = vid[:19]
        modified = datetime.fromtimestamp(int(stamp) / 1e9, UTC) if stamp.isdigit() else None
        return ObjectVersion(
            key=key, version_id=vid, is_latest=latest, is_delete_marker=marker,
            size=0 if marker else int(meta.get("size", 0)), last_modified=modified,
        )


def _write_verified(
    key: str, dest: Path, fill: Callable[[IO[bytes]], tuple[str, ObjectInfo]], where: str
) -> ObjectInfo:
    """Write via ``fill`` into a temp file beside ``dest``; rename only if the SHA-256 matches.

    ``fill`` returns the SHA-256 of what it wrote and the object's recorded info.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "wb") as out:
            actual, info = fill(out)
            out.flush()
            os.fsync(out.fileno())
        _check(key, info.sha256, actual)
        os.replace(tmp, dest)
    except OSError as err:
        raise StorageFailed(f"cannot copy object {key!r} from {where} to {dest}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return info


# --- S3 -----------------------------------------------------------------------------------------

_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
)
_TRANSIENT_CODES = S3_TRANSIENT_CODES  # one list: pipeline.core.retry classifies what these raise
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion"})


def _s3_version(version_id: str | None) -> str | None:
    return None if version_id in (None, "", "null") else version_id


class S3ObjectStore(BaseObjectStore):
    """Objects in an S3 bucket through the minio SDK; SHA-256 kept as ``x-amz-meta-sha256``.

    Versions and locks are the bucket's (versioning, object lock). Transient HTTP failures
    (connection refused/reset, 5xx) are retried ``attempts`` times with exponential backoff; every
    failure surfaces as :class:`StorageFailed`. ``create_locked`` makes a missing bucket with object
    lock (which turns versioning on).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str = "us-east-1",
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        timeout: float = 60.0,
        create_locked: bool = False,
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.bucket = bucket
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.describe = f"s3://{endpoint}/{bucket}"
        self._protection: Protection | None = None
        pool_args: dict[str, Any] = {}
        if secure:
            import certifi

            ca_certs = os.environ.get("SSL_CERT_FILE") or certifi.where()
            pool_args = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs}
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            maxsize=10,
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], allowed_methods=None
            ),
            **pool_args,
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http,
            )
        except ValueError as err:
            raise StorageFailed(f"invalid S3 endpoint {endpoint!r}: {err}") from err
        self._ensure_bucket(create_locked)

    # retry + error mapping

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from minio.error import MinioException, S3Error, ServerError
        from urllib3.exceptions import HTTPError

        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except S3Error as err:
                if err.code in _AUTH_CODES:
                    raise StorageFailed(
                        f"S3 server {self.endpoint} refused the credentials for bucket {self.bucket!r} "
                        f"({err.code}) while trying to {what}; check HOSO_S3_ACCESS_KEY/HOSO_S3_SECRET_KEY",
                        "Máy chủ lưu trữ từ chối thông tin đăng nhập; kiểm tra cấu hình khóa truy cập S3.",
                        transient=False,
                    ) from err
                if err.code in _MISSING_CODES:
                    raise ObjectMissing(f"no object to {what} in {self.describe}") from err
                if err.code not in _TRANSIENT_CODES or attempt == self.attempts:
                    raise StorageFailed(
                        f"S3 failed to {what} in {self.describe}: {err.code}: {err.message}"
                    ) from err
            except (HTTPError, ServerError, OSError) as err:
                if attempt == self.attempts:
                    raise StorageFailed(
                        f"S3 server {self.endpoint} unreachable or failing while trying to {what} "
                        f"(after {self.attempts} attempts): {type(err).__name__}: {err}"
                    ) from err
            except MinioException as err:
                raise StorageFailed(f"S3 failed to {what} in {self.describe}: {err}") from err
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _ensure_bucket(self, create_locked: bool) -> None:
        from minio.error import S3Error

        def ensure() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, object_lock=create_locked)
            except S3Error as err:
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._call(f"open bucket {self.bucket!r}", ensure)

    def protection(self) -> Protection:
        """Whether the bucket has versioning and object lock (read once, then cached)."""
        if self._protection is None:
            from minio.error import S3Error

            def read() -> Protection:
                versioning = self._client.get_bucket_versioning(self.bucket).status == "Enabled"
                try:
                    self._client.get_object_lock_config(self.bucket)
                    locked = True
                except S3Error as err:
                    if err.code != "ObjectLockConfigurationNotFoundError":
                        raise
                    locked = False
                return Protection(versioning, locked)

            self._protection = self._call(f"read the protection of bucket {self.bucket!r}", read)
        return self._protection

    @property
    def keeps_versions(self) -> bool:  # type: ignore[override]
        return self.protection().versioning

    @property
    def can_lock(self) -> bool:  # type: ignore[override]
        return self.protection().object_lock

    # writes

    def _headers(self, sha: str, content_type: str, metadata: dict[str, str], attempt: str | None) -> dict[str, str]:
        # Header values must be ASCII: percent-encode every user value, decode on read.
        headers = {name: quote(value, safe="") for name, value in metadata.items()}
        headers[_SHA_META] = sha
        headers[_CT_META] = quote(content_type, safe="")
        if attempt:
            headers[_ATTEMPT_META] = attempt
        return headers

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (a new version on a versioned bucket; S3 makes it visible atomically)."""
        import io

        validate_key(key)
        meta = validate_metadata(metadata)
        sha = sha256_bytes(data)
        headers = self._headers(sha, content_type, meta, _validate_attempt(attempt))

        def put() -> str | None:
            result = self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=headers,  # type: ignore[arg-type]
            )
            return _s3_version(result.version_id)

        version = self._call(f"put {key!r}", put)
        return ObjectInfo(
            key=key, size=len(data), sha256=sha, content_type=content_type, metadata=meta, version_id=version,
            attempt=attempt,
        )

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
        *,
        attempt: str | None = None,
    ) -> ObjectInfo:
        """Upload a file: one pass to hash (the SHA-256 goes in the headers), one to stream it up.

        The upload pass is hashed too; if the file changed in between, the new version is removed.
        """
        validate_key(key)
        meta = validate_metadata(metadata)
        try:
            sha, size = sha256_file(Path(path))
        except OSError as err:
            raise StorageFailed(f"cannot read {path} to upload as {key!r}: {err}") from err
        headers = self._headers(sha, content_type, meta, _validate_attempt(attempt))

        def put() -> tuple[str, str | None]:
            with open(path, "rb") as fh:
                reader = _HashingReader(fh, key, size)
                result = self._client.put_object(
                    self.bucket,
                    key,
                    reader,  # type: ignore[arg-type]
                    size,
                    content_type=content_type,
                    metadata=headers,  # type: ignore[arg-type]
                )
                return reader.digest.hexdigest(), _s3_version(result.version_id)

        sent, version = self._call(f"put {key!r}", put)
        if sent != sha:
            self.delete_version(key, version)
            raise StorageFailed(f"{path} changed while being uploaded as {key!r}; upload discarded")
        return ObjectInfo(
            key=key, size=size, sha256=sha, content_type=content_type, metadata=meta, version_id=version,
            attempt=attempt,
        )

    # reads

    @staticmethod
    def _info_from_headers(key: str, size: int, headers: Any, fallback_ct: str | None) -> ObjectInfo:
        user: dict[str, str] = {}
        sha = ""
        attempt = None
        version = None
        lock_mode = lock_until = None
        content_type = fallback_ct or DEFAULT_CONTENT_TYPE
        for name, value in headers.items():
            lname = name.lower()
            if lname == "x-amz-version-id":
                version = _s3_version(value)
            elif lname == "x-amz-object-lock-mode":
                lock_mode = value
            elif lname == "x-amz-object-lock-retain-until-date":
                lock_until = value
            if not lname.startswith("x-amz-meta-"):
                continue
            short = lname[len("x-amz-meta-") :]
            if short == _SHA_META:
                sha = value
            elif short == _CT_META:
                content_type = unquote(value)
            elif short == _ATTEMPT_META:
                attempt = value
            else:
                user[short] = unquote(value)
        lock = None
        if lock_mode in ("GOVERNANCE", "COMPLIANCE") and lock_until:
            with contextlib.suppress(ValueError):
                lock = Lock(mode=lock_mode, until=datetime.fromisoformat(lock_until.replace("Z", "+00:00")))
        return ObjectInfo(
            key=key, size=size, sha256=sha, content_type=content_type, metadata=user, version_id=version,
            attempt=attempt, lock=lock,
        )

    def stat(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Info on a version (default: the current one, from a HEAD request), or None if missing."""
        return self._stat(validate_key(key), _validate_version(version_id))

    def _stat(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        try:
            obj = self._call(
                f"stat {key!r}", lambda: self._client.stat_object(self.bucket, key, version_id=version_id)
            )
        except ObjectMissing:
            return None
        info = self._info_from_headers(key, obj.size or 0, obj.metadata or {}, obj.content_type)
        return info.model_copy(update={"version_id": _s3_version(obj.version_id) or info.version_id})

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        """A version's bytes (default: the current one), verified against ``x-amz-meta-sha256``."""
        validate_key(key)
        _validate_version(version_id)

        def get() -> tuple[bytes, ObjectInfo]:
            resp = self._client.get_object(self.bucket, key, version_id=version_id)
            try:
                data = resp.read()
                info = self._info_from_headers(key, len(data), resp.headers, resp.headers.get("Content-Type"))
            finally:
                resp.close()
                resp.release_conn()
            return data, info

        data, info = self._call(f"get {key!r}", get)
        _check(key, info.sha256, sha256_bytes(data))
        return data

    def get_file(self, key: str, dest: Path, version_id: str | None = None) -> ObjectInfo:
        """Stream a version to ``dest`` (tmp file + rename), verified on the way."""
        validate_key(key)
        _validate_version(version_id)

        def download(out: IO[bytes]) -> tuple[str, ObjectInfo]:
            out.seek(0)
            out.truncate()  # a retried attempt starts over
            resp = self._client.get_object(self.bucket, key, version_id=version_id)
            try:
                digest = hashlib.sha256()
                size = 0
                for chunk in resp.stream(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                info = self._info_from_headers(key, size, resp.headers, resp.headers.get("Content-Type"))
            finally:
                resp.close()
                resp.release_conn()
            return digest.hexdigest(), info

        return _write_verified(
            key, Path(dest), lambda out: self._call(f"get {key!r}", lambda: download(out)), self.describe
        )

    # deletes and locks

    def delete(self, key: str) -> None:
        """Hide the object (a delete marker on a versioned bucket, which keeps every version); a missing key is fine."""
        validate_key(key)
        with contextlib.suppress(ObjectMissing):
            self._call(f"delete {key!r}", lambda: self._client.remove_object(self.bucket, key))

    def delete_version(self, key: str, version_id: str | None) -> None:
        """Destroy exactly one version (None on an unversioned bucket: the object); ObjectLocked if retained."""
        validate_key(key)
        _validate_version(version_id)
        info = self._stat(key, version_id) if version_id is not None else None
        if info is not None and info.lock is not None and info.lock.active():
            raise ObjectLocked(
                f"object {key!r} version {version_id} is retained ({info.lock.mode} until "
                f"{info.lock.until:%Y-%m-%d}); it cannot be destroyed"
            )
        try:
            with contextlib.suppress(ObjectMissing):
                self._call(
                    f"delete {key!r} version {version_id}",
                    lambda: self._client.remove_object(self.bucket, key, version_id=version_id),
                )
        except StorageFailed as err:
            if "AccessDenied" in str(err) and version_id is not None:
                raise ObjectLocked(
                    f"the S3 server refused to destroy {key!r} version {version_id} (object lock or policy)"
                ) from err
            raise

    def lock(self, key: str, version_id: str | None, lock: Lock) -> Lock:
        """Retain a version until ``lock.until`` (S3 object retention); an existing lock is only extended."""
        from minio.retention import Retention

        validate_key(key)
        _validate_version(version_id)
        info = self._stat(key, version_id)
        if info is None:
            raise ObjectMissing(f"no object {key!r} version {version_id} to lock in {self.describe}")
        effective = lock
        if info.lock is not None and info.lock.active():
            mode: LockMode = "COMPLIANCE" if "COMPLIANCE" in (info.lock.mode, lock.mode) else lock.mode
            effective = Lock(mode=mode, until=max(info.lock.until, lock.until))
            if effective == info.lock:
                return effective
        until = effective.until.astimezone(UTC).replace(microsecond=0)
        self._call(
            f"lock {key!r}",
            lambda: self._client.set_object_retention(
                self.bucket, key, Retention(effective.mode, until), version_id=info.version_id
            ),
        )
        return effective

    # listings

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Current objects whose key starts with ``prefix``, in key order (one HEAD each for the metadata)."""

        def names_under() -> list[str]:
            found = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return [o.object_name for o in found if o.object_name and not o.is_dir]

        names = self._call(f"list {prefix!r}", names_under)
        for name in sorted(names):
            info = self._stat(name)
            if info is not None:
                yield info

    def versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under ``prefix``: by key, newest first."""

        def listing() -> list[ObjectVersion]:
            found = self._client.list_objects(
                self.bucket, prefix=prefix or None, recursive=True, include_version=True
            )
            return [
                ObjectVersion(
                    key=o.object_name, version_id=_s3_version(o.version_id), is_latest=bool(o.is_latest)
                    and str(o.is_latest).lower() != "false",
                    is_delete_marker=bool(o.is_delete_marker), size=o.size or 0, last_modified=o.last_modified,
                )
                for o in found
                if o.object_name and not o.is_dir
            ]

        listed = self._call(f"list the versions under {prefix!r}", listing)
        # The server lists each key's versions newest first; keep that order within a key.
        order = {id(v): i for i, v in enumerate(listed)}
        yield from sorted(listed, key=lambda v: (v.key, not v.is_latest, order[id(v)]))


def open_store(settings: Settings) -> ObjectStore:
    """The object store configured in ``settings`` (``HOSO_STORE`` = local | s3)."""
    if settings.store == "s3":
        return S3ObjectStore(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            attempts=settings.s3_attempts,
        )
    return LocalObjectStore(settings.resolved_store_path)
