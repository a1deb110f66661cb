"""Content-verified object storage: a local folder or an S3 bucket (minio SDK).

Every object carries its SHA-256, recorded at write time and checked on every read, so a
tampered or truncated object is reported as :class:`~pipeline.core.errors.IntegrityError` rather
than handed on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field

from pipeline.core.errors import IntegrityError, StorageFailed

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK = 1024 * 1024
MAX_KEY_BYTES = 1024
RESERVED_TOP = frozenset({".meta", ".tmp"})  # the local store's own folders; refused on S3 too for parity
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_SHA_META = "sha256"
_CT_META = "hoso-content-type"  # SeaweedFS sniffs application/octet-stream into text/plain: keep our own

T = TypeVar("T")


class ObjectMissing(StorageFailed):
    """The requested object does not exist in the store."""

    default_vi = "Không tìm thấy dữ liệu lưu trữ của hồ sơ."


class ObjectInfo(BaseModel):
    """What the store knows about one object."""

    key: str
    size: int
    sha256: str = Field(description="Hex SHA-256 recorded at write time ('' if unknown)")
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: dict[str, str] = Field(default_factory=dict)


class ObjectStore(Protocol):
    """The operations the pipeline needs from an object store."""

    describe: str

    def put_bytes(
        self, key: str, data: bytes, content_type: str = ..., metadata: dict[str, str] | None = None
    ) -> ObjectInfo: ...

    def put_file(
        self, key: str, path: Path, content_type: str = ..., metadata: dict[str, str] | None = None
    ) -> ObjectInfo: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> ObjectInfo: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


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


class _HashingReader:
    """File-like wrapper that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._raw.read(n)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


class BaseObjectStore:
    """Shared behaviour: key checks, ``exists`` and verified reads on top of backend primitives."""

    describe: str = ""

    def stat(self, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """True if an object is stored under ``key``."""
        return self.stat(key) is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe}>"


