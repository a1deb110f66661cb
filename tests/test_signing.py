"""Dev PKI, PAdES signing by role and verification (all fixtures generated here)."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import socket
import stat
import subprocess
import threading
import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from reportlab.pdfgen import canvas

from pipeline.core.errors import ConfigurationError, InputCorrupt, InputEmpty, SigningFailed
from signing.identities import SignerIdentities
from signing.pki import ROLES, DevPki, ensure_dev_pki
from signing.signers import OFFICER_STAMP_BOX, SigningKeys, prepare_fields, sign_pdf, stamp_box_top_right
from signing.verify import REVOCATION_INFO, verify_pdf

PASS = b"test-passphrase"
SIGNER_NAME = "Nguyễn Thị Ánh Tuyết"
ROLE_LABEL = "Cán bộ tiếp nhận hồ sơ"


def make_pdf(text: str = "Hello dossier", pages: int = 1) -> bytes:
    """A small uncompressed A4 PDF, so that its page text is visible in the raw bytes."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(595.28, 841.89), pageCompression=0)
    for i in range(pages):
        c.drawString(72, 700, f"{text} {i + 1}")
        c.showPage()
    c.save()
    return buf.getvalue()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"), PASS)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("other-pki"), PASS)


@pytest.fixture(scope="module")
def keys(pki: DevPki) -> SigningKeys:
    return SigningKeys(pki, PASS)


@pytest.fixture(scope="module")
def signed(keys: SigningKeys) -> bytes:
    return sign_pdf(
        make_pdf(),
        keys.signer("officer"),
        field_name="officer",
        reason="Tiếp nhận hồ sơ",
        location="Hà Nội",
        signer_name=SIGNER_NAME,
        role_label=ROLE_LABEL,
        visible_box=OFFICER_STAMP_BOX,
    )


def roots(pki: DevPki) -> list[bytes | Path]:
    return [pki.root_cert]


def ids(pki: DevPki) -> SignerIdentities:
    """The dev PKI's signers by role (what ``hoso verify`` configures for itself)."""
    return SignerIdentities.from_config(pki.identity_files())


# --- dev PKI ---------------------------------------------------------------------------------------


def test_pki_files_chain_and_permissions(pki: DevPki) -> None:
    root = x509.load_pem_x509_certificate(pki.root_cert.read_bytes())
    inter = x509.load_pem_x509_certificate(pki.intermediate_cert.read_bytes())
    inter.verify_directly_issued_by(root)
    assert set(pki.p12) == set(ROLES)
    for path in [pki.root_cert, pki.intermediate_cert, *pki.p12.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    from cryptography.hazmat.primitives.serialization import pkcs12

    for role, path in pki.p12.items():
        key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), PASS)
        assert key is not None and cert is not None
        cert.verify_directly_issued_by(inter)
        assert inter in extra
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.content_commitment and not ku.key_cert_sign
        years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
        assert 2.9 < years < 3.1, role
    seal = pkcs12.load_key_and_certificates(pki.p12["seal"].read_bytes(), PASS)[1]
    assert seal is not None
    cn = seal.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    org = seal.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
    assert cn == org


def test_pki_is_idempotent_and_repairs_only_what_is_missing(tmp_path: Path) -> None:
    first = ensure_dev_pki(tmp_path, PASS)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")}
    second = ensure_dev_pki(tmp_path, PASS)
    assert second == first
    assert {p: p.read_bytes() for p in before} == before  # nothing rewritten

    first.p12["approver"].unlink()
    ensure_dev_pki(tmp_path, PASS)
    assert first.root_cert.read_bytes() == before[first.root_cert]
    assert first.p12["officer"].read_bytes() == before[first.p12["officer"]]
    assert first.p12["approver"].exists()
    assert first.p12["approver"].read_bytes() != before[first.p12["approver"]]


def test_pki_wrong_passphrase_does_not_replace_the_root(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, PASS)
    root = pki.root_cert.read_bytes()
    with pytest.raises(ConfigurationError) as err:
        ensure_dev_pki(tmp_path, b"not-the-passphrase")
    assert "not-the-passphrase" not in str(err.value)
    assert pki.root_cert.read_bytes() == root


# --- signing and verification -----------------------------------------------------------------------


