"""PAdES signing by role with a visible Vietnamese stamp.

Keys come from the role's PKCS#12 file and are parsed once per process (:class:`SigningKeys`):
pyHanko's :class:`~pyhanko.sign.signers.SimpleSigner` otherwise re-parses the private key for every
signature, which makes B-B signing about three times slower.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from fontTools import subset, ttLib
from pyhanko.keys import internal as keys_internal
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.content import PdfContent, ResourceType
from pyhanko.pdf_utils.font.api import FontEngineFactory
from pyhanko.pdf_utils.font.opentype import CIDFontType2, GlyphAccumulator
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import AxisAlignment, BoxConstraints, Margins, SimpleBoxLayoutRule
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import fields as sig_fields
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps import TimestampRequestError
from pyhanko.stamp import TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import CRLFetchError, PathBuildingError, PathValidationError
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from pipeline.core.errors import SigningFailed
from signing.fast_cms import FastCmsMixin
from signing.levels import (
    Level,
    effective_level,
    forget_validation_contexts,
    signing_validation_context,
    timestamper_for,
)
from signing.pki import ROLES, DevPki, Role

__all__ = [
    "OFFICER_STAMP_BOX",
    "STAMP_IMAGE_MAX_PIXELS",
    "KeySource",
    "SigningKeys",
    "load_stamp_image",
    "prepare_fields",
    "sign_pdf",
    "stamp_box_top_right",
]

log = logging.getLogger(__name__)

FONT_DIR = Path("/usr/share/fonts/truetype/noto")
FONT_REGULAR = FONT_DIR / "NotoSans-Regular.ttf"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")

#: Desk officer's stamp: top-right of an A4 page 1 (x1, y1, x2, y2 in PDF points, origin bottom-left).
OFFICER_STAMP_BOX: tuple[float, float, float, float] = (355.0, 752.0, 580.0, 830.0)

# pyHanko fills %(ts)s itself (UTC); the local time goes in %(when)s.
_STAMP_TEXT = "Ký bởi: %(signer)s\n%(role)s\n%(agency)s\nKý ngày: %(when)s"


class _CachedKeySigner(FastCmsMixin, signers.SimpleSigner):
    """SimpleSigner that keeps the parsed private key instead of re-loading it per signature (and builds
    its CMS structures the cheaper way, see :mod:`signing.fast_cms`)."""

    def __init__(self, *, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, **kwargs) -> None:
        super().__init__(**kwargs)
        self._private_key = private_key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        hash_algo = get_pyca_cryptography_hash(digest_algorithm)
        key = self._private_key
        if mechanism == "ecdsa" and isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hash_algo))
        if mechanism == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hash_algo)
        return super().sign_raw(data, digest_algorithm)  # anything unusual: pyHanko's own path


def _load_signer(path: Path, passphrase: bytes, role: Role) -> _CachedKeySigner:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), passphrase)
    except OSError as exc:
        raise SigningFailed(
            f"Cannot read the {role} key file {path.name}: {exc.strerror}",
            "Không đọc được tệp khóa ký số.",
        ) from exc
    except ValueError as exc:
        # The exception text of cryptography never contains the passphrase, but do not relay it anyway.
        raise SigningFailed(
            f"Cannot open the {role} key file {path.name} (wrong passphrase or damaged file)",
            "Không mở được tệp khóa ký số (sai mật khẩu hoặc tệp hỏng).",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or cert is None:
        raise SigningFailed(
            f"The {role} key file {path.name} holds no usable EC/RSA key and certificate",
            "Tệp khóa ký số không chứa khóa và chứng thư hợp lệ.",
        )
    registry = SimpleCertificateStore()
    registry.register_multiple(keys_internal.translate_pyca_cryptography_cert_to_asn1(c) for c in extra)
    return _CachedKeySigner(
        private_key=key,
        signing_cert=keys_internal.translate_pyca_cryptography_cert_to_asn1(cert),
        signing_key=keys_internal.translate_pyca_cryptography_key_to_asn1(key),
        cert_registry=registry,
    )


class KeySource(Protocol):
    """Where each role's signer comes from: :class:`SigningKeys` (PKCS#12 files) or a PKCS#11 token."""

    def signer(self, role: Role) -> signers.Signer: ...


