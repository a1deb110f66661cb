"""Input identification (pipeline/core/inputs.py) and archive discovery by content."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from pipeline.core.errors import ExitCode, InputMissing, InputNotRegular
from pipeline.core.inputs import identify_input, open_regular, pdf_signature_fields
from pipeline.core.settings import Settings
from pipeline.usecases.archive import discover_batch, process_one
from pipeline.usecases.services import Services

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> Path:
    Image.new("L", (40, 60), 255).save(path, "PNG")
    return path


def _signed_field_pdf(path: Path, *, signed: bool) -> Path:
    """A PDF with one signature field, with a signature value (/V) or not: enough for the field check."""
    pdf = pikepdf.new()
    pdf.add_blank_page()
    field = pikepdf.Dictionary(FT=pikepdf.Name.Sig, T=pikepdf.String("CongDan"))
    if signed:
        field.V = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Sig, Filter=pikepdf.Name("/Adobe.PPKLite")))
    pdf.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([pdf.make_indirect(field)]))
    pdf.save(path)
    return path


# --- files and folders ---------------------------------------------------------------------------


def test_a_file_is_identified_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    scan = _png(tmp_path / "scan.pdf")  # a PNG with a PDF's name
    source = identify_input(scan)
    assert not source.is_folder and source.name == "scan.pdf" and source.paths == [scan]
    (f,) = source.files
    assert (f.format, f.content_type, f.size) == ("png", "image/png", scan.stat().st_size)
    assert source.sha256 == f.sha256 == hashlib.sha256(scan.read_bytes()).hexdigest()
    assert source.signature_fields == []


def test_formats_from_magic_bytes(tmp_path: Path) -> None:
    cases = {
        "a": (b"%PDF-1.7\n", "pdf", "application/pdf"),
        "b": (b"junk before the header %PDF-1.4\n", "pdf", "application/pdf"),
        "c": (b"\xff\xd8\xff\xe0", "jpeg", "image/jpeg"),
        "d": (b"MM\x00*", "tiff", "image/tiff"),
        "e": (b"II*\x00", "tiff", "image/tiff"),
        "f": (b"just some text", None, "application/octet-stream"),
        "g": (b"", None, "application/octet-stream"),
    }
    for name, (data, fmt, content_type) in cases.items():
        (tmp_path / name).write_bytes(data)
        (f,) = identify_input(tmp_path / name).files
        assert (f.format, f.content_type) == (fmt, content_type), name


def test_folder_digest_is_the_one_existing_registries_hold(tmp_path: Path) -> None:
    """Pages in name order, hidden files left out; the digest was frozen from the desk's earlier code."""
    d = tmp_path / "trang"
    d.mkdir()
    (d / "p02.png").write_bytes(PNG + b" page two")
    (d / "p01.jpg").write_bytes(b"\xff\xd8\xff page one")
    (d / "P03.tif").write_bytes(b"II*\x00 page three")
    (d / ".DS_Store").write_bytes(b"junk")
    source = identify_input(d)
    assert source.is_folder and source.name == "trang"
    assert [f.name for f in source.files] == ["P03.tif", "p01.jpg", "p02.png"]
    assert [f.format for f in source.files] == ["tiff", "jpeg", "png"]
    assert source.sha256 == "5f36189d3958ad2878ca22547baee21119501b65e301402885b37af97ea5655b"


def test_signature_fields_of_a_signed_pdf(tmp_path: Path) -> None:
    signed = _signed_field_pdf(tmp_path / "signed.pdf", signed=True)
    unsigned = _signed_field_pdf(tmp_path / "unsigned.pdf", signed=False)
    assert identify_input(signed).signature_fields == ["CongDan"] == pdf_signature_fields(signed)
    assert identify_input(unsigned).signature_fields == []
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "p1.pdf").write_bytes(signed.read_bytes())
    assert identify_input(folder).signature_fields == []  # only a single-PDF input is kept as signed


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(InputMissing):
        identify_input(tmp_path / "nope.pdf")