def test_signed_pdf_verifies(signed: bytes, pki: DevPki) -> None:
    report = verify_pdf(signed, roots(pki), identities=ids(pki))
    assert report.ok, report
    (sig,) = report.signatures
    assert sig.field == "officer"
    assert sig.signer == "Cán bộ tiếp nhận"
    assert sig.intact and sig.trusted and sig.ok
    assert sig.coverage == "ENTIRE_FILE"
    assert sig.modification_level == "NONE"
    assert sig.signing_time is not None
    assert abs(dt.datetime.now(dt.UTC) - sig.signing_time) < dt.timedelta(minutes=10)
    assert REVOCATION_INFO in sig.problems
    assert b"/ETSI.CAdES.detached" in signed  # PAdES, not adbe.pkcs7.detached


def test_signing_keys_are_cached(keys: SigningKeys) -> None:
    assert keys.signer("officer") is keys.signer("officer")
    assert keys.signer("officer") is not keys.signer("seal")


def test_flipped_byte_in_signed_range_breaks_the_signature(signed: bytes, pki: DevPki) -> None:
    m = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", signed)
    assert m
    _, len1, _start2, _ = (int(x) for x in m.groups())
    pos = signed.index(b"Hello dossier")
    assert pos + 5 < len1  # inside the first covered range, not in /Contents
    tampered = bytearray(signed)
    tampered[pos] = ord("J")
    report = verify_pdf(bytes(tampered), roots(pki), identities=ids(pki))
    assert not report.ok
    assert not report.signatures[0].intact
    assert "thay đổi" in report.summary_vi


def test_certificate_from_another_root_is_not_trusted(other_pki: DevPki, pki: DevPki) -> None:
    foreign = SigningKeys(other_pki, PASS).signer("officer")
    out = sign_pdf(
        make_pdf(), foreign, field_name="officer", reason="r", location="l",
        signer_name=SIGNER_NAME, role_label=ROLE_LABEL,
    )
    report = verify_pdf(out, roots(pki), identities=ids(pki))
    assert not report.ok
    assert report.signatures[0].intact and not report.signatures[0].trusted
    assert verify_pdf(out, roots(other_pki), identities=ids(other_pki)).ok  # same file, its own root: fine


def test_incremental_change_of_page_content_after_signing_is_detected(signed: bytes, pki: DevPki) -> None:
    w = IncrementalPdfFileWriter(io.BytesIO(signed))
    stream = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 600 Td (APPROVED) Tj ET")
    w.add_stream_to_page(0, w.add_object(stream))
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(out.getvalue(), roots(pki), identities=ids(pki))
    assert not report.ok
    sig = report.signatures[0]
    assert sig.intact and sig.trusted  # the signed revision itself is untouched ...
    assert sig.modification_level == "OTHER"  # ... but what came after is not allowed
    assert sig.coverage == "ENTIRE_REVISION"


def test_prepared_fields_then_two_signatures_verify(keys: SigningKeys, pki: DevPki) -> None:
    pdf = prepare_fields(make_pdf(pages=2), [("a", 1, (50, 50, 250, 130)), ("b", 1, (300, 50, 550, 130))])
    one = sign_pdf(pdf, keys.signer("approver"), field_name="a", reason="Phê duyệt", location="Hà Nội",
                   signer_name="Lãnh đạo", role_label="Lãnh đạo phê duyệt", existing_fields_only=True)
    two = sign_pdf(one, keys.signer("seal"), field_name="b", reason="Đóng dấu", location="Hà Nội",
                   signer_name="Cơ quan", role_label="Con dấu", existing_fields_only=True)
    report = verify_pdf(two, roots(pki))
    assert report.ok, report
    assert [s.field for s in report.signatures] == ["a", "b"]
    assert report.signatures[0].modification_level == "FORM_FILLING"
    with pytest.raises(SigningFailed):  # a field can be signed once
        sign_pdf(two, keys.signer("seal"), field_name="b", reason="r", location="l",
                 signer_name="x", role_label="y")
    with pytest.raises(SigningFailed):
        sign_pdf(pdf, keys.signer("seal"), field_name="missing", reason="r", location="l",
                 signer_name="x", role_label="y", existing_fields_only=True)


