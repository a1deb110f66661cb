"""PAdES signing by role with a visible Vietnamese stamp.

Keys come from the role's PKCS#12 file and are parsed once per process (:class:`SigningKeys`):
pyHanko's :class:`~pyhanko.sign.signers.SimpleSigner` otherwise re-parses the private key for every
signature, which makes B-B signing about three times slower.

A signed PDF/A-2b stays one: the file stays at PDF 1.7 (pyHanko would declare PDF 2.0 and the ISO
32002 extension for ECDSA keys, which PDF/A-2, a PDF 1.7-based standard, cannot carry), and its
document information keeps matching the XMP metadata through every revision pyHanko writes.
Stamps are placed and drawn for the page as displayed (/Rotate, crop box) and never over its text.
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
from typing import Any, Protocol
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
from pyhanko.pdf_utils.metadata.model import VENDOR
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import fields as sig_fields
from pyhanko.sign import signers
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.constants import ESIC_EXTENSION_1
from pyhanko.sign.timestamps import TimestampRequestError
from pyhanko.stamp import TextStamp, TextStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import CRLFetchError, PathBuildingError, PathValidationError
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from pipeline.core.errors import SigningFailed
from signing.changes import declares_pdfa
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
    "displayed_page",
    "load_stamp_image",
    "page_obstacles",
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

    def role_certificates(self) -> dict[str, list[asn1_x509.Certificate]]:
        """Each role's signing certificate, from its PKCS#12 file: the identities a verifier accepts."""
        out: dict[str, list[asn1_x509.Certificate]] = {}
        for role in ROLES:
            cert = self.signer(role).signing_cert
            out[role] = [cert] if cert is not None else []
        return out


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


#: Form matrices that turn a stamp so that it reads upright on a page displayed with /Rotate.
_UPRIGHT = {90: (0, 1, -1, 0, 0, 0), 180: (-1, 0, 0, -1, 0, 0), 270: (0, -1, 1, 0, 0, 0)}


