"""Stage 2: tell blank pages and QR separator sheets from content, and flag pages worth rescanning."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import zxingcpp
from PIL import Image

from ocr.models import PageKind

WORK_DPI = 100  # triage looks at a small copy of the page
BLANK_INK = 0.0015  # fraction of the page (inside the margins) that is ink
SEPARATOR_OTHER_INK = 0.02  # ink outside the QR code on a separator sheet
# A separator's QR code is big (~8% of the page on the public corpus); the QR code printed on ID cards
# and forms is small (~0.3%). The size keeps ID-card copies, which have little other ink, as content.
SEPARATOR_QR_AREA = 0.01
MARGIN = 0.06  # scanner borders and punch holes live here
MIN_DPI = 150
BLUR_VAR = 60.0  # variance of the Laplacian at WORK_DPI below which text is mush
MIN_CONTRAST = 60  # grey levels between paper and ink
FAINT_DELTA = 15  # a washed-out page still has marks this much darker than the paper...
FAINT_INK = 0.01  # ...over this fraction of the page
LOW_CONTRAST_VI = "Độ tương phản quá thấp (ảnh quá mờ nhạt hoặc quá tối); vui lòng quét lại."


@dataclass(frozen=True)
class Triage:
    kind: PageKind
    ink: float
    separator_payload: str | None = None
    rescan_reason: str | None = None


def to_gray(image: Image.Image) -> np.ndarray:
    """The page as an 8-bit greyscale array."""
    if image.mode == "L":
        return np.asarray(image)
    return np.asarray(image.convert("L"))


def _small(gray: np.ndarray, dpi: int) -> np.ndarray:
    scale = WORK_DPI / max(dpi, 1)
    if scale >= 1:
        return gray
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def ink_mask(gray: np.ndarray, delta: int = 50) -> np.ndarray:
    """Pixels darker than the local paper by ``delta``, scan specks removed (a small page, ~100 dpi)."""
    # The background (paper + uneven light) is what a large closing leaves; ink is what stands out of it.
    k = max(15, (min(gray.shape) // 40) | 1)
    background = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    diff = cv2.subtract(background, gray)
    mask = (diff > delta).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))


def _inner(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    my, mx = int(h * MARGIN), int(w * MARGIN)
    return mask[my : h - my, mx : w - mx]


def ink_coverage(gray: np.ndarray, dpi: int) -> float:
    """Fraction of the page inside the margins that is ink (robust to noise and dark borders)."""
    return float(_inner(ink_mask(_small(gray, dpi))).mean())


def find_qr(gray: np.ndarray) -> tuple[str, tuple[int, int, int, int]] | None:
    """The first QR code's payload and its box (x0, y0, x1, y1) in pixels, if one decodes."""
    qr_only = zxingcpp.BarcodeFormat.QRCode
    for barcode in zxingcpp.read_barcodes(gray, formats=qr_only):  # type: ignore[arg-type]
        if barcode.valid and barcode.text:
            p = barcode.position
            xs = [p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x]
            ys = [p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y]
            return barcode.text, (min(xs), min(ys), max(xs), max(ys))
    return None


def rescan_reason(gray: np.ndarray, dpi: int) -> str | None:
    """Why a clerk should rescan this page (in Vietnamese), or None if it is good enough."""
    if dpi < MIN_DPI:
        return f"Độ phân giải quá thấp ({dpi} dpi < {MIN_DPI} dpi); vui lòng quét lại ở 300 dpi."
    small = _small(gray, dpi)
    # Ink may be well under 1% of a page: compare the darkest 0.1% with the paper (the median).
    ink_level, paper = np.percentile(small, [0.1, 50])
    if paper - ink_level < MIN_CONTRAST:
        return LOW_CONTRAST_VI
    if float(cv2.Laplacian(small, cv2.CV_64F).var()) < BLUR_VAR:
        return "Ảnh bị nhòe, chữ không rõ nét; vui lòng quét lại."
    return None


def triage(gray: np.ndarray, dpi: int) -> Triage:
    """Classify a page as blank, separator or content, and say whether it should be rescanned."""
    small = _small(gray, dpi)
    mask = ink_mask(small)
    ink = float(_inner(mask).mean())
    if ink < BLANK_INK:
        # Nothing dark: a blank page, unless faint marks cover it (a washed-out scan of a real page).
        # Blurred first: heavy sensor noise alone would pass a threshold this low over half the page.
        smooth = cv2.GaussianBlur(small, (0, 0), 1.0)
        if float(_inner(ink_mask(smooth, FAINT_DELTA)).mean()) < FAINT_INK:
            return Triage("blank", ink)
        return Triage("content", ink, rescan_reason=LOW_CONTRAST_VI)
    scale = 1.0
    qr = find_qr(small)
    if qr is None and small.shape != gray.shape:
        qr, scale = find_qr(gray), small.shape[1] / gray.shape[1]
    if qr is not None:
        payload, box = qr
        x0, y0, x1, y1 = (int(v * scale) for v in box)
        pad = 4
        other = mask.copy()
        other[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = 0
        qr_area = (x1 - x0) * (y1 - y0) / mask.size
        if qr_area >= SEPARATOR_QR_AREA and float(_inner(other).mean()) < SEPARATOR_OTHER_INK:
            return Triage("separator", ink, separator_payload=payload)
    return Triage("content", ink, rescan_reason=rescan_reason(gray, dpi))