def flattened_text(pdf: bytes, page_index: int = 0) -> str:
    """The text of a page with its widgets' appearances (the visible stamps) flattened into it, NFC."""
    doc = pdfium.PdfDocument(pdf)
    try:
        doc.init_forms()  # pdfium extracts a widget's appearance only once flattened into the page
        doc[page_index].flatten()
        flat = io.BytesIO()
        doc.save(flat)
    finally:
        doc.close()
    doc = pdfium.PdfDocument(flat.getvalue())
    try:
        return unicodedata.normalize("NFC", doc[page_index].get_textpage().get_text_range())
    finally:
        doc.close()


def test_visible_stamp_text_extracts_back_in_vietnamese(signed: bytes) -> None:
    text = flattened_text(signed)
    assert f"Ký bởi: {SIGNER_NAME}" in text
    assert ROLE_LABEL in text
    assert "Trung tâm Phục vụ hành chính công" in text
    assert re.search(r"Ký ngày: \d\d/\d\d/\d{4} \d\d:\d\d", text)


def _stamp_font(pdf: bytes, field: str) -> tuple[bytes, list[int]]:
    """(embedded font program, CIDs listed in /W) of the visible stamp of signature field ``field``."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    (sig,) = [s for s in reader.embedded_signatures if s.field_name == field]
    todo = [sig.sig_field["/AP"]["/N"]]
    while todo:  # the stamp's font sits in a nested form XObject's resources
        xobj = todo.pop().get_object()
        res = xobj.get("/Resources", generic.DictionaryObject()).get_object()
        todo.extend(res.get("/XObject", generic.DictionaryObject()).get_object().values())
        for font in res.get("/Font", generic.DictionaryObject()).get_object().values():
            cid_font = font.get_object()["/DescendantFonts"][0].get_object()
            program = cid_font["/FontDescriptor"]["/FontFile2"].get_object().data
            widths, cids = list(cid_font["/W"]), []
            for first, run in zip(widths[::2], widths[1::2], strict=True):
                cids.extend(range(int(first), int(first) + len(run)))
            return program, cids
    raise AssertionError("no stamp font")


def test_stamp_font_cache_keeps_every_name_drawable(keys: SigningKeys) -> None:
    """The compiled stamp font is cached per glyph set: a second name with other letters gets its own
    font file (with outlines for all its glyphs), and the same name again reuses the cached one."""
    from fontTools import ttLib

    from signing.signers import _stamp_style

    cache = _stamp_style().text_box_style.font.font_files  # type: ignore[attr-defined]
    names = ["Phạm Quỳnh Hương", "Đỗ Xuân Khải Ưng", "Phạm Quỳnh Hương"]
    seen = []  # (font program, CIDs, (cache hits, cache misses) during that signature)
    for name in names:
        hits, misses = cache.hits, cache.misses
        pdf = sign_pdf(make_pdf(), keys.signer("officer"), field_name="officer", reason="r", location="l",
                       signer_name=name, role_label=ROLE_LABEL, visible_box=OFFICER_STAMP_BOX)
        text = flattened_text(pdf)
        assert f"Ký bởi: {name}" in text and ROLE_LABEL in text
        program, cids = _stamp_font(pdf, "officer")
        tt = ttLib.TTFont(io.BytesIO(program))
        order, glyf = tt.getGlyphOrder(), tt["glyf"]
        space = tt.getBestCmap()[ord(" ")]
        for cid in cids:  # CIDToGIDMap /Identity: every glyph the stamp uses must have an outline
            assert cid < len(order) and (order[cid] == space or glyf[order[cid]].numberOfContours != 0), cid
        seen.append((program, set(cids), (cache.hits - hits, cache.misses - misses)))
    first, second, again = seen
    assert second[1] - first[1] and second[0] != first[0]  # other letters: its own font file
    assert second[2] == (0, 1)
    assert again[0] == first[0] and again[1] == first[1] and again[2] == (1, 0)  # same name: from the cache


def test_stamp_box_follows_the_page_size() -> None:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(612, 792))
    c.showPage()
    c.save()
    box = stamp_box_top_right(buf.getvalue())
    assert box is not None
    x1, y1, x2, y2 = box
    assert x2 <= 612 and y2 <= 792 and x1 > 612 / 2 and y1 > 792 / 2


# --- stamps on the page as displayed ----------------------------------------------------------------


def page_with_text(lines: list[tuple[float, float, str]], rotation: int = 0, *, size: float = 11,
                   crop: tuple[float, float, float, float] | None = None) -> bytes:
    """An A4 page shown upright with /Rotate ``rotation``: stored landscape for 90/270 (as a sideways scan
    kept as scanned), its text drawn turned so that it reads upright as displayed. ``lines``: (u, v, text)
    with (u, v) the text's start from the bottom left of the page as displayed."""
    stored = (842.0, 595.0) if rotation in (90, 270) else (595.0, 842.0)
    w, h = stored
    to_user = {0: lambda u, v: (u, v), 90: lambda u, v: (w - v, u), 180: lambda u, v: (w - u, h - v),
               270: lambda u, v: (v, h - u)}[rotation]
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=stored, pageCompression=0)
    c.setFont("Helvetica", size)
    for u, v, text in lines:
        c.saveState()
        c.translate(*to_user(u, v))
        c.rotate(rotation)  # counter-clockwise, against the clockwise /Rotate
        c.drawString(0, 0, text)
        c.restoreState()
    c.showPage()
    c.save()
    with pikepdf.open(io.BytesIO(buf.getvalue())) as pdf:
        page = pdf.pages[0]
        if rotation:
            page.Rotate = rotation
        if crop is not None:
            page.CropBox = pikepdf.Array(crop)
        out = io.BytesIO()
        pdf.save(out)
    return out.getvalue()


