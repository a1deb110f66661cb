"""Desk intakes in the background: the upload is written to a private temporary folder, the desk chain
runs in a worker thread (OCR fans pages out to processes), the page polls the job until the receipt is
ready. Jobs are kept in memory for a day; the dossier itself is in the registry once received.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.errors import HosoError
from pipeline.usecases.services import Services

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed"]
KEEP_S = 24 * 3600


@dataclass
class DeskJob:
    id: str
    owner: str
    filenames: list[str]
    procedure: str
    status: JobStatus = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    dossier_code: str | None = None
    receipt: dict[str, Any] | None = None
    lookup_url: str | None = None
    citizen_pdf: bytes | None = field(default=None, repr=False)  # the citizen's copy of the desk's form
    already_done: bool = False
    error_vi: str | None = None
    error_en: str | None = None

    def elapsed(self) -> float:
        return (self.finished or time.time()) - (self.started or self.created)

    def public(self) -> dict[str, Any]:
        """What the desk page and the API show of the job."""
        return {
            "id": self.id, "status": self.status, "procedure": self.procedure, "files": self.filenames,
            "elapsed_s": round(self.elapsed(), 1), "dossier_code": self.dossier_code, "receipt": self.receipt,
            "lookup_url": self.lookup_url, "already_done": self.already_done,
            "error": None if self.error_en is None else {"message_vi": self.error_vi, "message_en": self.error_en},
        }


#: Runs one intake: (input path, the job) → (receipt as JSON, lookup URL or None, already done).
Runner = Callable[[Path, DeskJob], tuple[dict[str, Any], str | None, bool]]


class DeskJobs:
    """One intake at a time (the OCR uses every core), the others queue."""

    def __init__(self, services: Services, workers: int = 1) -> None:
        self.services = services
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="desk")
        self._jobs: dict[str, DeskJob] = {}
        self._lock = threading.Lock()

    def submit(self, owner: str, procedure: str, files: list[tuple[str, bytes]], run: Runner) -> DeskJob:
        """Queue an intake of ``files`` (one PDF or image, or several page images in this order)."""
        job = DeskJob(id=secrets.token_urlsafe(12), owner=owner, filenames=[n for n, _ in files], procedure=procedure)
        folder = Path(tempfile.mkdtemp(prefix="hoso-desk-"))
        if len(files) == 1:
            path = folder / "scan"
            path.write_bytes(files[0][1])
        else:  # a folder of page images, in upload order
            path = folder / "pages"
            path.mkdir()
            for n, (_, data) in enumerate(files, start=1):
                (path / f"{n:04d}").write_bytes(data)
        with self._lock:
            cutoff = time.time() - KEEP_S
            self._jobs = {k: v for k, v in self._jobs.items() if v.created > cutoff}
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, path, folder, run)
        return job

    def get(self, job_id: str) -> DeskJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: DeskJob, path: Path, folder: Path, run: Runner) -> None:
        job.status, job.started = "running", time.time()
        try:
            receipt, job.lookup_url, job.already_done = run(path, job)
            job.receipt, job.dossier_code = receipt, receipt.get("dossier_code")
            job.status = "done"
        except HosoError as err:
            job.error_vi, job.error_en, job.status = err.message_vi, str(err), "failed"
        except Exception as err:  # a bug must not kill the worker thread; the clerk sees a clear message
            log.exception("desk job %s failed", job.id)
            job.error_vi, job.error_en = "Lỗi hệ thống khi tiếp nhận hồ sơ.", f"{type(err).__name__}: {err}"
            job.status = "failed"
        finally:
            job.finished = time.time()
            shutil.rmtree(folder, ignore_errors=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
