"""An S3 prefix as the inbox of an archive batch: its entries, and each one fetched to a local folder.

An entry is an object directly under the prefix (a PDF or image: one dossier) or a sub-prefix (a folder of
page images: one dossier), as in a folder of dossiers; ``manifest.csv`` beside them is fetched with each.
The inbox is read with the store's S3 endpoint and credentials (``HOSO_S3_*``), in any bucket they may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import InputMissing, StorageFailed

if TYPE_CHECKING:
    from minio import Minio

    from pipeline.core.settings import Settings

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class S3Inbox:
    bucket: str
    prefix: str  # "" or ending with "/"
    client: Minio

    @classmethod
    def parse(cls, url: str, settings: Settings) -> S3Inbox:
        """``s3://bucket[/prefix]`` on the configured S3 endpoint."""
        from minio import Minio

        rest = url.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise InputMissing(f"no bucket in {url!r}", f"Địa chỉ {url} thiếu tên bucket (s3://bucket/thu-muc).")
        prefix = prefix.strip("/")
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(bucket, f"{prefix}/" if prefix else "", client)

    def _fail(self, what: str, err: Exception) -> StorageFailed:
        return StorageFailed(
            f"inbox s3://{self.bucket}/{self.prefix}: cannot {what}: {err}",
            f"Không đọc được thư mục hồ sơ s3://{self.bucket}/{self.prefix}.",
        )

    def names(self) -> list[str]:
        """The entries under the prefix (objects and sub-prefixes), sorted; InputMissing if there is none."""
        try:
            listed = list(self.client.list_objects(self.bucket, prefix=self.prefix, recursive=False))
        except Exception as err:
            raise self._fail("list it", err) from err
        names = sorted({o.object_name[len(self.prefix) :].rstrip("/") for o in listed} - {"", MANIFEST})
        if not names and not listed:
            raise InputMissing(
                f"nothing under s3://{self.bucket}/{self.prefix}",
                f"Không có hồ sơ nào tại s3://{self.bucket}/{self.prefix}.",
            )
        return [n for n in names if not n.startswith(".")]

    def fetch(self, name: str, into: Path) -> Path:
        """Entry ``name`` (and ``manifest.csv``, if any) downloaded into the folder ``into``; its local path.
        An entry that is not there is not fetched (the manifest still is): the caller finds it missing, and a
        hand-over row naming it is recorded failed with its reason."""
        entry = f"{self.prefix}{name}"
        try:
            sub = list(self.client.list_objects(self.bucket, prefix=f"{entry}/", recursive=True))
            for obj in sub:  # a folder of page images
                self.client.fget_object(self.bucket, obj.object_name, str(into / obj.object_name[len(self.prefix) :]))
            if not sub and self._exists(entry):
                self.client.fget_object(self.bucket, entry, str(into / name))
        except Exception as err:
            raise self._fail(f"fetch {name!r}", err) from err
        self.fetch_manifest(into)
        return into / name

    def fetch_manifest(self, into: Path) -> Path | None:
        """``manifest.csv`` beside the entries downloaded into the folder ``into``; None if there is none."""
        manifest = f"{self.prefix}{MANIFEST}"
        try:
            if not self._exists(manifest):
                return None
            self.client.fget_object(self.bucket, manifest, str(into / MANIFEST))
        except Exception as err:
            raise self._fail(f"fetch {MANIFEST}", err) from err
        return into / MANIFEST

    def _exists(self, key: str) -> bool:
        """Whether object ``key`` is there (S3's own "no such key" answer; anything else is raised)."""
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise
        return True