def rendered(pdf: bytes, *, forms: bool) -> np.ndarray:
    """The page as displayed (pdfium applies /Rotate and the crop box), 1 pixel per point, RGB."""
    doc = pdfium.PdfDocument(pdf)
    try:
        if forms:
            doc.init_forms()
        return np.asarray(doc[0].render(scale=1, may_draw_forms=forms).to_pil().convert("RGB")).astype(int)
    finally:
        doc.close()


def stamp_pixels(signed_pdf: bytes) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom; image rows from the top) of the stamp's red ink as displayed."""
    img = rendered(signed_pdf, forms=True)
    red = (img[..., 0] > 150) & (img[..., 1] < 110) & (img[..., 2] < 110)
    rows, cols = np.nonzero(red)
    assert len(rows), "no stamp drawn"
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def stamp_ink(signed_pdf: bytes) -> np.ndarray:
    """The stamp's red ink as displayed, cropped to it."""
    left, top, right, bottom = stamp_pixels(signed_pdf)
    img = rendered(signed_pdf, forms=True)[top:bottom, left:right]
    return (img[..., 0] > 150) & (img[..., 1] < 110) & (img[..., 2] < 110)


def sign_with_stamp(pdf: bytes, keys: SigningKeys, box: tuple[float, float, float, float] | None) -> bytes:
    return sign_pdf(pdf, keys.signer("officer"), field_name="CanBoTiepNhan", reason="Chứng thực bản số hóa",
                    location="l", signer_name=SIGNER_NAME, role_label=ROLE_LABEL, visible_box=box)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_stamp_on_a_turned_page_is_top_right_as_displayed_upright_and_off_text(
    rotation: int, keys: SigningKeys, pki: DevPki
) -> None:
    # Text at the top left and, on purpose, in every other corner but the displayed top right: where the
    # stamp would land if /Rotate were ignored there is text.
    lines = [(72, 790, "UY BAN NHAN DAN XA THU NGHIEM - so 12/QD"), (72, 400, "Noi dung van ban dong 1"),
             (72, 40, "Trang 1"), (420, 40, "bottom right footer"), (72, 600, "x" * 80)]
    pdf = page_with_text(lines, rotation)
    box = stamp_box_top_right(pdf)
    assert box is not None
    signed = sign_with_stamp(pdf, keys, box)
    assert verify_pdf(signed, roots(pki), identities=ids(pki)).ok
    left, top, right, bottom = stamp_pixels(signed)
    height, width = rendered(signed, forms=False).shape[:2]
    assert (width, height) == (595, 842)  # displayed upright
    assert width - 14 - 3 <= right <= width - 14 + 1 and top <= 842 * 0.1  # top right, beside the margin
    assert 220 <= right - left <= 228 and 70 <= bottom - top <= 75  # 225 x 72 as displayed, not turned
    text = rendered(pdf, forms=False)
    ink = (text.max(axis=2) < 140)[top - 1 : bottom + 1, left - 1 : right + 1]
    assert not ink.any(), "the stamp covers text"
    # The stamp reads upright: as displayed it looks like the same stamp on a page that is not turned.
    upright = stamp_ink(sign_with_stamp(page_with_text([]), keys, (355, 756, 580, 828)))
    turned = stamp_ink(signed)
    assert upright.shape == turned.shape
    assert (upright != turned).mean() < 0.02, (upright != turned).mean()
    assert (upright != np.rot90(turned, 2)).mean() > 0.05  # what a stamp upside down would look like


