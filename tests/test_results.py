"""The e-result PDF: content, QR code, and the approver's + seal's signatures."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest
import zxingcpp
from pydantic import ValidationError

from pipeline.domain.results import (
    ResultContent,
    issue_signed_result,
    qr_payload,
    render_result_pdf,
    result_signature_boxes,
)
from signing.pki import DevPki, ensure_dev_pki
from signing.signers import SigningKeys
from signing.verify import verify_pdf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_signing  # noqa: E402
from test_signing import flattened_text, ids  # noqa: E402

tsa = test_signing.tsa  # the local RFC 3161 responder (a fixture)

PASS = b"results-test"
AGENCY = "Ủy ban nhân dân phường Dịch Vọng"


def content(**overrides: object) -> ResultContent:
    data: dict[str, object] = {
        "dossier_code": "000.00.00.H00-250305-0042",
        "procedure_label": "Đăng ký khai sinh",
        "procedure_code": "1.001193",
        "applicant_name": "Trần Thị Bích Ngọc",
        "applicant_id": "001189012345",
        "agency_name": AGENCY,
        "issued_at": dt.datetime(2025, 3, 4, 20, 30, tzinfo=dt.UTC),  # 5 March 03:30 in Hà Nội
        "verification_code": "7KQ2-M9XD",
        "body_lines": ["Hồ sơ đã được giải quyết xong theo đúng quy định.", "", "Kết quả: Giấy khai sinh."],
        "place": "Hà Nội",
    }
    data.update(overrides)
    return ResultContent.model_validate(data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"), PASS, agency_name=AGENCY)


@pytest.fixture(scope="module")
def keys(pki: DevPki) -> SigningKeys:
    return SigningKeys(pki, PASS)


@pytest.fixture(scope="module")
def signed(keys: SigningKeys) -> bytes:
    return issue_signed_result(content(), keys, approver_name="Phạm Thị Hoa", agency_name=AGENCY)


def page_texts(pdf: bytes) -> list[str]:
    doc = pdfium.PdfDocument(pdf)
    try:
        return [unicodedata.normalize("NFC", page.get_textpage().get_text_range()) for page in doc]
    finally:
        doc.close()


def decode_qr(pdf: bytes, page_index: int) -> list[str]:
    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[page_index].render(scale=200 / 72).to_pil()
    finally:
        doc.close()
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


def test_signed_result_has_two_valid_signatures(signed: bytes, pki: DevPki) -> None:
    report = verify_pdf(signed, [pki.root_cert], identities=ids(pki))
    assert report.ok, report
    assert [s.field for s in report.signatures] == ["approver", "seal"]
    approver, seal = report.signatures
    assert approver.signer == "Lãnh đạo phê duyệt"
    assert seal.signer == AGENCY  # the organisation certificate signs last
    assert approver.modification_level == "FORM_FILLING" and seal.modification_level == "NONE"
    assert seal.coverage == "ENTIRE_FILE"


def test_result_text_extracts_back(signed: bytes) -> None:
    (text,) = page_texts(signed)
    assert "KẾT QUẢ GIẢI QUYẾT THỦ TỤC HÀNH CHÍNH" in text
    assert "Mã hồ sơ: 000.00.00.H00-250305-0042" in text
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text
    assert "Trần Thị Bích Ngọc" in text
    assert "Hà Nội, ngày 05 tháng 03 năm 2025" in text  # converted to Asia/Ho_Chi_Minh


def test_qr_code_decodes_to_the_verification_payload(signed: bytes) -> None:
    expected = qr_payload(content())
    assert expected == "HOSO-VERIFY:000.00.00.H00-250305-0042:7KQ2-M9XD"
    assert decode_qr(signed, 0) == [expected]


def test_long_body_puts_signatures_on_the_last_page(keys: SigningKeys, pki: DevPki) -> None:
    body = [f"Dòng nội dung số {i}: thông tin chi tiết về kết quả giải quyết hồ sơ." for i in range(60)]
    c = content(body_lines=body, dossier_code="DAI-0001", place=None)
    unsigned = render_result_pdf(c)
    texts = page_texts(unsigned)
    assert len(texts) == 2
    assert "Dòng nội dung số 0:" in texts[0] and "Dòng nội dung số 59:" in texts[1]
    assert "LÃNH ĐẠO PHÊ DUYỆT" not in texts[0] and "LÃNH ĐẠO PHÊ DUYỆT" in texts[1]
    assert "Ngày " in texts[0]  # no place given: the date line starts with "Ngày"
    signed = issue_signed_result(c, keys, approver_name="Phạm Thị Hoa", agency_name=AGENCY)
    assert verify_pdf(signed, [pki.root_cert], identities=ids(pki)).ok
    last = len(texts) - 1
    assert decode_qr(signed, last) == ["HOSO-VERIFY:DAI-0001:7KQ2-M9XD"]
    assert "LÃNH ĐẠO PHÊ DUYỆT" in page_texts(signed)[last]


def test_signature_boxes_are_on_the_page_and_do_not_overlap() -> None:
    boxes = result_signature_boxes()
    (ax1, ay1, ax2, ay2), (sx1, sy1, sx2, sy2) = boxes["approver"], boxes["seal"]
    assert 0 < ax1 < ax2 < sx1 < sx2 < 595.28
    assert 0 < ay1 < ay2 < 842 and 0 < sy1 < sy2 < 842


def test_result_content_rejects_empty_dossier_code() -> None:
    with pytest.raises(ValidationError):
        content(dossier_code="")


def test_result_fonts_are_embedded(signed: bytes) -> None:
    # Every font actually used must be embedded (reportlab subsets Noto Sans; stamps add their own).
    assert signed.count(b"/FontFile2") >= 2
    assert b"NotoSans-Bold" in signed


_FORBIDDEN_KEYS = {"/JavaScript", "/JS", "/AA", "/Launch", "/EmbeddedFiles"}


def _dictionaries(doc: pikepdf.Pdf):  # type: ignore[no-untyped-def]
    """Every dictionary and stream of ``doc``: the indirect objects and the direct ones inside them."""
    todo = [o for o in doc.objects if isinstance(o, pikepdf.Dictionary | pikepdf.Stream | pikepdf.Array)]
    todo.append(doc.trailer)
    while todo:
        obj = todo.pop()
        children = list(obj) if isinstance(obj, pikepdf.Array) else [obj[k] for k in obj]
        todo += [c for c in children if isinstance(c, pikepdf.Dictionary | pikepdf.Array) and not c.is_indirect]
        if not isinstance(obj, pikepdf.Array):
            yield obj


#: Document information entries and the XMP properties PDF/A wants them equal to.
_INFO_XMP = {"/Title": "dc:title", "/Author": "dc:creator", "/Subject": "dc:description", "/Keywords": "pdf:Keywords",
             "/Creator": "xmp:CreatorTool", "/Producer": "pdf:Producer", "/CreationDate": "xmp:CreateDate",
             "/ModDate": "xmp:ModifyDate"}


def _info_xmp_problems(doc: pikepdf.Pdf, meta) -> list[str]:  # type: ignore[no-untyped-def]
    """/Info entries whose XMP counterpart says something else (PDF/A-2 6.6.2.3)."""
    from pikepdf.models.metadata import decode_pdf_date

    problems = []
    info = doc.trailer.get("/Info", {})
    for key, prop in _INFO_XMP.items():
        if key not in info:
            continue
        value, xmp = str(info[key]), meta.get(prop)
        if key.endswith("Date"):
            same = xmp is not None and decode_pdf_date(value) == dt.datetime.fromisoformat(str(xmp))
        else:
            same = (", ".join(xmp) if isinstance(xmp, list | set) else xmp) == value
        if not same:
            problems.append(f"/Info {key} {value!r} differs from XMP {prop} {xmp!r}")
    return problems


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def revisions(pdf: bytes) -> list[bytes]:
    """The file as it was after each of its revisions (each incremental update ends at a %%EOF)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    xrefs = PdfFileReader(io.BytesIO(pdf)).xrefs
    ends = []
    for revision in range(xrefs.total_revisions):
        eof = pdf.index(b"%%EOF", xrefs.get_xref_container_info(revision).end_location) + 5
        ends.append(eof + len(pdf[eof:eof + 2]) - len(pdf[eof:eof + 2].lstrip(b"\r\n")))
    return [pdf[:end] for end in ends]