class _TurnedTextStamp(TextStamp):
    """A text stamp whose appearance is turned against the page's /Rotate (see :class:`_StampStyle`)."""

    def __init__(self, *, rotation: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rotation = rotation

    def as_form_xobject(self) -> generic.StreamObject:
        xobj = super().as_form_xobject()
        if self._rotation in _UPRIGHT:
            xobj[generic.pdf_name("/Matrix")] = generic.ArrayObject(
                generic.NumberObject(v) for v in _UPRIGHT[self._rotation]
            )
        return xobj


@dataclass(frozen=True)
class _StampStyle(TextStampStyle):
    """The visible stamp, laid out for the page as displayed: on a page shown turned by /Rotate the widget's
    rectangle is turned too, and the appearance (laid out upright) gets a matrix that turns it back."""

    page_rotation: int = 0

    def create_stamp(self, writer: BasePdfFileWriter, box: BoxConstraints, text_params: dict) -> TextStamp:
        upright = BoxConstraints(width=box.height, height=box.width) if self.page_rotation in (90, 270) else box
        return _TurnedTextStamp(
            writer=writer, style=self, box=upright, text_params=text_params, rotation=self.page_rotation
        )


@lru_cache(maxsize=1)
def _stamp_style() -> _StampStyle:
    try:
        program = _latin_vietnamese_subset(FONT_REGULAR)
    except (OSError, ttLib.TTLibError) as exc:
        raise SigningFailed(
            f"Stamp font {FONT_REGULAR} is missing or unreadable (install fonts-noto-core)",
            "Thiếu phông chữ tiếng Việt cho dấu chữ ký.",
        ) from exc
    return _StampStyle(
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


def _style_with_image(image_path: Path | None) -> _StampStyle:
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


def _existing_field(writer: IncrementalPdfFileWriter, name: str) -> tuple[bool, bool, int]:
    """(exists, already_signed, rotation of its page) for the signature field ``name``."""
    for field_name, value, ref in sig_fields.enumerate_sig_fields(writer, with_name=name):
        if field_name == name:
            page = ref.get_object().get("/P")
            return True, value is not None, _rotation(page.get_object()) if page is not None else 0
    return False, False, 0


def _inherited(page: generic.DictionaryObject, key: str) -> Any:
    node: generic.DictionaryObject | None = page
    while node is not None:  # /Rotate, /MediaBox and /CropBox are inheritable from the page tree
        if key in node:
            return node[key]
        parent = node.get("/Parent")
        node = parent.get_object() if parent is not None else None
    return None


def _rotation(page: generic.DictionaryObject) -> int:
    """The page's /Rotate as 0, 90, 180 or 270 (clockwise when displayed)."""
    value = _inherited(page, "/Rotate")
    return int(value) % 360 // 90 * 90 if isinstance(value, int | float) else 0


class _PdfSigner(signers.PdfSigner):
    """A PdfSigner that does not raise a PDF 1.x file to PDF 2.0 for its key type.

    pyHanko declares the ISO/TS 32002 extension, and so PDF 2.0, for ECDSA keys on the usual curves;
    PAdES on PDF 1.7 (the ESIC extension) covers ECDSA with SHA-2 too, and a PDF/A-2 file must stay
    PDF 1.7. Anything else (EdDSA, SHA-3, a file already at 2.0) is left to pyHanko.
    """

    def register_extensions(self, pdf_out: BasePdfFileWriter, *, md_algorithm: str) -> None:
        try:
            mechanism = self.signer.get_signature_mechanism_for_digest(md_algorithm).signature_algo
        except (SigningError, ValueError):
            mechanism = None
        sha2 = md_algorithm in ("sha256", "sha384", "sha512")
        if mechanism == "ecdsa" and sha2 and pdf_out.output_version < (2, 0) and pdf_out.security_handler is None:
            pdf_out.ensure_output_version(version=(1, 7))
            pdf_out.register_extension(ESIC_EXTENSION_1)  # what pyHanko declares for PAdES below PDF 2.0
            return
        super().register_extensions(pdf_out, md_algorithm=md_algorithm)


def _keep_info_matching_xmp(writer: IncrementalPdfFileWriter) -> None:
    """Leave a PDF/A file's /Info only entries pyHanko does not rewrite on its own.

    pyHanko updates /ModDate and /Producer of /Info and the XMP metadata separately on every revision
    it writes (a producer of "X; pyHanko" against "pyHanko"; two clock readings), while PDF/A wants
    both to say the same: /Info keeps pyHanko's producer string and no modification date (the XMP has
    it), which pyHanko's later revisions (signatures, validation data, timestamps) leave alone.
    """
    if "/Info" not in writer.trailer or not declares_pdfa(writer.root):
        return
    ref = writer.trailer.raw_get("/Info")
    info = ref.get_object() if isinstance(ref, generic.IndirectObject) else None
    if not isinstance(info, generic.DictionaryObject):
        return
    if info.get("/Producer") == VENDOR and "/ModDate" not in info:
        return
    info[generic.pdf_name("/Producer")] = generic.TextStringObject(VENDOR)
    info.pop(generic.pdf_name("/ModDate"), None)
    writer.mark_update(ref)


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
    writer = _reader_writer(pdf)
    exists, signed, rotation = _existing_field(writer, field_name)
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
        rotation = _rotation(writer.find_page_for_modification(page)[0].get_object())
    stamp_style = dataclasses.replace(_style_with_image(stamp_image), page_rotation=rotation)
    _keep_info_matching_xmp(writer)

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
    pdf_signer = _PdfSigner(
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


Box = tuple[float, float, float, float]
#: Stamp sizes tried, largest first, when the full-size stamp finds no free place on the page.
_STAMP_SCALES = (1.0, 0.8, 0.6)
_GRID = 2.0  # points per cell of the occupancy grid
_TEXT_PAD = 2.0  # clearance kept around text, in points


class _DisplayedPage:
    """A page's visible area (crop box within the media box) as displayed, i.e. turned by /Rotate.

    Display coordinates: origin at the bottom left of the page as shown, x to the right, y upwards.
    """

    def __init__(self, crop: Box, rotation: int) -> None:
        self.crop, self.rotation = crop, rotation
        x0, y0, x1, y1 = crop
        turned = rotation in (90, 270)
        self.width, self.height = (y1 - y0, x1 - x0) if turned else (x1 - x0, y1 - y0)

    def _to_display(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.crop
        return {0: (x - x0, y - y0), 90: (y - y0, x1 - x), 180: (x1 - x, y1 - y), 270: (y1 - y, x - x0)}[
            self.rotation
        ]

    def _to_user(self, u: float, v: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.crop
        return {0: (x0 + u, y0 + v), 90: (x1 - v, y0 + u), 180: (x1 - u, y1 - v), 270: (x0 + v, y1 - u)}[
            self.rotation
        ]

    def to_display(self, box: Box) -> Box:
        (a, b), (c, d) = self._to_display(box[0], box[1]), self._to_display(box[2], box[3])
        return min(a, c), min(b, d), max(a, c), max(b, d)

    def to_user(self, box: Box) -> Box:
        (a, b), (c, d) = self._to_user(box[0], box[1]), self._to_user(box[2], box[3])
        return min(a, c), min(b, d), max(a, c), max(b, d)


def displayed_page(pdf: bytes, page: int = 0) -> _DisplayedPage:
    """The visible area and rotation of ``page`` (raises :class:`SigningFailed` for a bad PDF or page)."""
    writer = _reader_writer(pdf)
    _check_page(writer, page)
    node = writer.find_page_for_modification(page)[0].get_object()
    x0, y0, x1, y1 = _as_box(_inherited(node, "/MediaBox")) or (0.0, 0.0, 595.28, 841.89)
    crop = _as_box(_inherited(node, "/CropBox"))
    if crop is not None:  # what is shown is the crop box clipped to the media box
        x0, y0, x1, y1 = max(x0, crop[0]), max(y0, crop[1]), min(x1, crop[2]), min(y1, crop[3])
    if x1 <= x0 or y1 <= y0:
        raise SigningFailed(f"Page {page} has an empty visible area", "Trang đặt chữ ký không có vùng hiển thị.")
    return _DisplayedPage((x0, y0, x1, y1), _rotation(node))


def _normalised(box: list[float]) -> Box:
    return min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])


def _as_box(value: Any) -> Box | None:
    """A PDF rectangle as (left, bottom, right, top), or None if ``value`` is not one."""
    value = value.get_object() if isinstance(value, generic.IndirectObject) else value
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, int | float) for v in value):
        return None
    return _normalised([float(v) for v in value])


def page_obstacles(pdf: bytes, page: int = 0) -> list[Box]:
    """Boxes (user space) a stamp must not cover on ``page``: its text (pdfium's text rectangles, the
    invisible OCR layer included) and its annotations (e.g. earlier stamps)."""
    import pypdfium2 as pdfium

    boxes: list[Box] = []
    try:
        doc = pdfium.PdfDocument(pdf)
    except pdfium.PdfiumError as exc:
        raise SigningFailed(
            f"Cannot read the page's text to place the stamp ({exc})", "Không đọc được trang để đặt dấu chữ ký."
        ) from exc
    try:
        textpage = doc[page].get_textpage()
        try:
            for i in range(textpage.count_rects()):
                left, bottom, right, top = textpage.get_rect(i)
                boxes.append(_normalised([left, bottom, right, top]))
        finally:
            textpage.close()
    finally:
        doc.close()
    writer = _reader_writer(pdf)
    annots = writer.find_page_for_modification(page)[0].get_object().get("/Annots")
    annots = annots.get_object() if isinstance(annots, generic.IndirectObject) else annots
    for annot in annots if isinstance(annots, list) else []:
        rect = _as_box(annot.get_object().get("/Rect"))
        if rect is not None:
            boxes.append(rect)
    return boxes


def _free_place(shown: _DisplayedPage, obstacles: list[Box], w: float, h: float, margin: float) -> Box | None:
    """The free w × h box (display coordinates) nearest the top-right corner, or None.

    Candidate positions lie on a grid of :data:`_GRID` points anchored at the corner position; each is
    checked against every grid cell the box touches (a summed-area table of the cells obstacles
    touch), so a free answer is exact.
    """
    import numpy as np

    # Grid origin (ou, ov) such that the corner position itself is on the grid.
    ou, ov = (shown.width - margin - w) % _GRID, (shown.height - margin - h) % _GRID
    cols, rows = int(np.ceil((shown.width - ou) / _GRID)), int(np.ceil((shown.height - ov) / _GRID))
    used = np.zeros((rows + 1, cols + 1), dtype=np.int32)  # row 0 / col 0: padding of the table
    for box in obstacles:
        u0, v0, u1, v1 = shown.to_display(box)
        c0, r0 = int((u0 - ou - _TEXT_PAD) // _GRID), int((v0 - ov - _TEXT_PAD) // _GRID)
        c1, r1 = int((u1 - ou + _TEXT_PAD) // _GRID) + 1, int((v1 - ov + _TEXT_PAD) // _GRID) + 1
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, cols), min(r1, rows)
        if c0 < c1 and r0 < r1:
            used[r0 + 1 : r1 + 1, c0 + 1 : c1 + 1] = 1
    area = used.cumsum(0).cumsum(1)  # area[r, c]: used cells in rows < r and columns < c
    bw, bh = int(np.ceil(w / _GRID)) + 1, int(np.ceil(h / _GRID)) + 1  # cells a grid-aligned box touches
    lo_c, lo_r = int(np.ceil((margin - ou) / _GRID)), int(np.ceil((margin - ov) / _GRID))
    hi_c = min(round((shown.width - margin - w - ou) / _GRID), cols - bw)
    hi_r = min(round((shown.height - margin - h - ov) / _GRID), rows - bh)
    if hi_c < lo_c or hi_r < lo_r:
        return None
    r = np.arange(lo_r, hi_r + 1)[:, None]
    c = np.arange(lo_c, hi_c + 1)[None, :]
    covered = area[r + bh, c + bw] - area[r, c + bw] - area[r + bh, c] + area[r, c]
    free = np.argwhere(covered == 0)  # (row, col) offsets from (lo_r, lo_c)
    if not len(free):
        return None
    # Nearest the corner first (cells to the right edge plus cells to the top), then the higher one.
    cost = (hi_c - lo_c - free[:, 1]) + (hi_r - lo_r - free[:, 0])
    row, col = free[np.lexsort((-free[:, 0], cost))[0]]
    u, v = ou + float((col + lo_c) * _GRID), ov + float((row + lo_r) * _GRID)
    return u, v, u + w, v + h


def stamp_box_top_right(
    pdf: bytes, page: int = 0, *, width: float = 225.0, height: float = 72.0, margin: float = 14.0
) -> Box | None:
    """Where the desk officer's visible stamp goes on ``page`` (x1, y1, x2, y2 in the page's user space).

    Top right of the page as displayed (its /Rotate and crop box honoured: on a page shown turned, the
    box is turned too, and :func:`sign_pdf` turns the stamp with it), or the nearest place to it that
    covers no text and no annotation; a smaller stamp (down to 60 %) when no full-size place is free,
    and None — sign without a visible stamp — when the page has no room at all.
    """
    shown = displayed_page(pdf, page)
    obstacles = page_obstacles(pdf, page)
    for scale in _STAMP_SCALES:
        w = min(width * scale, shown.width - 2 * margin)
        h = min(height * scale, shown.height - 2 * margin)
        if w <= 0 or h <= 0:
            break
        place = _free_place(shown, obstacles, w, h, margin)
        if place is not None:
            return shown.to_user(place)
    log.warning("No room for a visible stamp on page %d without covering text; signing without one", page + 1)
    return None


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