class SigningKeys:
    """Each role's signer, loaded from the dev PKI on first use and kept for the process."""

    def __init__(self, pki: DevPki, passphrase: bytes) -> None:
        self._pki = pki
        self._passphrase = passphrase
        self._cache: dict[Role, signers.Signer] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the passphrase
        return f"SigningKeys({self._pki.directory})"

    def signer(self, role: Role) -> signers.Signer:
        """Return the (cached) pyHanko signer of ``role``."""
        if role not in ROLES:
            raise SigningFailed(f"Unknown signing role {role!r}", "Vai trò ký số không hợp lệ.")
        with self._lock:
            cached = self._cache.get(role)
            if cached is None:
                cached = self._cache[role] = _load_signer(self._pki.p12[role], self._passphrase, role)
            return cached


# ASCII, Latin-1, the rest of Vietnamese (Ă Đ Ĩ Ũ Ơ Ư, the precomposed block U+1EA0–1EF9, combining
# marks), typographic punctuation, "₫" and "№". Fewer glyphs make every stamp's subsetting cheaper.
_STAMP_UNICODES = (
    set(range(0x20, 0x7F)) | set(range(0xA0, 0x100))
    | {0x102, 0x103, 0x110, 0x111, 0x128, 0x129, 0x168, 0x169, 0x1A0, 0x1A1, 0x1AF, 0x1B0}
    | set(range(0x300, 0x324)) | set(range(0x1EA0, 0x1EFA))
    | {0x2013, 0x2014, 0x2018, 0x2019, 0x201C, 0x201D, 0x2026, 0x20AB, 0x20AC, 0x2116}
)
#: OpenType features kept for HarfBuzz: kerning and mark positioning (decomposed input).
_STAMP_FEATURES = ["kern", "mark", "mkmk", "ccmp"]


#: Always in the embedded subset, so that the subset (and :class:`_FontFileCache` key) does not depend on
#: the signing time: an officer's stamps then all embed the same font file.
_TIME_CHARS = "0123456789 /:"


