"""Stage 3: turn a page upright and level, and make a clean greyscale copy for Tesseract.

Orientation is decided in two steps. Sideways (90/270) against upright (0/180) comes from text-line
structure: after a closing with a horizontal kernel sized from the estimated character height, the
characters of a line merge into long thin blobs; on a page lying sideways they do so only with a vertical
kernel. Sizing the kernel from the characters makes this independent of scale, dpi and font; ruling lines
(tables, forms) are taken out first. Upright against upside-down (0/180) is left to recognition
(:mod:`ocr.engine` compares Tesseract confidences on a strip of a few lines, then on the page if needed),
because OSD alone costs about a second a page and fails on sparse pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from ocr.triage import ink_mask, to_gray

Rotation = Literal[0, 90, 180, 270]

SKEW_DPI = 150  # deskew and orientation work on a copy at this resolution
MAX_SKEW = 15.0
OCR_DPI = 300
# Upscaling 150-200 dpi pages to 300 dpi made CER worse (30-page samples, bench/ocr_sample.py: public
# 0.082 -> 0.072 without it, harder variants 0.072 -> 0.069) and cost time: only pages below this are.
UPSCALE_BELOW_DPI = 150
# Text-line length across / down the page: >= 1.7 either way on every public page at scales 0.5-1.4;
# closer to 1 than this, recognition confidence decides between all four turns (see ocr.engine).
AMBIGUOUS_RATIO = 1.4
_MAX_POINTS = 150_000
_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,  # counter-clockwise: undoes content turned 90° clockwise
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Geometry:
    """How a page was turned: ``rotation`` undone first (multiples of 90°), then ``skew`` (degrees, CCW)."""

    rotation: Rotation
    skew: float
    sideways_ratio: float  # text-line length across / down the page; > 1 means lines run across
    other_skew: float = 0.0  # the skew to use if the page turns out to lie the other way (by a quarter)
    strip: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) px: a band of text lines, for a quick OCR


@dataclass(frozen=True)
class TextLines:
    """Text-line blobs of a page's work copy, found along one axis."""

    char_px: float  # estimated character size at the work scale
    length: float  # total length of the line blobs
    boxes: np.ndarray  # (n, 4) x, y, w, h of each blob, in the (possibly transposed) work copy


def _work_mask(gray: np.ndarray, dpi: int) -> tuple[np.ndarray, float]:
    """Ink mask of a SKEW_DPI copy with the rim cleared, and the scale from the page to that copy."""
    scale = min(1.0, SKEW_DPI / max(dpi, 1))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    mask = ink_mask(small)
    h, w = mask.shape
    # Dark scanner borders make long straight edges that would dominate the profiles: ignore the rim.
    my, mx = int(h * 0.04), int(w * 0.04)
    mask[:my] = 0
    mask[h - my :] = 0
    mask[:, :mx] = 0
    mask[:, w - mx :] = 0
    return mask, scale


