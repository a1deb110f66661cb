"""Object stores, local and S3 (a real SeaweedFS: a plain bucket, and one with versioning and object lock),
through the same tests."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio
from support.servers import SeaweedServer, free_ports, start_seaweedfs

from pipeline.core.errors import IntegrityError, StorageFailed
from pipeline.core.settings import Settings
from storage.objects import (
    LocalObjectStore,
    Lock,
    ObjectLocked,
    ObjectMissing,
    ObjectStore,
    Protection,
    S3ObjectStore,
    open_store,
)


def _bucket() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["local", "s3", "s3-locked"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    server: SeaweedServer = request.getfixturevalue("seaweedfs")
    locked = request.param == "s3-locked"
    return S3ObjectStore(server.endpoint, server.access_key, server.secret_key, _bucket(), create_locked=locked)


@pytest.fixture(params=["local", "s3-locked"])
def versioned(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A store that keeps versions and can lock them: the local one, and S3 with versioning + object lock."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    server: SeaweedServer = request.getfixturevalue("seaweedfs")
    return S3ObjectStore(server.endpoint, server.access_key, server.secret_key, _bucket(), create_locked=True)


def tamper(store: ObjectStore, key: str, data: bytes, request: pytest.FixtureRequest) -> None:
    """Replace an object's bytes behind the store's back, keeping its recorded SHA-256."""
    if isinstance(store, LocalObjectStore):
        (store.root / key).write_bytes(data)
        return
    assert isinstance(store, S3ObjectStore)
    server: SeaweedServer = request.getfixturevalue("seaweedfs")
    raw = Minio(server.endpoint, server.access_key, server.secret_key, secure=False)
    old = raw.stat_object(store.bucket, key)
    prefix = "x-amz-meta-"
    keep = {k[len(prefix) :]: v for k, v in (old.metadata or {}).items() if k.lower().startswith(prefix)}
    assert keep.get("sha256"), keep
    raw.put_object(store.bucket, key, io.BytesIO(data), len(data), metadata=keep)  # type: ignore[arg-type]


def test_put_get_stat_delete(store: ObjectStore) -> None:
    data = b"%PDF-1.7 hello " * 100
    info = store.put_bytes("HS/0001/input.pdf", data, "application/pdf", {"applicant": "Nguyễn Văn Á"})
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)

    assert store.get_bytes("HS/0001/input.pdf") == data
    st = store.stat("HS/0001/input.pdf")
    assert st is not None
    assert (st.key, st.size, st.sha256) == ("HS/0001/input.pdf", len(data), info.sha256)
    assert st.content_type == "application/pdf"
    assert st.metadata == {"applicant": "Nguyễn Văn Á"}
    assert store.exists("HS/0001/input.pdf")

    assert store.stat("HS/0001/missing.pdf") is None
    assert not store.exists("HS/0001/missing.pdf")
    with pytest.raises(ObjectMissing) as missing:
        store.get_bytes("HS/0001/missing.pdf")
    assert isinstance(missing.value, StorageFailed)

    store.delete("HS/0001/input.pdf")
    assert not store.exists("HS/0001/input.pdf")
    store.delete("HS/0001/input.pdf")  # missing is fine
    assert list(store.list()) == []


def test_default_content_type_survives(store: ObjectStore) -> None:
    # SeaweedFS sniffs application/octet-stream into text/plain unless the store keeps its own record.
    store.put_bytes("raw.bin", b"plain text really")
    st = store.stat("raw.bin")
    assert st is not None and st.content_type == "application/octet-stream"


def test_put_overwrites_and_a_versioned_store_keeps_the_previous_version(store: ObjectStore) -> None:
    first = store.put_bytes("a/x.json", b'{"v": 1}', "application/json")
    again = store.put_bytes("a/x.json", b'{"v": 1}', "application/json")
    assert (first.sha256, first.size) == (again.sha256, again.size)
    second = store.put_bytes("a/x.json", b'{"v": 2}', "application/json")
    assert store.get_bytes("a/x.json") == b'{"v": 2}'
    assert [o.key for o in store.list()] == ["a/x.json"]
    if store.keeps_versions:
        assert len({first.version_id, again.version_id, second.version_id}) == 3
        assert store.get_bytes("a/x.json", first.version_id) == b'{"v": 1}'
        listed = [v for v in store.versions("a/") if v.key == "a/x.json"]
        assert [v.version_id for v in listed] == [second.version_id, again.version_id, first.version_id]
        assert [v.is_latest for v in listed] == [True, False, False]
    else:
        assert second.version_id is None


def test_list_by_prefix(store: ObjectStore) -> None:
    keys = ["HS/a/1.pdf", "HS/a/2.pdf", "HS/ab/1.pdf", "HS/b/1.pdf", "other.txt"]
    for i, key in enumerate(reversed(keys)):
        store.put_bytes(key, f"object {i}".encode())
    assert [o.key for o in store.list()] == keys
    assert [o.key for o in store.list("HS/a/")] == ["HS/a/1.pdf", "HS/a/2.pdf"]
    assert [o.key for o in store.list("HS/a")] == ["HS/a/1.pdf", "HS/a/2.pdf", "HS/ab/1.pdf"]
    assert [o.key for o in store.list("HS/")] == keys[:4]
    assert list(store.list("nothing/")) == []
    listed = {o.key: o for o in store.list()}
    assert listed["other.txt"].sha256 == hashlib.sha256(b"object 0").hexdigest()


def test_tampered_object_is_detected(
    store: ObjectStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store.put_bytes("HS/x/result.pdf", b"original signed bytes")
    tamper(store, "HS/x/result.pdf", b"forged signed bytes!!", request)
    with pytest.raises(IntegrityError, match="SHA-256"):
        store.get_bytes("HS/x/result.pdf")
    dest = tmp_path / "out" / "result.pdf"
    with pytest.raises(IntegrityError):
        store.get_file("HS/x/result.pdf", dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temp file left behind


def test_big_file_streams_both_ways(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    size = 20 * 1024 * 1024 + 123
    with open(src, "wb") as fh:
        for _ in range(size // (1024 * 1024)):
            fh.write(os.urandom(1024 * 1024))
        fh.write(os.urandom(size % (1024 * 1024)))
    expected = hashlib.sha256(src.read_bytes()).hexdigest()

    t0 = time.perf_counter()
    info = store.put_file("big/scan.tif", src, "image/tiff")
    t_put = time.perf_counter() - t0
    assert (info.size, info.sha256, info.content_type) == (size, expected, "image/tiff")

    dest = tmp_path / "back" / "scan.tif"
    t0 = time.perf_counter()
    got = store.get_file("big/scan.tif", dest)
    t_get = time.perf_counter() - t0
    assert got.sha256 == expected and got.size == size
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == expected
    assert [p.name for p in dest.parent.iterdir()] == ["scan.tif"]
    print(f"\n{store.describe}: 20 MB put_file {t_put:.2f} s, get_file {t_get:.2f} s")


@pytest.mark.parametrize(
    "key",
    ["", "../escape", "a/../../b", "/etc/passwd", "a\\b", "a//b", "a/./b", "a/", ".meta/x", ".tmp/x"]
    + ["a\x00b", "C:x"],
)
def test_bad_keys_are_refused(store: ObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.stat(key)
    with pytest.raises(ValueError):
        store.get_bytes(key)
    assert list(store.list()) == []
    assert not (tmp_path.parent / "escape").exists()


def test_bad_metadata_is_refused(store: ObjectStore) -> None:
    for meta in ({"Upper": "x"}, {"sha256": "x"}, {"hoso-content-type": "x"}, {"a b": "x"}):
        with pytest.raises(ValueError):
            store.put_bytes("k", b"x", metadata=meta)
    assert not store.exists("k")


def test_failed_put_keeps_previous_object(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("HS/keep.pdf", b"version 1")
    with pytest.raises(StorageFailed):
        store.put_file("HS/keep.pdf", tmp_path / "does-not-exist.pdf")
    assert store.get_bytes("HS/keep.pdf") == b"version 1"
    assert [o.key for o in store.list()] == ["HS/keep.pdf"]


def test_local_failed_put_leaves_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("HS", b"a file where a folder would be needed")
    with pytest.raises(StorageFailed):
        store.put_bytes("HS/0001/input.pdf", b"data")
    assert [o.key for o in store.list()] == ["HS"]
    assert list((store.root / ".tmp").glob("*.part")) == []
    assert not (store.root / ".meta" / "HS" / "0001").exists()


def test_local_object_without_sidecar_is_not_trusted(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (store.root / "dropped.pdf").write_bytes(b"copied in by hand")
    st = store.stat("dropped.pdf")
    assert st is not None and st.sha256 == ""
    with pytest.raises(IntegrityError):
        store.get_bytes("dropped.pdf")


def test_open_store_from_settings(tmp_path: Path, seaweedfs: SeaweedServer) -> None:
    local = open_store(Settings.model_validate({"data_dir": tmp_path / "var"}))
    assert isinstance(local, LocalObjectStore)
    assert local.describe == f"local:{(tmp_path / 'var' / 'objects').resolve()}"
    bucket = _bucket()
    s3 = open_store(
        Settings.model_validate(
            {
                "store": "s3",
                "s3_endpoint": seaweedfs.endpoint,
                "s3_access_key": seaweedfs.access_key,
                "s3_secret_key": seaweedfs.secret_key,
                "s3_bucket": bucket,
            }
        )
    )
    assert s3.describe == f"s3://{seaweedfs.endpoint}/{bucket}"
    s3.put_bytes("k", b"v")
    assert s3.get_bytes("k") == b"v"


def test_s3_wrong_credentials_refused(seaweedfs: SeaweedServer) -> None:
    with pytest.raises(StorageFailed, match="refused the credentials") as err:
        S3ObjectStore(seaweedfs.endpoint, seaweedfs.access_key, "not-the-secret", _bucket())
    assert err.value.message_vi and "S3" in err.value.message_vi


def test_s3_nothing_listening_is_storage_failed() -> None:
    (port,) = free_ports(1, with_grpc=False)
    t0 = time.perf_counter()
    with pytest.raises(StorageFailed, match="unreachable"):
        S3ObjectStore(f"127.0.0.1:{port}", "a", "b", "hoso", attempts=2, backoff=0.1)
    assert time.perf_counter() - t0 < 10


@pytest.mark.slow  # a second SeaweedFS, stopped
def test_s3_server_stopped_is_storage_failed(tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path / "short-lived")
    try:
        patient = S3ObjectStore(
            server.endpoint, server.access_key, server.secret_key, "hoso", attempts=2, backoff=0.1
        )
        patient.put_bytes("HS/1.pdf", b"before the outage")
        # Every operation below meets the server gone; one try each (the SDK's own retries still run) keeps
        # the test short, the patient store shows our retry loop giving up the same way.
        store = S3ObjectStore(server.endpoint, server.access_key, server.secret_key, "hoso", attempts=1)
    finally:
        server.kill()  # stopped for good: as gone as after SIGTERM, without the seconds a clean stop takes
    with pytest.raises(StorageFailed, match=r"unreachable .*\(after 2 attempts\)"):
        patient.put_bytes("HS/2.pdf", b"after")
    src = tmp_path / "f.bin"
    src.write_bytes(b"after the outage")
    for action in (
        lambda: store.put_bytes("HS/2.pdf", b"after"),
        lambda: store.put_file("HS/3.pdf", src),
        lambda: store.get_bytes("HS/1.pdf"),
        lambda: store.get_file("HS/1.pdf", tmp_path / "dl" / "1.pdf"),
        lambda: store.stat("HS/1.pdf"),
        lambda: list(store.list()),
        lambda: store.delete("HS/1.pdf"),
    ):
        with pytest.raises(StorageFailed, match="unreachable"):
            action()
    assert not (tmp_path / "dl" / "1.pdf").exists()


def test_the_store_tries_each_s3_call_as_often_as_hoso_s3_attempts_says() -> None:
    (port,) = free_ports(1, with_grpc=False)  # nothing listens there
    settings = Settings(store="s3", s3_endpoint=f"127.0.0.1:{port}", s3_access_key="k", s3_secret_key="s",
                        s3_attempts=1)
    with pytest.raises(StorageFailed, match=r"unreachable .*\(after 1 attempts\)"):
        open_store(settings)


def test_local_store_sweeps_temp_files_left_by_a_killed_writer(tmp_path: Path) -> None:
    LocalObjectStore(tmp_path / "store")
    stale = tmp_path / "store" / ".tmp" / "dead.part"
    live = tmp_path / "store" / ".tmp" / "live.part"
    stale.write_bytes(b"half an upload")
    live.write_bytes(b"being written now")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    store = LocalObjectStore(tmp_path / "store")
    assert not stale.exists()
    assert live.exists()
    assert list(store.list()) == []


# --- versions, locks, attempts ------------------------------------------------------------------


def test_protection_says_what_the_server_enforces(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    expected = {"local": (False, False), "s3": (False, False), "s3-locked": (True, True)}
    assert store.protection() == Protection(*expected[request.node.callspec.params["store"]])
    assert store.keeps_versions == (request.node.callspec.params["store"] != "s3")
    assert store.can_lock == store.keeps_versions


def test_the_attempt_that_wrote_a_version_is_kept_with_it(store: ObjectStore, tmp_path: Path) -> None:
    info = store.put_bytes("d/a.pdf", b"attempt A", attempt="att-A")
    src = tmp_path / "b.bin"
    src.write_bytes(b"attempt B")
    other = store.put_file("d/b.pdf", src, "application/pdf", attempt="att-B")
    assert (info.attempt, other.attempt) == ("att-A", "att-B")
    assert store.stat("d/a.pdf", info.version_id).attempt == "att-A"  # type: ignore[union-attr]
    assert store.stat("d/b.pdf").attempt == "att-B"  # type: ignore[union-attr]
    assert store.stat("d/a.pdf").metadata == {}  # type: ignore[union-attr]  (hoso's own, not the caller's)
    with pytest.raises(ValueError):
        store.put_bytes("d/c.pdf", b"x", attempt="../../etc")


def test_delete_hides_the_current_version_and_keeps_it(versioned: ObjectStore) -> None:
    v1 = versioned.put_bytes("k/r.pdf", b"recorded")
    versioned.delete("k/r.pdf")
    assert versioned.stat("k/r.pdf") is None and list(versioned.list("k/")) == []
    with pytest.raises(ObjectMissing):
        versioned.get_bytes("k/r.pdf")
    assert versioned.get_bytes("k/r.pdf", v1.version_id) == b"recorded"  # nothing was destroyed
    marker, kept = [v for v in versioned.versions("k/") if v.key == "k/r.pdf"]
    assert marker.is_delete_marker and marker.is_latest and kept.version_id == v1.version_id
    versioned.delete_version("k/r.pdf", marker.version_id)  # removing the marker brings it back
    assert versioned.get_bytes("k/r.pdf") == b"recorded"


def test_delete_version_destroys_exactly_one_version(versioned: ObjectStore) -> None:
    mine = versioned.put_bytes("k/x.pdf", b"the winner's", attempt="winner")
    theirs = versioned.put_bytes("k/x.pdf", b"the loser's", attempt="loser")
    versioned.delete_version("k/x.pdf", theirs.version_id)  # the loser's rollback
    assert versioned.get_bytes("k/x.pdf") == b"the winner's"
    info = versioned.stat("k/x.pdf")
    assert info is not None and (info.version_id, info.attempt) == (mine.version_id, "winner")
    versioned.delete_version("k/x.pdf", theirs.version_id)  # gone already: fine
    versioned.delete_version("k/x.pdf", mine.version_id)
    assert versioned.stat("k/x.pdf") is None and list(versioned.versions("k/")) == []


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_a_locked_version_cannot_be_destroyed_or_overwritten_away(versioned: ObjectStore, mode: str) -> None:
    record = versioned.put_bytes("k/digitised.pdf", b"%PDF- the record")
    until = datetime.now(UTC) + timedelta(days=1)
    lock = versioned.lock("k/digitised.pdf", record.version_id, Lock(mode=mode, until=until))  # type: ignore[arg-type]
    assert lock.mode == mode
    stored = versioned.stat("k/digitised.pdf", record.version_id)
    assert stored is not None and stored.lock is not None and stored.lock.until >= until - timedelta(seconds=1)
    with pytest.raises(ObjectLocked):
        versioned.delete_version("k/digitised.pdf", record.version_id)
    forged = versioned.put_bytes("k/digitised.pdf", b"%PDF- a forgery")  # a new version on top, the old one stays
    versioned.delete("k/digitised.pdf")
    assert versioned.get_bytes("k/digitised.pdf", record.version_id) == b"%PDF- the record"
    assert versioned.get_bytes("k/digitised.pdf", forged.version_id) == b"%PDF- a forgery"
    # retention is extended, never shortened
    shorter = versioned.lock("k/digitised.pdf", record.version_id, Lock(mode=mode, until=until - timedelta(hours=12)))  # type: ignore[arg-type]
    assert shorter.until >= until - timedelta(seconds=1)
    with pytest.raises(ObjectLocked):
        versioned.delete_version("k/digitised.pdf", record.version_id)


def test_local_store_is_private_to_its_user(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("dossiers/D-1/input/scan.pdf", b"personal data")
    store.put_bytes("dossiers/D-1/input/scan.pdf", b"personal data, again")
    store.delete("dossiers/D-1/input/scan.pdf")
    for path in [store.root, *store.root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_local_versions_survive_a_reopen_and_a_legacy_object_gets_a_version(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (store.root / "legacy.pdf").write_bytes(b"from before versions")
    legacy = store.stat("legacy.pdf")
    assert legacy is not None and legacy.version_id
    new = store.put_bytes("legacy.pdf", b"new")
    again = LocalObjectStore(tmp_path / "objects")
    assert [v.version_id for v in again.versions("legacy")] == [new.version_id, legacy.version_id]
    assert again.get_bytes("legacy.pdf") == b"new"