def _syntax_problems(pdf: bytes) -> list[str]:
    """qpdf's structural check (xref, objects, streams), as ``qpdf --check``."""
    if shutil.which("qpdf"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.pdf"
            path.write_bytes(pdf)
            proc = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True, check=False)
        return [] if proc.returncode == 0 else [f"qpdf --check: {proc.stdout.strip()} {proc.stderr.strip()}"]
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return [f"pikepdf check: {p}" for p in doc.check()]


def pdfa_2b_problems(pdf: bytes) -> list[str]:
    """What we can check of PDF/A-2b without a validator: PDF version (at most 1.7: PDF/A-2 is based on
    PDF 1.7), declaration, /Info agreeing with the XMP, output intent, embedded fonts, no encryption, no
    actions or JavaScript, printable annotations with appearances, and qpdf's structural check."""
    problems: list[str] = _syntax_problems(pdf)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        catalog = str(doc.Root.get("/Version", "/" + doc.pdf_version))[1:]
        if max(_version(doc.pdf_version), _version(catalog)) > (1, 7):
            problems.append(f"PDF version {doc.pdf_version}, catalog /Version {catalog}")
        for name, ext in dict(doc.Root.get("/Extensions", {})).items():
            for one in ext if isinstance(ext, pikepdf.Array) else [ext]:  # ISO 32000-2 allows arrays
                if _version(str(one.get("/BaseVersion", "/1.7"))[1:]) > (1, 7):
                    problems.append(f"developer extension {name} for PDF {one.BaseVersion}")
        if "/Encrypt" in doc.trailer:
            problems.append("encrypted")
        if "/ID" not in doc.trailer:
            problems.append("no file identifier")
        meta = doc.open_metadata()  # parses the XMP packet
        if (meta.get("pdfaid:part"), meta.get("pdfaid:conformance")) != ("2", "B"):
            problems.append(f"XMP pdfaid is {meta.get('pdfaid:part')}/{meta.get('pdfaid:conformance')}")
        problems += _info_xmp_problems(doc, meta)
        intents = doc.Root.get("/OutputIntents", [])
        srgb = [i for i in intents if i.get("/S") == "/GTS_PDFA1" and "/DestOutputProfile" in i]
        if not srgb:
            problems.append("no PDF/A output intent")
        else:
            icc = srgb[0].DestOutputProfile.read_bytes()
            if icc[36:40] != b"acsp" or icc[16:20] != b"RGB " or int(srgb[0].DestOutputProfile.N) != 3:
                problems.append("output intent profile is not an RGB ICC profile")
        for obj in _dictionaries(doc):
            found = _FORBIDDEN_KEYS & set(obj.keys())
            if found:
                problems.append(f"forbidden keys {sorted(found)}")
            if obj.get("/S") in ("/JavaScript", "/Launch"):
                problems.append(f"action {obj.get('/S')}")
            if obj.get("/Subtype") == "/Image":  # PDF/A-2 6.2.8; the output intent is RGB
                if obj.get("/Interpolate") is True or "/Alternates" in obj or "/OPI" in obj:
                    problems.append("image with /Interpolate true, /Alternates or /OPI")
                if obj.get("/ColorSpace") not in ("/DeviceRGB", "/DeviceGray") and not isinstance(
                    obj.get("/ColorSpace"), pikepdf.Array
                ):
                    problems.append(f"image colour space {obj.get('/ColorSpace')}")
            is_gs = obj.get("/Type") == "/ExtGState" or "/CA" in obj or "/ca" in obj
            if is_gs and ("/TR" in obj or obj.get("/SMask", pikepdf.Name("/None")) != pikepdf.Name("/None")):
                problems.append("graphics state with a transfer function or soft mask")
            if obj.get("/Type") == "/Font":
                font = obj.DescendantFonts[0] if obj.get("/Subtype") == "/Type0" else obj
                desc = font.get("/FontDescriptor", {})
                if not any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                    problems.append(f"font {obj.get('/BaseFont')} not embedded")
        for page in doc.pages:
            for annot in page.get("/Annots", []):
                flags = int(annot.get("/F", 0))
                if not flags & 4 or flags & (1 | 2 | 32):
                    problems.append(f"annotation {annot.get('/T')} not printable (F={flags})")
                x1, y1, x2, y2 = (float(v) for v in annot.get("/Rect", [0, 0, 0, 0]))
                zero_size = x1 == x2 and y1 == y2  # PDF/A-2 exempts these (invisible signatures) from /AP
                if annot.get("/Subtype") == "/Widget" and "/AP" not in annot and not zero_size:
                    problems.append(f"widget {annot.get('/T')} has no appearance")
    if shutil.which("pdffonts"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.pdf"
            path.write_bytes(pdf)
            rows = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
        for row in rows.splitlines()[2:]:
            if row.split()[-5] != "yes":  # the "emb" column
                problems.append(f"pdffonts: not embedded: {row}")
    return problems


def test_result_is_pdfa_2b_before_and_after_both_signatures(signed: bytes) -> None:
    assert pdfa_2b_problems(render_result_pdf(content())) == []
    assert pdfa_2b_problems(signed) == []
    with pikepdf.open(io.BytesIO(signed)) as doc:
        assert len(doc.Root.AcroForm.Fields) == 2
        stamp_fonts = [o for o in doc.objects if isinstance(o, pikepdf.Dictionary) and o.get("/Subtype") == "/Type0"]
        assert stamp_fonts, "the visible stamps carry their own (embedded) font"


def test_pdfa_check_finds_what_breaks_pdfa(signed: bytes) -> None:
    with pikepdf.open(io.BytesIO(signed)) as doc:
        doc.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS="app.alert(1)")
        del doc.Root["/OutputIntents"]
        out = io.BytesIO()
        doc.save(out, encryption=pikepdf.Encryption(owner="o", user=""))
    problems = pdfa_2b_problems(out.getvalue())
    assert "encrypted" in problems and "no PDF/A output intent" in problems
    assert any("JavaScript" in p for p in problems)


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_every_revision_stays_pdfa_2b_through_signatures_and_timestamps(
    key_type: str, tmp_path: Path, tsa: tuple[str, bytes]
) -> None:
    """After each signature and timestamp, with EC keys (which pyHanko would raise to PDF 2.0) and RSA."""
    from pyhanko.keys import load_certs_from_pemder_data

    from signing.levels import Level, add_document_timestamp, signing_validation_context

    url, tsa_root = tsa
    pki = ensure_dev_pki(tmp_path, PASS, agency_name=AGENCY, key_type=key_type)  # type: ignore[arg-type]
    signed = issue_signed_result(content(), SigningKeys(pki, PASS), approver_name="Phạm Thị Hoa", agency_name=AGENCY,
                                 timestamp_url=url, level=Level.B_T)
    context = signing_validation_context([], list(load_certs_from_pemder_data(tsa_root)))
    stamped = add_document_timestamp(signed, url, context)
    stamped = add_document_timestamp(stamped, url, context)  # and the next renewal
    history = revisions(stamped)
    assert len(history) >= 7  # render, fields, approver, seal, then validation data and two timestamps
    for n, revision in enumerate(history):
        assert pdfa_2b_problems(revision) == [], n
    with pikepdf.open(io.BytesIO(stamped)) as doc:
        assert str(doc.Root.Version) == "/1.7" and doc.pdf_version == "1.4"
        assert set(doc.Root.Extensions.keys()) == {"/ESIC"}
    report = verify_pdf(stamped, [pki.root_cert, tsa_root], identities=ids(pki))
    assert report.ok, report
    assert [s.kind for s in report.signatures] == ["signature", "signature", "document_timestamp", "document_timestamp"]