class _FontFileCache:
    """Compiled, compressed font-file streams by glyph set (a bounded LRU, per process, thread-safe).

    pyHanko compiles a fresh font subset for every stamp (fontTools, ~40 % of a B-B signature); the
    bytes depend only on the font program and the glyphs used, and one officer's stamps use the same
    glyphs every time (:data:`_TIME_CHARS` are always included).
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[frozenset[int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: frozenset[int]) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            return data

    def put(self, key: frozenset[int], data: bytes) -> None:
        with self._lock:
            self._entries[key] = data
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class _CachedFontFile(CIDFontType2):
    """CIDFontType2 whose FontFile2 stream is already compiled and Flate-compressed."""

    font_file: bytes

    def set_font_file(self, writer: BasePdfFileWriter) -> generic.IndirectObject:
        stream = generic.StreamObject(
            {generic.pdf_name("/Filter"): generic.pdf_name("/FlateDecode")}, encoded_data=self.font_file
        )
        ref = writer.add_object(stream)
        self._font_descriptor[generic.pdf_name("/FontFile2")] = ref
        return ref


class _StampGlyphs(GlyphAccumulator):
    """GlyphAccumulator that embeds its subset from (or into) a :class:`_FontFileCache`."""

    def __init__(self, *, cache: _FontFileCache, always_gids: tuple[int, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        # pyHanko picks CIDFontType2 for a TrueType program (ours): only the font file is swapped.
        if type(self.cidfont_obj) is not CIDFontType2:
            raise TypeError("the stamp font must be a TrueType (glyf) font")
        self.cidfont_obj.__class__ = _CachedFontFile
        self._cache = cache
        self._always_gids = always_gids

    def prepare_write(self) -> None:
        if self._write_prepared:
            return
        for gid in self._always_gids:  # widths too, so that any later use of these glyphs is covered
            self._get_cid_and_width(gid)
        key = frozenset(self._glyphs)
        data = self._cache.get(key)
        if data is None:
            self._extract_subset()  # destructive: self.tt becomes the subset
            buf = BytesIO()
            self.tt.save(buf)
            data = _flate(buf.getvalue())
            self._cache.put(key, data)
        self._subset_created = True
        assert isinstance(self.cidfont_obj, _CachedFontFile)
        self.cidfont_obj.font_file = data
        super().prepare_write()


class _FontFactory(FontEngineFactory):
    """Embeds subsets of an in-memory font program, compiled once per glyph set (:class:`_FontFileCache`).

    The font is cut down to Latin + Vietnamese once per process: pyHanko subsets the font again for
    every new glyph set, and doing that from the full Noto Sans (with its large layout tables) costs
    ~0.4 s.
    """

    def __init__(self, font_program: bytes, font_size: int) -> None:
        self._program = font_program
        self._font_size = font_size
        self.font_files = _FontFileCache()
        with ttLib.TTFont(BytesIO(font_program)) as tt:
            cmap = tt.getBestCmap()
            self._always_gids = tuple(sorted({tt.getGlyphID(cmap[ord(c)]) for c in _TIME_CHARS}))

    def create_font_engine(self, writer: BasePdfFileWriter, obj_stream=None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs:
            obj_stream = writer.prepare_object_stream()
        engine = _StampGlyphs(
            writer=writer, font_handle=BytesIO(self._program), font_size=self._font_size,
            obj_stream=obj_stream, cache=self.font_files, always_gids=self._always_gids,
        )
        # HarfBuzz has already read the layout tables for shaping; pyHanko drops them from the embedded
        # subset anyway, but fontTools would first decompile them (~0.15 s per stamp).
        for tag in ("GPOS", "GSUB", "GDEF"):
            if tag in engine.tt:
                del engine.tt[tag]
        return engine


def _latin_vietnamese_subset(path: Path) -> bytes:
    options = subset.Options()
    options.layout_features = _STAMP_FEATURES
    options.name_IDs = ["*"]
    options.hinting = False
    options.notdef_outline = True
    options.glyph_names = True  # post format 2: glyph names need not be rebuilt from cmap on every load
    with ttLib.TTFont(path, lazy=False) as font:
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=_STAMP_UNICODES)
        subsetter.subset(font)
        out = BytesIO()
        font.save(out)
    return out.getvalue()


@lru_cache(maxsize=1)
def _stamp_style() -> TextStampStyle:
    try:
        program = _latin_vietnamese_subset(FONT_REGULAR)
    except (OSError, ttLib.TTLibError) as exc:
        raise SigningFailed(
            f"Stamp font {FONT_REGULAR} is missing or unreadable (install fonts-noto-core)",
            "Thiếu phông chữ tiếng Việt cho dấu chữ ký.",
        ) from exc
    return TextStampStyle(
        stamp_text=_STAMP_TEXT,
        border_width=1,
        border_color=(0.75, 0.05, 0.05),
        text_box_style=TextBoxStyle(
            font=_FontFactory(program, font_size=10),
            font_size=10,
            leading=13,
            text_color=(0.75, 0.05, 0.05),
        ),
        inner_content_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MIN,
            y_align=AxisAlignment.ALIGN_MID,
            margins=Margins.uniform(5),
        ),
    )


#: Longest side, in pixels, of an image embedded in a stamp (larger images are scaled down).
STAMP_IMAGE_MAX_PIXELS = 512


@dataclass(frozen=True)
class _EncodedImage:
    """An image as Flate-compressed DeviceRGB samples plus an optional 8-bit alpha (soft mask)."""

    width: int
    height: int
    rgb: bytes
    alpha: bytes | None


def _flate(data: bytes) -> bytes:
    stream = generic.StreamObject(stream_data=data)
    stream.compress()
    return stream.encoded_data


@lru_cache(maxsize=4)
def _encoded_image(path: Path, mtime_ns: int, size: int) -> _EncodedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            has_alpha = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
            img = opened.convert("RGBA" if has_alpha else "RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise SigningFailed(
            f"The seal image {path} cannot be read as an image ({type(exc).__name__})",
            "Không đọc được ảnh con dấu (tệp hỏng hoặc không phải ảnh PNG).",
        ) from exc
    img.thumbnail((STAMP_IMAGE_MAX_PIXELS, STAMP_IMAGE_MAX_PIXELS))  # keeps the aspect ratio
    alpha = None
    if img.mode == "RGBA":
        alpha = _flate(img.getchannel("A").tobytes())
        img = img.convert("RGB")
    return _EncodedImage(img.width, img.height, _flate(img.tobytes()), alpha)


def load_stamp_image(path: Path) -> _EncodedImage:
    """The image at ``path`` ready to embed in stamps (RGB + alpha, at most
    :data:`STAMP_IMAGE_MAX_PIXELS` on its longest side), decoded once per file version.

    DeviceRGB matches the e-result's sRGB output intent, so the file stays PDF/A-2b.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise SigningFailed(
            f"The seal image {path} cannot be read ({exc.strerror})",
            "Không tìm thấy hoặc không đọc được tệp ảnh con dấu.",
        ) from exc
    if not path.is_file():
        raise SigningFailed(f"The seal image {path} is not a file", "Đường dẫn ảnh con dấu không phải là tệp.")
    return _encoded_image(path, stat.st_mtime_ns, stat.st_size)


