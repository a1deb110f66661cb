"""Fault injection: a bug inside a stage is one clear line and exit 99, with the traceback logged."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.usecases.desk
from pipeline.cli.app import app
from pipeline.core.errors import ExitCode
from pipeline.core.settings import get_settings


def test_an_unexpected_exception_is_exit_99_with_its_traceback_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_stage(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault in a stage")

    monkeypatch.setenv("HOSO_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    monkeypatch.setattr(pipeline.usecases.desk, "ingest", broken_stage)
    sample = tmp_path / "scan.pdf"
    sample.write_bytes(b"%PDF-1.7\n")
    try:
        result = CliRunner().invoke(app, ["ingest", str(sample), "--procedure", "business_household_registration"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == ExitCode.internal
    assert "hoso: lỗi [internal]" in result.output
    assert "Traceback" not in result.output
    log = (tmp_path / "var" / "logs" / "errors.log").read_text(encoding="utf-8")
    assert "RuntimeError: injected fault in a stage" in log and "Traceback" in log