def test_a_signed_pdfa_copy_keeps_its_info_matching_the_xmp(
    keys: SigningKeys, pki: DevPki, tsa: tuple[str, bytes]
) -> None:
    """A PDF/A file with a document information dictionary (as the OCR's searchable copy has): pyHanko
    rewrites /Info and the XMP separately; after the officer's signature and a timestamp both still agree."""
    from pyhanko.keys import load_certs_from_pemder_data

    from ocr.pdf import make_pdfa
    from signing.levels import add_document_timestamp, signing_validation_context
    from signing.signers import OFFICER_STAMP_BOX, sign_pdf

    with pikepdf.new() as doc:
        doc.add_blank_page(page_size=(595.28, 841.89))
        make_pdfa(doc, "Bản số hóa hồ sơ")
        out = io.BytesIO()
        doc.save(out)
    unsigned = out.getvalue()
    assert pdfa_2b_problems(unsigned) == []
    with pikepdf.open(io.BytesIO(unsigned)) as doc:
        assert "/Producer" in doc.docinfo and "/ModDate" in doc.docinfo
    url, tsa_root = tsa
    signed = sign_pdf(unsigned, keys.signer("officer"), field_name="CanBoTiepNhan", reason="Chứng thực bản số hóa",
                      location="l", signer_name="Nguyễn Văn An", role_label="Cán bộ tiếp nhận",
                      visible_box=OFFICER_STAMP_BOX, timestamp_url=url)
    stamped = add_document_timestamp(signed, url, signing_validation_context([], load_certs_from_pemder_data(tsa_root)))
    for revision in revisions(stamped):
        assert pdfa_2b_problems(revision) == []
    assert _info_xmp_problems_of(stamped) == []
    # pyHanko's rewrites of this XMP (producer, dates) are bookkeeping, not changes after signing.
    report = verify_pdf(stamped, [pki.root_cert, tsa_root], identities=ids(pki))
    assert report.ok, report