def char_size(mask: np.ndarray) -> float | None:
    """Typical character size (px) of an ink mask: the same whichever way the page lies."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    w, h, area = stats[1:, 2], stats[1:, 3], stats[1:, 4]
    keep = (area >= 6) & (np.maximum(w, h) < min(mask.shape) / 15)  # no specks, rules, photos or seals
    if keep.sum() < 10:
        return None
    # sqrt(w*h) is symmetric under a quarter turn. The median by ink weight: scan specks (many, tiny)
    # and diacritics count for little next to the letters.
    size = np.sqrt(w[keep] * h[keep].astype(np.float64))
    order = np.argsort(size)
    weight = np.cumsum(area[keep][order].astype(np.float64))
    return float(size[order][np.searchsorted(weight, 0.5 * weight[-1])])


def _without_rules(mask: np.ndarray, char_px: float) -> np.ndarray:
    """The mask without ruling lines (solid runs longer than a few characters, either way) and without
    anything else bigger than a character could be."""
    n = max(int(4 * char_px), 10)
    across = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, n), np.uint8))
    down = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((n, 1), np.uint8))
    rules = cv2.bitwise_or(across, down)
    clean = np.where(rules > 0, 0, mask).astype(np.uint8)
    # Slanted lines (a parcel sketch, a photographed form) and signatures survive the openings: no
    # character is that big.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(clean, connectivity=8)
    big = np.maximum(stats[:, 2], stats[:, 3]) > 5 * char_px
    big[0] = False
    return np.where(big[labels], 0, clean).astype(np.uint8)


def text_lines(mask: np.ndarray, char_px: float) -> TextLines:
    """Blobs that look like horizontal text lines (within ±MAX_SKEW and a bit) once a closing has merged
    the characters of each line. Elongation is measured along the blob's own axis, so skewed and
    photographed lines count as well as level ones."""
    k = max(int(round(char_px)), 2)  # wider than letter and word gaps, narrower than line spacing
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, k), np.uint8))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    total, boxes = 0.0, []
    max_slope = np.tan(np.deg2rad(MAX_SKEW + 5))
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w < 3 * char_px or h > w:
            continue
        corners = cv2.boxPoints(cv2.minAreaRect(contour))
        sides = [corners[1] - corners[0], corners[2] - corners[1]]
        along, across = sorted(sides, key=lambda v: -float(np.hypot(*v)))
        long, short = float(np.hypot(*along)), float(np.hypot(*across))
        if long < 3 * short or long < 3 * char_px or not 0.4 * char_px <= short <= 3 * char_px:
            continue
        if abs(float(along[1])) > max_slope * abs(float(along[0])):
            continue  # a blob running down the page, not a line of text across it
        total += long
        boxes.append((x, y, w, h))
    return TextLines(char_px, total, np.array(boxes, dtype=np.int64).reshape(-1, 4))


def _densest_band(lines: TextLines, shape: tuple[int, int], n_lines: int = 5) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the horizontal band holding the most text-line length, about n_lines high."""
    if len(lines.boxes) == 0:
        return None
    band = n_lines * 2.0 * lines.char_px
    x, y, w, h = (lines.boxes[:, i].astype(np.float64) for i in range(4))
    centres = y + h / 2
    best, best_len = 0.0, -1.0
    for c in centres:
        inside = (centres >= c) & (centres < c + band)
        total = float(w[inside].sum())
        if total > best_len:
            best, best_len = c, total
    inside = (centres >= best) & (centres < best + band)
    pad = lines.char_px
    x0, x1 = float(x[inside].min()) - pad, float((x + w)[inside].max()) + pad
    y0, y1 = float(y[inside].min()) - pad, float((y + h)[inside].max()) + pad
    return int(max(x0, 0)), int(max(y0, 0)), int(min(x1, shape[1])), int(min(y1, shape[0]))


