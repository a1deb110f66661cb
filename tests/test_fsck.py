"""fsck in this process on a dossier the desk received (tests/test_records_cli.py runs `hoso fsck`, slow)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from support.cli import SAMPLE, SCRIPTED_ENGINE

from pipeline.core.settings import Settings
from pipeline.usecases.desk import ingest, intake_request
from pipeline.usecases.fsck import fsck
from pipeline.usecases.services import Services
from storage import keys


def test_fsck_finds_a_changed_and_a_missing_object_and_repairs_only_a_wide_mode(tmp_path: Path) -> None:
    services = Services(Settings(data_dir=tmp_path / "var", natdb="off", ocr_jobs=1, ocr_engine=SCRIPTED_ENGINE))
    try:
        request = intake_request(services, SAMPLE, "business_household_registration")
        code = ingest(request, services).receipt.dossier_code
        assert fsck(services).findings == []
        objects = tmp_path / "var" / "objects"
        digitised = objects / keys.digitised_key(code)
        digitised.write_bytes(digitised.read_bytes().replace(b"/Type", b"/Typo", 1))  # behind hoso's back
        (objects / keys.manifest_key(code)).unlink()
        (objects / ".meta" / f"{keys.manifest_key(code)}.meta.json").unlink()
        leaked = next(objects.glob(f"dossiers/{code}/input/*"))
        os.chmod(leaked, 0o644)

        report = fsck(services, repair=True)
        found = {(f.kind, f.key, f.repaired) for f in report.findings}
        assert found == {("sha256_mismatch", keys.digitised_key(code), False),
                         ("missing_object", keys.manifest_key(code), False),
                         ("insecure_mode", str(leaked), True)}, report.findings
        assert not report.ok and stat.S_IMODE(leaked.stat().st_mode) == 0o600
        assert services.registry.get(code).artifacts  # the registry still says what was recorded
    finally:
        services.close()