def _info_xmp_problems_of(pdf: bytes) -> list[str]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert doc.docinfo.get("/Title") == "Bản số hóa hồ sơ"  # the title is kept
        return _info_xmp_problems(doc, doc.open_metadata())


def test_pdfa_check_finds_a_pdf_2_0_signature_and_info_that_disagrees(signed: bytes) -> None:
    with pikepdf.open(io.BytesIO(signed)) as doc:
        doc.Root.Version = pikepdf.Name("/2.0")
        doc.docinfo["/Title"] = "Khác với XMP"
        out = io.BytesIO()
        doc.save(out)
    problems = pdfa_2b_problems(out.getvalue())
    assert any("catalog /Version 2.0" in p for p in problems) and any("/Title" in p for p in problems)


def test_pdfa_check_finds_images_that_break_pdfa(sealed: bytes) -> None:
    with pikepdf.open(io.BytesIO(sealed)) as doc:
        for obj in doc.objects:
            if isinstance(obj, pikepdf.Stream) and obj.get("/Subtype") == "/Image" and "/SMask" in obj:
                obj.Interpolate = True
                obj.ColorSpace = pikepdf.Name.DeviceCMYK
        out = io.BytesIO()
        doc.save(out)
    problems = pdfa_2b_problems(out.getvalue())
    assert any("Interpolate" in p for p in problems) and any("DeviceCMYK" in p for p in problems)