def test_stamp_keeps_off_text_in_the_corner_and_inside_the_crop_box(keys: SigningKeys) -> None:
    # A national motto block in the top right corner, as on most Vietnamese forms.
    motto = [(330, 800, "CONG HOA XA HOI CHU NGHIA VIET NAM"), (360, 785, "Doc lap - Tu do - Hanh phuc")]
    pdf = page_with_text(motto)
    box = stamp_box_top_right(pdf)
    assert box is not None
    x1, y1, x2, y2 = box
    assert x1 > 595 / 2 and y1 > 842 / 2 and y2 < 780  # still top right, just below the motto
    left, top, right, bottom = stamp_pixels(sign_with_stamp(pdf, keys, box))
    ink = (rendered(pdf, forms=False).max(axis=2) < 140)[top - 1 : bottom + 1, left - 1 : right + 1]
    assert not ink.any()
    # A crop box: only its area is shown, and the stamp goes in its top right.
    cropped = page_with_text([], crop=(40, 60, 500, 760))
    x1, y1, x2, y2 = stamp_box_top_right(cropped) or (0, 0, 0, 0)
    assert (x2, y2) == (500 - 14, 760 - 14) and x1 >= 40 and y1 >= 60
    # /Rotate together with a crop box.
    cropped = page_with_text([], 90, crop=(40, 60, 800, 560))
    x1, y1, x2, y2 = stamp_box_top_right(cropped) or (0, 0, 0, 0)
    assert (x1, y2) == (40 + 14, 560 - 14)  # displayed top right = stored top left when turned 90°


def test_a_page_without_room_gets_a_smaller_stamp_or_none(keys: SigningKeys, pki: DevPki) -> None:
    # Text everywhere but a gap of about 200 x 70 points at the top right: the stamp shrinks to fit in it.
    lines = [(20, v, "x" * 120) for v in range(20, 750, 12)]
    lines += [(20, v, "x" * 70) for v in range(750, 842, 12)]
    pdf = page_with_text(lines, size=10)
    box = stamp_box_top_right(pdf)
    assert box is not None
    assert 0.6 * 225 <= box[2] - box[0] < 225  # a smaller stamp, not over the text
    textpage = pdfium.PdfDocument(pdf)[0].get_textpage()
    rects = [textpage.get_rect(i) for i in range(textpage.count_rects())]
    assert len(rects) == len(lines)
    assert not any(r[0] < box[2] and box[0] < r[2] and r[1] < box[3] and box[1] < r[3] for r in rects)
    full = page_with_text([(10, v, "x" * 130) for v in range(10, 842, 10)], size=10)
    assert stamp_box_top_right(full) is None
    signed = sign_with_stamp(full, keys, None)  # the signature, without a visible stamp
    assert verify_pdf(signed, roots(pki), identities=ids(pki)).ok


@pytest.mark.skipif(shutil.which("pdfsig") is None, reason="poppler-utils not installed")
def test_pdfsig_agrees_on_the_digest(signed: bytes, tmp_path: Path) -> None:
    good = tmp_path / "good.pdf"
    good.write_bytes(signed)
    out = subprocess.run(["pdfsig", str(good)], capture_output=True, text=True, check=False).stdout
    assert "Signature Validation: Signature is Valid." in out
    assert "Cán bộ tiếp nhận" in out
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(signed.replace(b"Hello dossier", b"Jello dossier", 1))
    out = subprocess.run(["pdfsig", str(bad)], capture_output=True, text=True, check=False).stdout
    assert "Signature is Valid." not in out
    assert "Digest Mismatch" in out


