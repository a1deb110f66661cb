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

from pipeline.core.errors import HosoError, InputBadName
from pipeline.domain.lifecycle import Actor
from pipeline.usecases.desk import IntakeRequest, ingest
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
    citizen_form: str | None = None  # its artifact name, e.g. ``form-01-1``
    already_done: bool = False
    error_vi: str | None = None
    error_en: str | None = None
    failure: HosoError | None = field(default=None, repr=False)  # why it failed, as the use case said
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)

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


def intake_runner(services: Services, procedure: str, applicant_id: str | None, desk: Actor) -> Runner:
    """The desk chain as a job runs it, by the named desk user; the citizen's copy of the desk's form is
    kept with the job (in memory only) for the desk to print or fetch."""

    def run(path: Path, job: DeskJob) -> tuple[dict[str, Any], str | None, bool]:
        outcome = ingest(IntakeRequest(path, procedure, applicant_id, actor=desk.username, desk=desk), services)
        if outcome.form is not None:
            job.citizen_pdf, job.citizen_form = outcome.form.citizen_pdf, outcome.form.artifact
        return outcome.receipt.model_dump(mode="json"), outcome.lookup_url, outcome.already_done

    return run


def safe_name(name: str) -> str:
    """An uploaded file's name as it may be written in the job's folder: one plain path component.
    The desk's own name checks (control characters, length…) come later, from ``identify_input``."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InputBadName(f"upload name refused: {name!r}",
                           "Tên tệp tải lên không hợp lệ; vui lòng đổi tên tệp rồi nộp lại.")
    return name


#: Runs one intake: (input path, the job) → (receipt as JSON, lookup URL or None, already done).
Runner = Callable[[Path, DeskJob], tuple[dict[str, Any], str | None, bool]]


class DeskJobs:
    """One intake at a time (the OCR uses every core), the others queue."""

    def __init__(self, services: Services, workers: int = 1) -> None:
        self.services = services
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="desk")
        self._jobs: dict[str, DeskJob] = {}
        self._lock = threading.Lock()

    def submit(self, owner: str, procedure: str, files: list[tuple[str, bytes]], run: Runner,
               *, named: str | None = None) -> DeskJob:
        """Queue an intake of ``files`` (one PDF or image, or several page images in this order).

        ``named``: the files keep their names (checked by :func:`safe_name` first) — in a folder of that name
        when it is not empty — as a desk command's input had them; the input's identity (SHA-256 of a page
        folder, object keys) is then the same as if the desk had run the chain itself.
        """
        job = DeskJob(id=secrets.token_urlsafe(12), owner=owner, filenames=[n for n, _ in files], procedure=procedure)
        if named is not None:
            for name in [named, *(n for n, _ in files)] if named else [n for n, _ in files]:
                safe_name(name)
        folder = Path(tempfile.mkdtemp(prefix="hoso-desk-"))
        if named is not None and (named or len(files) > 1):
            path = folder / (named or "pages")
            path.mkdir()
            for name, data in files:
                (path / name).write_bytes(data)
        elif named is not None:
            path = folder / files[0][0]
            path.write_bytes(files[0][1])
        elif len(files) == 1:
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
            if isinstance(receipt.get("timings"), dict):  # waiting behind another intake is part of the wall
                queued = round(job.started - job.created, 3)
                receipt["timings"]["queued"] = queued
                receipt["timings"]["wall"] = round(receipt["timings"].get("wall", 0.0) + queued, 3)
            job.receipt, job.dossier_code = receipt, receipt.get("dossier_code")
            job.status = "done"
        except HosoError as err:
            job.error_vi, job.error_en, job.status = err.message_vi, str(err), "failed"
            job.failure = err
        except Exception as err:  # a bug must not kill the worker thread; the clerk sees a clear message
            log.exception("desk job %s failed", job.id)
            job.error_vi, job.error_en = "Lỗi hệ thống khi tiếp nhận hồ sơ.", f"{type(err).__name__}: {err}"
            job.status, job.failure = "failed", HosoError(job.error_en, job.error_vi)
        finally:
            job.finished = time.time()
            shutil.rmtree(folder, ignore_errors=True)
            job.finished_event.set()

    def warm(self, warm_up: Callable[[], dict[str, float]]) -> None:
        """Run ``warm_up`` ahead of every intake (intakes submitted meanwhile wait behind it)."""

        def run() -> None:
            try:
                log.info("desk warmed up: %s", warm_up())
            except Exception:  # an intake will meet the same problem and report it to the desk
                log.exception("desk warm-up failed")

        self._pool.submit(run)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class CitizenCopies:
    """The citizen's copies of the forms a staff step issued (each with its lookup secret), kept in memory for
    the user who took the step to print — never stored; gone after a day or a restart."""

    def __init__(self) -> None:
        self._copies: dict[tuple[str, str], tuple[str, float, bytes]] = {}
        self._lock = threading.Lock()

    def put(self, owner: str, code: str, artifact: str, pdf: bytes) -> None:
        with self._lock:
            cutoff = time.time() - KEEP_S
            self._copies = {k: v for k, v in self._copies.items() if v[1] > cutoff}
            self._copies[(code, artifact)] = (owner, time.time(), pdf)

    def get(self, owner: str, code: str, artifact: str) -> bytes | None:
        with self._lock:
            found = self._copies.get((code, artifact))
        return found[2] if found and found[0] == owner and found[1] > time.time() - KEEP_S else None