# --- the agency seal's image ----------------------------------------------------------------------


def seal_png(path: Path, size: int = 700) -> Path:
    """A red round seal with a transparent background (larger than stamps keep, to test scaling)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((10, 10, size - 10, size - 10), outline=(200, 20, 20, 255), width=size // 20)
    draw.regular_polygon((size // 2, size // 2, size // 6), 5, fill=(200, 20, 20, 255))
    img.save(path)
    return path


@pytest.fixture(scope="module")
def sealed(keys: SigningKeys, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    image = seal_png(tmp_path_factory.mktemp("seal") / "seal.png")
    return issue_signed_result(content(), keys, approver_name="Phạm Thị Hoa", agency_name=AGENCY, seal_image=image)


def _stamp_images(pdf: bytes, field: str) -> list[pikepdf.Stream]:
    """Image XObjects drawn by the visible stamp of signature field ``field``."""
    found = []
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (widget,) = [f for f in doc.Root.AcroForm.Fields if f.get("/T") == field]
        todo = [widget.AP.N]
        while todo:
            xobj = todo.pop()
            for child in xobj.get("/Resources", {}).get("/XObject", {}).values():
                if child.get("/Subtype") == "/Image":
                    found.append((int(child.Width), int(child.Height), "/SMask" in child,
                                  str(child.ColorSpace), len(child.read_bytes())))
                else:
                    todo.append(child)
    return found


def test_seal_image_is_in_the_seal_stamp_and_the_result_stays_pdfa(sealed: bytes, pki: DevPki) -> None:
    assert _stamp_images(sealed, "seal") == [(512, 512, True, "/DeviceRGB", 512 * 512 * 3)]  # scaled down
    assert _stamp_images(sealed, "approver") == []  # only the seal's stamp
    assert pdfa_2b_problems(sealed) == []
    assert verify_pdf(sealed, [pki.root_cert], identities=ids(pki)).ok
    assert f"Ký bởi: {AGENCY}" in flattened_text(sealed, 0)  # the text is still drawn over the image


def test_bad_seal_image_is_signing_failed(keys: SigningKeys, tmp_path: Path) -> None:
    from pipeline.core.errors import SigningFailed

    not_png = tmp_path / "seal.png"
    not_png.write_bytes(b"%PDF-1.7 this is not an image")
    for bad in (tmp_path / "missing.png", not_png, tmp_path):
        with pytest.raises(SigningFailed) as err:
            issue_signed_result(content(), keys, approver_name="Phạm Thị Hoa", agency_name=AGENCY, seal_image=bad)
        assert "seal image" in str(err.value) and "con dấu" in err.value.message_vi


def test_seal_image_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.core.settings import Settings

    monkeypatch.delenv("HOSO_SEAL_IMAGE", raising=False)
    assert Settings().seal_image is None
    monkeypatch.setenv("HOSO_SEAL_IMAGE", str(tmp_path / "seal.png"))
    assert Settings().seal_image == tmp_path / "seal.png"
