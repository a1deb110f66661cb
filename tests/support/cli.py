"""Run the real ``hoso`` command in a fresh process, in a clean environment: the one helper every CLI test uses.

The process gets its own data folder (``HOSO_DATA_DIR``), none of the caller's ``HOSO_*`` or ``PREFECT_*``
variables, this checkout's code first on its path, and the scripted OCR engine (:mod:`support.fake_ocr`)
in the command's own process (``HOSO_OCR_JOBS=1``: a worker pool costs more than scripted pages) unless
``ocr="tesseract"`` asks for the real one.

A run is forked from a process that has done hoso's imports already (:mod:`support.zygote`; 1-1.5 s of CPU less a
run) unless ``HOSO_TEST_ZYGOTE=0``; :meth:`Hoso.popen` (runs a test kills or waits on) always starts Python anew.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

from storage.objects import LocalObjectStore
from storage.registry import Registry
from support.zygote_client import zygote_run

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
SAMPLE = ROOT / "pipeline" / "data" / "sample_dossier.pdf"
SCRIPTED_ENGINE = "support.fake_ocr:ScriptedEngine"
OcrChoice = Literal["scripted", "tesseract"]


def clean_env(data_dir: Path, extra: dict[str, str] | None = None, *, ocr: OcrChoice = "scripted") -> dict[str, str]:
    """The environment for one ``hoso`` run: the caller's, without hoso's and Prefect's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSO_", "PREFECT_"))}
    path = [str(ROOT), str(TESTS), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env |= {"HOSO_DATA_DIR": str(data_dir), "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
    if ocr == "scripted":
        env |= {"HOSO_OCR_ENGINE": SCRIPTED_ENGINE, "HOSO_OCR_JOBS": "1"}
    return env | (extra or {})


class Hoso:
    """The ``hoso`` command with its own data folder; ``env`` may be changed between runs."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None, *, ocr: OcrChoice = "scripted"):
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)  # the command runs there
        self.env = clean_env(data_dir, extra_env, ocr=ocr)

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cwd = self.data_dir.parent
        forked = zygote_run(list(args), self.env, cwd, timeout)
        if forked is not None:
            return forked
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the command in its own process group, so that a kill takes all of it (workers, Prefect)."""
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=self.data_dir.parent,
            start_new_session=True,
        )

    @property
    def registry(self) -> Registry:
        url = self.env.get("HOSO_DATABASE_URL") or f"sqlite:///{self.data_dir / 'registry.db'}"
        return Registry(url)

    def stored_keys(self) -> list[str]:
        root = self.data_dir / "objects"
        if not root.exists():
            return []
        return sorted(info.key for info in LocalObjectStore(root).list())