def _ink_points(mask: np.ndarray) -> np.ndarray:
    """(x, y) float coordinates of ink pixels, centred, subsampled."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) > _MAX_POINTS:
        step = len(xs) // _MAX_POINTS + 1
        xs, ys = xs[::step], ys[::step]
    return np.stack([xs - w / 2, ys - h / 2]).astype(np.float64)


def _sharpness(coord: np.ndarray) -> float:
    c = np.round(coord).astype(np.int64)
    c -= c.min()
    hist = np.bincount(c).astype(np.float64)
    return float((hist * hist).sum())


def _profile_score(points: np.ndarray, angle: float, axis: int) -> float:
    """Sharpness of the ink projected onto rows (axis 1) or columns (axis 0) of the page turned by angle."""
    t = np.deg2rad(angle)
    x, y = points
    proj = y * np.cos(t) - x * np.sin(t) if axis == 1 else x * np.cos(t) + y * np.sin(t)
    return _sharpness(proj)


def _best_angle(points: np.ndarray, axis: int) -> float:
    best = 0.0
    for step, span in ((1.0, MAX_SKEW), (0.2, 1.0), (0.05, 0.2)):
        angles = np.arange(best - span, best + span + step / 2, step)
        scores = [_profile_score(points, a, axis) for a in angles]
        best = float(angles[int(np.argmax(scores))])
    return best


def analyse_geometry(gray: np.ndarray, dpi: int) -> Geometry:
    """Find whether the page lies sideways (text-line structure) and how much it is skewed (profiles)."""
    mask, scale = _work_mask(gray, dpi)
    points = _ink_points(mask)
    if points.shape[1] < 50:
        return Geometry(0, 0.0, 1.0)
    c = char_size(mask)
    if c is None:  # no text to speak of: keep the page as it lies, level it by its ink
        return Geometry(0, _best_angle(points, axis=1), 1.0)
    clean = _without_rules(mask, c)
    across = text_lines(clean, c)
    down = text_lines(np.ascontiguousarray(clean.T), c)
    ratio = (across.length + 1) / (down.length + 1)
    sideways = ratio < 1
    skew = _best_angle(points, axis=0 if sideways else 1)
    ambiguous = 1 / AMBIGUOUS_RATIO < ratio < AMBIGUOUS_RATIO
    other = _best_angle(points, axis=1 if sideways else 0) if ambiguous else 0.0
    if sideways:
        band = _densest_band(down, (clean.shape[1], clean.shape[0]))
        strip = None if band is None else (band[1], band[0], band[3], band[2])  # transposed back
    else:
        strip = _densest_band(across, (clean.shape[0], clean.shape[1]))
    if strip is not None:
        x0, y0, x1, y1 = (int(round(v / scale)) for v in strip)
        strip = (x0, y0, x1, y1)
    return Geometry(90 if sideways else 0, skew, ratio, other, strip)


def rotate_image(image: Image.Image, rotation: int, skew: float) -> Image.Image:
    """Undo a quarter-turn rotation, then a small skew (degrees CCW), keeping the page size after the turn."""
    if rotation:
        image = image.transpose(_TRANSPOSE[rotation])
    if abs(skew) >= 0.1:
        # OpenCV is ~10x faster than PIL here; 1-bit pages go through 8 bits with nearest neighbour.
        bilevel = image.mode == "1"
        arr = np.asarray(image.convert("L") if bilevel else image)
        h, w = arr.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), skew, 1.0)
        border = (255, 255, 255) if arr.ndim == 3 else 255
        interp = cv2.INTER_NEAREST if bilevel else cv2.INTER_CUBIC
        out = cv2.warpAffine(arr, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        rotated = Image.fromarray(out)
        image = rotated.convert("1") if bilevel else rotated
    return image


#: Red ink: the red channel this far above the others. Seals are red; text is black or blue.
SEAL_REDNESS = 60
SEAL_MIN_INCH = 0.45  # a seal is at least this wide and high; red headings are far wider than high
SEAL_WORK_DPI = 50


def remove_seals(rgb: np.ndarray, gray: np.ndarray, dpi: int) -> np.ndarray:
    """``gray`` with the red ink of round seals turned to paper white.

    Seal text is decoration (and the seal, printed over a signature block, hides the text under it from
    Tesseract's layout analysis). Red components are taken as seals when they are roughly as high as
    they are wide and at least SEAL_MIN_INCH across; red headings and red lines stay.
    """
    redness = cv2.subtract(rgb[..., 0], cv2.max(rgb[..., 1], rgb[..., 2]))  # uint8, saturating: no big copies
    red = (redness > SEAL_REDNESS).astype(np.uint8)
    del redness
    if not red.any():
        return gray
    # Find the seals on a 50 dpi copy: a full-resolution label image alone would be 35 MB for an A4 page.
    f = min(1.0, SEAL_WORK_DPI / max(dpi, 1))
    small = cv2.resize(red, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else red
    small = cv2.dilate((small > 0).astype(np.uint8), np.ones((3, 3), np.uint8))  # ring, star, letters: one blob
    n, labels, stats, _ = cv2.connectedComponentsWithStats(small, connectivity=8)
    w, h = stats[1:, 2] / f, stats[1:, 3] / f
    seal = (np.minimum(w, h) >= SEAL_MIN_INCH * dpi) & (np.maximum(w, h) <= 1.6 * np.minimum(w, h))
    if not seal.any():
        return gray
    seal_area = np.concatenate([[0], seal.astype(np.uint8)])[labels]
    seal_area = cv2.resize(seal_area, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_NEAREST)
    out = gray.copy()
    out[(red > 0) & (seal_area > 0)] = 255
    return out


def grey_for_ocr(image: Image.Image, dpi: int, gray: np.ndarray | None = None) -> Image.Image:
    """The page as Tesseract should see it: bilevel and grey pages as they are, others in grey, colour
    pages without their red seals. ``gray``: the page's greyscale array, when already at hand."""
    if image.mode in ("1", "L"):
        return image
    if gray is None:
        gray = to_gray(image)
    if image.mode == "RGB":
        gray = remove_seals(np.asarray(image), gray, dpi)
    return Image.fromarray(gray)


def normalise_for_ocr(image: Image.Image, dpi: int, upscale: bool = True) -> tuple[np.ndarray, int]:
    """Greyscale, flatten uneven light, stretch contrast and (``upscale``) bring low-resolution pages
    to OCR_DPI.

    Returns the OCR image and its dpi.
    """
    image = grey_for_ocr(image, dpi)
    gray = np.asarray(image.convert("L"))
    if image.mode != "1":
        # Paper colour varies across a scan (lamp falloff, yellowed paper): divide it out.
        scale = 50 / max(dpi, 1)
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
        background = cv2.morphologyEx(small, cv2.MORPH_CLOSE, k)
        background = cv2.resize(background, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
        flat = cv2.divide(gray, np.maximum(background, 1), scale=255)
        hist = cv2.calcHist([flat], [0], None, [256], [0, 256]).ravel().cumsum()
        lo = float(np.searchsorted(hist, 0.005 * hist[-1]))  # the 0.5th percentile, darkest ink
        gain = 255.0 / max(255.0 - lo, 1.0)
        lut = np.clip((np.arange(256, dtype=np.float32) - lo) * gain, 0, 255).astype(np.uint8)
        gray = cv2.LUT(flat, lut)  # no full-page float copies
    if upscale and dpi < UPSCALE_BELOW_DPI:
        f = OCR_DPI / dpi
        gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        dpi = OCR_DPI
    return gray, dpi


QUAD_DPI = 50
MIN_QUAD_AREA = 0.3  # the page covers at least this much of a phone photo...
MAX_QUAD_AREA = 0.97  # ...and leaves a visible background (a flatbed scan fills the frame)
MIN_PAGE_CONTRAST = 25  # grey levels between the page and what lies around it
QUAD_INSET = 0.02


def find_page_quad(gray: np.ndarray, dpi: int) -> np.ndarray | None:
    """The page's four corners (tl, tr, br, bl; full-resolution pixels) in a photo of it on a darker
    background, or None when the page fills the frame (a scan) or no clear quadrilateral stands out."""
    scale = QUAD_DPI / max(dpi, 1)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    blur = cv2.GaussianBlur(small, (5, 5), 0)
    _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))  # text holes in the page
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    page = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(page) / mask.size
    if not MIN_QUAD_AREA <= area <= MAX_QUAD_AREA:
        return None
    hull = cv2.convexHull(page)
    quad = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
    if len(quad) != 4:
        return None
    inside = np.zeros_like(mask)
    cv2.fillPoly(inside, [quad], 255)
    if float(blur[inside > 0].mean()) - float(blur[inside == 0].mean()) < MIN_PAGE_CONTRAST:
        return None
    pts = quad.reshape(4, 2).astype(np.float32)
    s, d = pts.sum(axis=1), np.diff(pts, axis=1).ravel()
    ordered = np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], np.float32)
    h, w = small.shape
    margin = 0.01 * max(h, w) + 1
    on_edge = (ordered[:, 0] <= margin) | (ordered[:, 0] >= w - 1 - margin)
    on_edge |= (ordered[:, 1] <= margin) | (ordered[:, 1] >= h - 1 - margin)
    if on_edge.sum() >= 2 or not _roughly_rectangular(ordered):
        return None  # a scanner border cut by the frame, or a shape that is no page
    return ordered / scale


def _roughly_rectangular(quad: np.ndarray, tolerance: float = 25.0) -> bool:
    for i in range(4):
        a, b = quad[i - 1] - quad[i], quad[(i + 1) % 4] - quad[i]
        cos = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-6))
        if abs(np.degrees(np.arccos(np.clip(cos, -1, 1))) - 90) > tolerance:
            return False
    return True


def flatten_page(image: Image.Image, quad: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """The page inside ``quad`` warped to a rectangle, and the 3x3 homography from it back to the photo."""
    # Pull the corners in a little: a quad found at QUAD_DPI is a few pixels off, and a sliver of dark
    # desk along the page's long edges would read as text lines running down the page.
    centre = quad.mean(axis=0)
    quad = (centre + (quad - centre) * (1 - QUAD_INSET)).astype(np.float32)
    tl, tr, br, bl = quad
    w = int(round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
    h = int(round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))))
    rect = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    forward = cv2.getPerspectiveTransform(quad, rect)
    arr = np.asarray(image.convert("L") if image.mode == "1" else image)
    flat = cv2.warpPerspective(arr, forward, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(flat), np.linalg.inv(forward)