class LocalObjectStore(BaseObjectStore):
    """Objects as files under ``root``; checksums and metadata in a parallel ``.meta/`` tree.

    Writes go to ``.tmp/`` first, are fsynced, then renamed into place (sidecar first, data
    last), so a crash never leaves a partial object visible.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._meta_root = self.root / ".meta"
        self._tmp_root = self.root / ".tmp"
        try:
            for folder in (self.root, self._meta_root, self._tmp_root):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageFailed(f"cannot create local object store at {self.root}: {err}") from err
        self.describe = f"local:{self.root}"
        self._sweep_stale_parts()

    def _sweep_stale_parts(self, older_than_s: float = 3600.0) -> None:
        """Remove temp files a killed writer left behind (old enough that no live writer owns them)."""
        cutoff = time.time() - older_than_s
        for part in self._tmp_root.glob("*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _data_path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _meta_path(self, key: str) -> Path:
        return self._meta_root.joinpath(*validate_key(key).split("/")).with_name(
            key.rsplit("/", 1)[-1] + ".meta.json"
        )

    def _tmp_path(self) -> Path:
        return self._tmp_root / f"{uuid.uuid4().hex}.part"

    def _commit(
        self, key: str, data_tmp: Path, sha: str, size: int, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        info = ObjectInfo(key=key, size=size, sha256=sha, content_type=content_type, metadata=metadata)
        meta_tmp = self._tmp_path()
        try:
            with open(meta_tmp, "w", encoding="utf-8") as fh:
                json.dump(info.model_dump(exclude={"key"}), fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            data_path, meta_path = self._data_path(key), self._meta_path(key)
            data_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            # The data file's appearance is the commit point: sidecar first.
            os.replace(meta_tmp, meta_path)
            os.replace(data_tmp, data_path)
            _fsync_dir(meta_path.parent)
            _fsync_dir(data_path.parent)
        except OSError as err:
            raise StorageFailed(f"cannot store object {key!r} in {self.describe}: {err}") from err
        finally:
            meta_tmp.unlink(missing_ok=True)
            data_tmp.unlink(missing_ok=True)
        return info

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically (overwrites)."""
        validate_key(key)
        meta = validate_metadata(metadata)
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageFailed(f"cannot write object {key!r} in {self.describe}: {err}") from err
        return self._commit(key, tmp, sha256_bytes(data), len(data), content_type, meta)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Copy the file at ``path`` into the store, hashing while streaming."""
        validate_key(key)
        meta = validate_metadata(metadata)
        tmp = self._tmp_path()
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageFailed(f"cannot copy {path} into {self.describe} as {key!r}: {err}") from err
        return self._commit(key, tmp, digest.hexdigest(), size, content_type, meta)

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        try:
            raw = json.loads(self._meta_path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise IntegrityError(f"object {key!r} has an unreadable sidecar: {err}") from err
        return raw if isinstance(raw, dict) else None

    def stat(self, key: str) -> ObjectInfo | None:
        """Object info, or None if there is no object under ``key``."""
        data_path = self._data_path(key)
        try:
            st = data_path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not data_path.is_file():
            return None
        meta = self._read_meta(key) or {}
        return ObjectInfo(
            key=key,
            size=st.st_size,
            sha256=str(meta.get("sha256", "")),
            content_type=str(meta.get("content_type", DEFAULT_CONTENT_TYPE)),
            metadata=dict(meta.get("metadata") or {}),
        )

    def _require(self, key: str) -> ObjectInfo:
        info = self.stat(key)
        if info is None:
            raise ObjectMissing(f"no object {key!r} in {self.describe}")
        return info

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes, verified against the recorded SHA-256."""
        info = self._require(key)
        try:
            data = self._data_path(key).read_bytes()
        except FileNotFoundError as err:
            raise ObjectMissing(f"no object {key!r} in {self.describe}") from err
        except OSError as err:
            raise StorageFailed(f"cannot read object {key!r} from {self.describe}: {err}") from err
        _check(key, info.sha256, sha256_bytes(data))
        return data

    def get_file(self, key: str, dest: Path) -> ObjectInfo:
        """Copy the object to ``dest`` (tmp file + rename), verified on the way."""
        info = self._require(key)

        def copy(out: IO[bytes]) -> tuple[str, ObjectInfo]:
            digest = hashlib.sha256()
            with open(self._data_path(key), "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            return digest.hexdigest(), info

        return _write_verified(key, Path(dest), copy, self.describe)

    def delete(self, key: str) -> None:
        """Remove the object (data first, so it disappears atomically); a missing key is fine."""
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        try:
            if data_path.is_file():
                data_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
        except OSError as err:
            raise StorageFailed(f"cannot delete object {key!r} from {self.describe}: {err}") from err

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""
        start = self.root
        if "/" in prefix:
            start = self.root.joinpath(*prefix.rsplit("/", 1)[0].split("/"))
            if ".." in prefix.split("/"):
                raise ValueError(f"invalid list prefix: {prefix!r}")
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            if here == self.root:
                dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP]
            rel = here.relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            info = self.stat(key)
            if info is not None:
                yield info


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
_TRANSIENT_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})