class _StampImage(PdfContent):
    """An image XObject (alpha as a soft mask) written from pre-encoded samples; one per signature,
    since pyHanko keeps the writer and resources on the content object."""

    def __init__(self, image: _EncodedImage) -> None:
        super().__init__(box=BoxConstraints(image.width, image.height))
        self._image = image

    def _xobject(self, writer: BasePdfFileWriter) -> generic.IndirectObject:
        img = self._image

        def stream(colour_space: str, data: bytes) -> generic.StreamObject:
            return generic.StreamObject(
                {
                    generic.pdf_name("/Type"): generic.pdf_name("/XObject"),
                    generic.pdf_name("/Subtype"): generic.pdf_name("/Image"),
                    generic.pdf_name("/Width"): generic.NumberObject(img.width),
                    generic.pdf_name("/Height"): generic.NumberObject(img.height),
                    generic.pdf_name("/ColorSpace"): generic.pdf_name(colour_space),
                    generic.pdf_name("/BitsPerComponent"): generic.NumberObject(8),
                    generic.pdf_name("/Filter"): generic.pdf_name("/FlateDecode"),
                },
                encoded_data=data,
            )

        main = stream("/DeviceRGB", img.rgb)
        if img.alpha is not None:
            main[generic.pdf_name("/SMask")] = writer.add_object(stream("/DeviceGray", img.alpha))
        return writer.add_object(main)

    def render(self) -> bytes:
        self.set_resource(
            category=ResourceType.XOBJECT, name=generic.pdf_name("/StampImg"),
            value=self._xobject(self._ensure_writer),
        )
        return b"q %g 0 0 %g 0 0 cm /StampImg Do Q" % (self.box.width, self.box.height)


def _style_with_image(image_path: Path | None) -> TextStampStyle:
    style = _stamp_style()
    if image_path is None:
        return style
    return dataclasses.replace(
        style,
        background=_StampImage(load_stamp_image(image_path)),
        background_opacity=0.85,
        background_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MAX, y_align=AxisAlignment.ALIGN_MID, margins=Margins.uniform(3),
        ),
    )


def _subject_attr(cert: asn1_x509.Certificate, attr: str) -> str:
    value = cert.subject.native.get(attr, "")
    return value if isinstance(value, str) else ", ".join(value)


def _reader_writer(pdf: bytes) -> IncrementalPdfFileWriter:
    if not pdf:
        raise SigningFailed("Cannot sign an empty file", "Không ký được: tệp rỗng.")
    try:
        writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise SigningFailed(
            f"Cannot sign: the input is not a readable PDF ({exc})",
            "Không ký được: tệp không phải PDF hợp lệ.",
        ) from exc
    if writer.prev.encrypted:
        raise SigningFailed("Cannot sign an encrypted PDF", "Không ký được tệp PDF có mật khẩu.")
    return writer


def _check_page(writer: IncrementalPdfFileWriter, page: int) -> None:
    pages = int(writer.root["/Pages"]["/Count"])
    if not 0 <= page < pages:
        raise SigningFailed(
            f"Page index {page} is out of range (document has {pages} pages)",
            "Vị trí đặt chữ ký nằm ngoài số trang của tài liệu.",
        )


def _int_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise SigningFailed(f"Invalid signature box {box}", "Vị trí ô chữ ký không hợp lệ.")
    return x1, y1, x2, y2


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _existing_field(writer: IncrementalPdfFileWriter, name: str) -> tuple[bool, bool]:
    """(exists, already_signed) for the signature field ``name``."""
    for field_name, value, _ref in sig_fields.enumerate_sig_fields(writer, with_name=name):
        if field_name == name:
            return True, value is not None
    return False, False