# --- bad input ---------------------------------------------------------------------------------------


def test_unsigned_pdf_is_not_ok(pki: DevPki) -> None:
    report = verify_pdf(make_pdf(), roots(pki))
    assert not report.ok and report.signatures == []
    assert "không có chữ ký" in report.summary_vi


def test_verify_rejects_non_pdf_input(pki: DevPki) -> None:
    with pytest.raises(InputCorrupt):
        verify_pdf(b"GIF89a not a pdf at all", roots(pki))
    with pytest.raises(InputCorrupt):
        verify_pdf(make_pdf()[:300], roots(pki))  # truncated PDF
    with pytest.raises(InputEmpty):
        verify_pdf(b"", roots(pki))
    with pytest.raises(ConfigurationError):
        verify_pdf(make_pdf(), [b"not a certificate"])


def test_signing_errors_are_signing_failed(pki: DevPki, keys: SigningKeys) -> None:
    with pytest.raises(SigningFailed):
        sign_pdf(b"not a pdf", keys.signer("officer"), field_name="f", reason="r", location="l",
                 signer_name="x", role_label="y")
    with pytest.raises(SigningFailed):
        sign_pdf(make_pdf(), keys.signer("officer"), field_name="f", reason="r", location="l",
                 signer_name="x", role_label="y", visible_box=(10, 10, 100, 60), page=3)
    with pytest.raises(SigningFailed) as err:
        SigningKeys(pki, b"wrong-secret").signer("officer")
    assert "wrong-secret" not in str(err.value) and err.value.message_vi


# --- PAdES B-T against a local RFC 3161 responder ------------------------------------------------------


@pytest.fixture(scope="module")
def tsa() -> Iterator[tuple[str, bytes]]:
    """A throw-away TSA on 127.0.0.1 (its own root; pyHanko's test responder signs the tokens)."""
    from asn1crypto import tsp
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from pyhanko.keys import internal
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    now = dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Test TSA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )
    stamper = DummyTimeStamper(
        tsa_cert=internal.translate_pyca_cryptography_cert_to_asn1(cert),
        tsa_key=internal.translate_pyca_cryptography_key_to_asn1(key),
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            req = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            body = stamper.request_tsa_response(req).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", cert.public_bytes(serialization.Encoding.PEM)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_b_t_signature_with_timestamp(keys: SigningKeys, pki: DevPki, tsa: tuple[str, bytes]) -> None:
    url, tsa_root = tsa
    out = sign_pdf(make_pdf(), keys.signer("officer"), field_name="officer", reason="r", location="l",
                   signer_name=SIGNER_NAME, role_label=ROLE_LABEL, timestamp_url=url)
    report = verify_pdf(out, [pki.root_cert, tsa_root], identities=ids(pki))
    assert report.ok, report
    assert report.signatures[0].signing_time is not None
    # Without the TSA's root the signature itself is fine but its timestamp is not trusted.
    report = verify_pdf(out, [pki.root_cert], identities=ids(pki))
    assert not report.ok
    assert any("timestamp" in p for p in report.signatures[0].problems)


def test_unreachable_tsa_is_signing_failed(keys: SigningKeys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(SigningFailed):
        sign_pdf(make_pdf(), keys.signer("officer"), field_name="f", reason="r", location="l",
                 signer_name="x", role_label="y", timestamp_url=f"http://127.0.0.1:{port}/")


def test_sign_pdf_refuses_to_block_a_running_event_loop(keys: SigningKeys) -> None:
    import asyncio

    async def inside_loop() -> bytes:
        return sign_pdf(make_pdf(), keys.signer("officer"), field_name="f", reason="r", location="l",
                        signer_name="x", role_label="y")

    async def in_thread() -> bytes:
        return await asyncio.to_thread(
            sign_pdf, make_pdf(), keys.signer("officer"), field_name="f", reason="r", location="l",
            signer_name="x", role_label="y",
        )

    with pytest.raises(SigningFailed):
        asyncio.run(inside_loop())
    assert asyncio.run(in_thread()).startswith(b"%PDF-")