class S3ObjectStore(BaseObjectStore):
    """Objects in an S3 bucket through the minio SDK; SHA-256 kept as ``x-amz-meta-sha256``.

    Transient HTTP failures (connection refused/reset, 5xx) are retried ``attempts`` times with
    exponential backoff; every failure surfaces as :class:`StorageFailed`.
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
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.bucket = bucket
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.describe = f"s3://{endpoint}/{bucket}"
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
        self._ensure_bucket()

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
                    ) from err
                if err.code in ("NoSuchKey", "NoSuchObject"):
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

    def _ensure_bucket(self) -> None:
        from minio.error import S3Error

        def ensure() -> None:
            if self._client.bucket_exists(bucket_name=self.bucket):
                return
            try:
                self._client.make_bucket(bucket_name=self.bucket)
            except S3Error as err:
                if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._call(f"open bucket {self.bucket!r}", ensure)

    # writes

    def _headers(self, sha: str, content_type: str, metadata: dict[str, str]) -> dict[str, str]:
        # Header values must be ASCII: percent-encode every user value, decode on read.
        headers = {name: quote(value, safe="") for name, value in metadata.items()}
        headers[_SHA_META] = sha
        headers[_CT_META] = quote(content_type, safe="")
        return headers

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (single PUT or multipart; S3 makes it visible atomically)."""
        import io

        validate_key(key)
        meta = validate_metadata(metadata)
        sha = sha256_bytes(data)
        headers = self._headers(sha, content_type, meta)

        def put() -> None:
            self._client.put_object(
                bucket_name=self.bucket,
                object_name=key,
                data=io.BytesIO(data),
                length=len(data),
                content_type=content_type,
                metadata=headers,  # type: ignore[arg-type]
            )

        self._call(f"put {key!r}", put)
        return ObjectInfo(key=key, size=len(data), sha256=sha, content_type=content_type, metadata=meta)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Upload a file: one pass to hash (the SHA-256 goes in the headers), one to stream it up.

        The upload pass is hashed too; if the file changed in between, the object is removed.
        """
        validate_key(key)
        meta = validate_metadata(metadata)
        try:
            sha, size = sha256_file(Path(path))
        except OSError as err:
            raise StorageFailed(f"cannot read {path} to upload as {key!r}: {err}") from err
        headers = self._headers(sha, content_type, meta)

        def put() -> str:
            with open(path, "rb") as fh:
                reader = _HashingReader(fh)
                self._client.put_object(
                    bucket_name=self.bucket,
                    object_name=key,
                    data=reader,  # type: ignore[arg-type]
                    length=size,
                    content_type=content_type,
                    metadata=headers,  # type: ignore[arg-type]
                )
                return reader.digest.hexdigest()

        sent = self._call(f"put {key!r}", put)
        if sent != sha:
            self.delete(key)
            raise StorageFailed(f"{path} changed while being uploaded as {key!r}; upload discarded")
        return ObjectInfo(key=key, size=size, sha256=sha, content_type=content_type, metadata=meta)

    # reads

    @staticmethod
    def _info_from_headers(key: str, size: int, headers: Any, fallback_ct: str | None) -> ObjectInfo:
        user: dict[str, str] = {}
        sha = ""
        content_type = fallback_ct or DEFAULT_CONTENT_TYPE
        for name, value in headers.items():
            lname = name.lower()
            if not lname.startswith("x-amz-meta-"):
                continue
            short = lname[len("x-amz-meta-") :]
            if short == _SHA_META:
                sha = value
            elif short == _CT_META:
                content_type = unquote(value)
            else:
                user[short] = unquote(value)
        return ObjectInfo(key=key, size=size, sha256=sha, content_type=content_type, metadata=user)

    def stat(self, key: str) -> ObjectInfo | None:
        """Object info (from a HEAD request), or None if missing."""
        return self._stat(validate_key(key))

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            obj = self._call(
                f"stat {key!r}", lambda: self._client.stat_object(bucket_name=self.bucket, object_name=key)
            )
        except ObjectMissing:
            return None
        return self._info_from_headers(key, obj.size or 0, obj.metadata or {}, obj.content_type)

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes, verified against ``x-amz-meta-sha256``."""
        validate_key(key)

        def get() -> tuple[bytes, ObjectInfo]:
            resp = self._client.get_object(bucket_name=self.bucket, object_name=key)
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

    def get_file(self, key: str, dest: Path) -> ObjectInfo:
        """Stream the object to ``dest`` (tmp file + rename), verified on the way."""
        validate_key(key)

        def download(out: IO[bytes]) -> tuple[str, ObjectInfo]:
            out.seek(0)
            out.truncate()  # a retried attempt starts over
            resp = self._client.get_object(bucket_name=self.bucket, object_name=key)
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

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is fine."""
        validate_key(key)
        with contextlib.suppress(ObjectMissing):
            self._call(f"delete {key!r}", lambda: self._client.remove_object(self.bucket, key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (one HEAD each for the metadata)."""

        def names_under() -> list[str]:
            found = self._client.list_objects(bucket_name=self.bucket, prefix=prefix or None, recursive=True)
            return [o.object_name for o in found if o.object_name and not o.is_dir]

        names = self._call(f"list {prefix!r}", names_under)
        for name in sorted(names):
            info = self._stat(name)
            if info is not None:
                yield info


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
        )
    return LocalObjectStore(settings.resolved_store_path)