def sign_pdf(
    pdf: bytes,
    signer: signers.Signer,
    *,
    field_name: str,
    reason: str,
    location: str,
    signer_name: str,
    role_label: str,
    visible_box: tuple[float, float, float, float] | None = None,
    page: int = 0,
    timestamp_url: str | None = None,
    existing_fields_only: bool = False,
    level: Level | None = None,
    certify: MDPPerm | None = None,
    trust_roots: list[asn1_x509.Certificate] | None = None,
    stamp_image: Path | None = None,
) -> bytes:
    """Sign ``pdf`` as an incremental update at PAdES ``level``.

    ``level`` defaults to B-T when ``timestamp_url`` is given, else B-B; a level the TSA or the
    certificate cannot support is lowered (see :func:`signing.levels.effective_level`). B-LT and B-LTA
    fetch OCSP/CRL data while signing and embed it (``trust_roots`` anchor that collection); B-LTA adds
    a document timestamp. ``certify`` makes this a certification signature with those DocMDP
    permissions; it must be the document's first signature.

    The signature goes into the field ``field_name``: an existing empty field (e.g. from
    :func:`prepare_fields`) keeps its position; otherwise a new field is created on ``page`` at
    ``visible_box`` (invisible when ``visible_box`` is None). The visible stamp shows the signer, the
    role, the agency (the certificate's organisation) and the signing time in Asia/Ho_Chi_Minh, in an
    embedded Noto Sans subset; ``stamp_image`` (e.g. the agency's seal, a PNG) is drawn on its right
    behind the text. Every failure raises :class:`pipeline.core.errors.SigningFailed`.
    """
    if _in_event_loop():
        raise SigningFailed("sign_pdf() cannot run inside an event loop; call it via asyncio.to_thread()")
    stamp_style = _style_with_image(stamp_image)
    writer = _reader_writer(pdf)
    exists, signed = _existing_field(writer, field_name)
    if signed:
        raise SigningFailed(
            f"Signature field {field_name!r} is already signed", "Ô chữ ký này đã được ký trước đó."
        )
    if existing_fields_only and not exists:
        raise SigningFailed(
            f"Signature field {field_name!r} does not exist in the document",
            "Tài liệu không có ô chữ ký cần ký.",
        )
    new_field = None
    if not exists and visible_box is not None:
        _check_page(writer, page)
        box = _int_box(visible_box)
        new_field = sig_fields.SigFieldSpec(sig_field_name=field_name, on_page=page, box=box)

    cert = signer.signing_cert
    requested = level or (Level.B_T if timestamp_url else Level.B_B)
    level = effective_level(requested, timestamp_url, cert)
    if certify is not None and any(True for _ in sig_fields.enumerate_sig_fields(writer, filled_status=True)):
        raise SigningFailed(
            "A certification signature must be the document's first signature",
            "Chữ ký chứng thực phải là chữ ký đầu tiên của tài liệu.",
        )
    validation_context = None
    if level >= Level.B_LT:
        extra = list(signer.cert_registry) if signer.cert_registry is not None else []
        validation_context = signing_validation_context(extra, trust_roots or ())
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        reason=reason,
        location=location,
        name=signer_name,
        md_algorithm="sha256",
        subfilter=sig_fields.SigSeedSubFilter.PADES,
        certify=certify is not None,
        docmdp_permissions=certify or MDPPerm.FILL_FORMS,
        embed_validation_info=level >= Level.B_LT,
        use_pades_lta=level == Level.B_LTA,
        validation_context=validation_context,
    )
    timestamper = timestamper_for(timestamp_url) if level >= Level.B_T else None
    pdf_signer = signers.PdfSigner(
        meta, signer, timestamper=timestamper, stamp_style=stamp_style, new_field_spec=new_field
    )
    text_params = {
        "signer": unicodedata.normalize("NFC", signer_name),
        "role": unicodedata.normalize("NFC", role_label),
        "agency": unicodedata.normalize("NFC", _subject_attr(cert, "organization_name")) if cert else "",
        "when": dt.datetime.now(TZ).strftime("%d/%m/%Y %H:%M"),
    }
    out = BytesIO()
    size_key = (cert.sha256 if cert else b"", timestamper is not None, level)

    async def sign() -> None:
        if validation_context is not None and cert is not None:
            await _fetch_signer_crls(validation_context, cert)
        await pdf_signer.async_sign_pdf(
            writer, existing_fields_only=exists, appearance_text_params=text_params, output=out,
            bytes_reserved=_RESERVED_SIZES.get(size_key),
        )

    try:
        asyncio.run(sign())
    except TimestampRequestError as exc:
        raise SigningFailed(
            f"Signing failed: no timestamp from {timestamp_url} ({exc})",
            "Không lấy được dấu thời gian từ máy chủ cấp dấu thời gian; vui lòng thử lại.",
        ) from exc
    except (PathBuildingError, PathValidationError) as exc:
        forget_validation_contexts()  # it may hold the failed fetch; the next attempt starts afresh
        raise SigningFailed(
            f"Signing at {level} failed: cannot validate the signer's certificate "
            f"to collect revocation data ({type(exc).__name__}: {exc})",
            "Không ký được: không kiểm tra được chứng thư ký số (thu hồi/chuỗi chứng thư).",
        ) from exc
    except (SigningError, PdfError, ValueError, KeyError, OSError) as exc:
        raise SigningFailed(f"Signing failed ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("pkcs11"):  # python-pkcs11 is optional: match by module
            raise SigningFailed(
                f"The signing token refused the operation ({type(exc).__name__})",
                "Thiết bị ký số (token) từ chối thao tác ký.",
            ) from None
        raise
    signed_pdf = out.getvalue()
    if size_key not in _RESERVED_SIZES:
        _RESERVED_SIZES[size_key] = _reserved_size(signed_pdf, field_name)
    return signed_pdf


async def _fetch_signer_crls(context: ValidationContext, cert: asn1_x509.Certificate) -> None:
    """Fetch the signer's CRLs into ``context``, so that B-LT and up embed them next to its OCSP response.

    pyHanko reads a CRL only when OCSP gives no answer; but OCSP responses are valid for minutes to
    days and CRLs usually longer, and a verifier needs one of them still valid (with the archive
    timestamps) to accept the signature later. A failure here is left to pyHanko's revocation check,
    which needs only one of the two.
    """
    if not cert.crl_distribution_points:
        return
    try:
        await context.revinfo_manager.fetch_crls(cert)
    except CRLFetchError as exc:
        log.warning("Cannot fetch the signer's CRL to embed (%s); relying on OCSP", exc)


# pyHanko sizes the signature container with a dry-run signature (a quarter of a B-B signature's cost);
# its estimate (with a 50 % margin for TSA responses) is the same for every signature of one signer at
# one level, so it is measured once per process from the first signed file.
_RESERVED_SIZES: dict[tuple[bytes, bool, Level], int] = {}


def _reserved_size(signed: bytes, field_name: str) -> int:
    from pyhanko.pdf_utils.reader import PdfFileReader

    sigs = PdfFileReader(BytesIO(signed), strict=False).embedded_signatures
    ours = next(s for s in sigs if s.field_name == field_name)
    return 2 * len(ours.sig_object["/Contents"])  # hex digits in the file


def stamp_box_top_right(
    pdf: bytes, page: int = 0, *, width: float = 225.0, height: float = 72.0, margin: float = 14.0
) -> tuple[float, float, float, float]:
    """A stamp box in the top-right corner of ``page`` (the desk officer's stamp), from its crop box.

    Page rotation is not taken into account: pages coming out of OCR are upright.
    """
    writer = _reader_writer(pdf)
    _check_page(writer, page)
    node = writer.find_page_for_modification(page)[0].get_object()
    box = None
    while box is None and node is not None:  # both boxes are inheritable from the page tree
        box = node.get("/CropBox") or node.get("/MediaBox")
        node = node.get("/Parent")
    if box is None:
        box = [0, 0, 595.28, 841.89]
    x0, y0, x1, y1 = (float(v) for v in box)
    left, right = min(x0, x1), max(x0, x1)
    bottom, top = min(y0, y1), max(y0, y1)
    w = min(width, right - left - 2 * margin)
    h = min(height, top - bottom - 2 * margin)
    return (right - margin - w, top - margin - h, right - margin, top - margin)


def prepare_fields(pdf: bytes, fields: list[tuple[str, int, tuple[float, float, float, float]]]) -> bytes:
    """Add empty signature fields ``(name, page, box)`` in one incremental update.

    Create every field before the first signature: adding fields later is allowed but keeps the
    document's history simpler to audit this way. Existing fields of the same name are left alone.
    """
    writer = _reader_writer(pdf)
    for name, page, box in fields:
        _check_page(writer, page)
        if _existing_field(writer, name)[0]:
            continue
        try:
            spec = sig_fields.SigFieldSpec(sig_field_name=name, on_page=page, box=_int_box(box))
            sig_fields.append_signature_field(writer, spec)
        except (PdfError, ValueError) as exc:
            raise SigningFailed(f"Cannot add signature field {name!r}: {exc}") from exc
    out = BytesIO()
    writer.write(out)
    return out.getvalue()