# --- what is not a regular file is refused before a byte is read ----------------------------------


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.pdf"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(InputNotRegular) as err:
        identify_input(fifo)
    assert err.value.exit_code == ExitCode.input_not_regular and "FIFO" in str(err.value)
    # A FIFO swapped in after identification is refused once open, before a read.
    with pytest.raises(InputNotRegular), open_regular(fifo):
        pass


@pytest.mark.timeout(20)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    with pytest.raises(InputNotRegular, match="device"):
        identify_input(Path("/dev/zero"))


def test_symlinks_are_refused_even_to_a_good_file(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png")
    link = tmp_path / "link.png"
    link.symlink_to(good)
    with pytest.raises(InputNotRegular, match="symbolic link"):
        identify_input(link)
    with pytest.raises(InputNotRegular), open_regular(link):
        pass
    folder_link = tmp_path / "pages-link"
    folder_link.symlink_to(tmp_path)
    with pytest.raises(InputNotRegular):
        identify_input(folder_link)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("entry", ["symlink", "fifo", "subfolder"])
def test_a_folder_with_a_non_regular_entry_is_refused_not_trimmed(tmp_path: Path, entry: str) -> None:
    d = tmp_path / "pages"
    d.mkdir()
    _png(d / "p1.png")
    if entry == "symlink":
        (d / "p2.png").symlink_to(_png(tmp_path / "outside.png"))
    elif entry == "fifo":
        os.mkfifo(d / "p2.png")
    else:
        (d / "more").mkdir()
        _png(d / "more" / "p2.png")
    with pytest.raises(InputNotRegular) as err:
        identify_input(d)
    assert ("more" if entry == "subfolder" else "p2.png") in err.value.message_vi  # the clerk sees which entry


def test_every_exit_code_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", readme, re.M)}
    documented |= {int(n) for n in re.findall(r"\| (\d+) \| [^|]+\|$", readme, re.M)}
    assert {int(c) for c in ExitCode} <= documented


# --- archive discovery ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_batch_discovery_by_content_records_what_is_not_a_dossier(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = _signed_field_pdf(outside / "other-dossier.pdf", signed=False)
    batch = tmp_path / "batch"
    batch.mkdir()
    _signed_field_pdf(batch / "A.pdf", signed=False)
    _png(batch / "B.scan")  # an image whatever its name
    (batch / "C").mkdir()
    _png(batch / "C" / "p1.png")
    (batch / "D.pdf").write_bytes(b"")  # empty: on to the desk, which says so
    (batch / "notes.txt").write_text("scanned 14/07/2025\n")
    (batch / "link.pdf").symlink_to(secret)
    os.mkfifo(batch / "pipe.pdf")
    (batch / ".hidden.pdf").write_bytes(b"%PDF-1.4\n")
    (batch / "manifest.csv").write_text("file,procedure\nA.pdf,business_household_registration\n")

    items = {i.name: i for i in discover_batch(batch)}
    assert sorted(items) == ["A.pdf", "B.scan", "C", "D.pdf", "link.pdf", "notes.txt", "pipe.pdf"]
    assert {n for n, i in items.items() if i.refused is None} == {"A.pdf", "B.scan", "C", "D.pdf"}
    assert items["A.pdf"].procedure == "business_household_registration" and items["B.scan"].procedure is None
    assert (items["notes.txt"].refused or "").startswith("input_unsupported")
    assert (items["link.pdf"].refused or "").startswith("input_not_regular")
    assert (items["pipe.pdf"].refused or "").startswith("input_not_regular")

    services = Services(Settings(data_dir=tmp_path / "var", natdb="off"))
    for name in ("notes.txt", "link.pdf", "pipe.pdf"):
        result = process_one(items[name], services)
        assert result.outcome == "failed" and result.reason == items[name].refused


def test_a_manifest_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    real = tmp_path / "elsewhere.csv"
    real.write_text("file,procedure\n")
    (batch / "manifest.csv").symlink_to(real)
    with pytest.raises(InputNotRegular):
        discover_batch(batch)
