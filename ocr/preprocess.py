"""Stage 3: turn a page upright and level, and make a clean greyscale copy for Tesseract.

Orientation is decided in two steps: text lines make the row profile of a page sharp, so comparing row
and column profiles tells upright/upside-down (0/180) from sideways (90/270) for the cost of a histogram;
the 0-vs-180 question is left to recognition (:mod:`ocr.recognize` compares confidences) with Tesseract
OSD as a tie-breaker, because OSD alone costs about a second a page and fails on sparse pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from ocr.triage import ink_mask

Rotation = Literal[0, 90, 180, 270]

SKEW_DPI = 150  # deskew and orientation work on a copy at this resolution
MAX_SKEW = 15.0
OCR_DPI = 300
UPSCALE_BELOW_DPI = 250
# Sideways pages measured 0.47-0.79 on the public corpus, upright ones 0.91 and up (QR sheets, ID cards
# are the lowest); in between, recognition confidence decides (see ocr.engine).
SIDEWAYS_RATIO = 0.85
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
    sideways_ratio: float  # row/column profile sharpness; > 1 means text lines run across the page
    other_skew: float = 0.0  # the skew to use if the page turns out to lie the other way (by a quarter)


def _ink_points(gray: np.ndarray, dpi: int) -> np.ndarray:
    """(x, y) float coordinates of ink pixels of a SKEW_DPI copy, centred, subsampled."""
    scale = SKEW_DPI / max(dpi, 1)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    mask = ink_mask(small)
    h, w = mask.shape
    # Dark scanner borders make long straight edges that would dominate the profile: ignore the rim.
    my, mx = int(h * 0.04), int(w * 0.04)
    mask[:my] = 0
    mask[h - my :] = 0
    mask[:, :mx] = 0
    mask[:, w - mx :] = 0
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


def _best_angle(points: np.ndarray, axis: int) -> tuple[float, float]:
    best, score = 0.0, 0.0
    for step, span in ((1.0, MAX_SKEW), (0.2, 1.0), (0.05, 0.2)):
        angles = np.arange(best - span, best + span + step / 2, step)
        scores = [_profile_score(points, a, axis) for a in angles]
        i = int(np.argmax(scores))
        best, score = float(angles[i]), scores[i]
    return best, score


def analyse_geometry(gray: np.ndarray, dpi: int) -> Geometry:
    """Find whether the page lies sideways and how much it is skewed (projection profiles)."""
    points = _ink_points(gray, dpi)
    if points.shape[1] < 50:
        return Geometry(0, 0.0, 1.0)
    row_angle, row_score = _best_angle(points, axis=1)
    col_angle, col_score = _best_angle(points, axis=0)
    ratio = row_score / max(col_score, 1.0)
    if ratio >= SIDEWAYS_RATIO:
        return Geometry(0, row_angle, ratio, col_angle)
    # Text lines run down the page: turn it a quarter and level it with the column angle.
    return Geometry(90, col_angle, ratio, row_angle)


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


def normalise_for_ocr(image: Image.Image, dpi: int) -> tuple[np.ndarray, int]:
    """Greyscale, flatten uneven light, stretch contrast and upscale low-resolution pages to OCR_DPI.

    Returns the OCR image and its dpi.
    """
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
        gray = np.clip((flat.astype(np.float32) - lo) * gain, 0, 255).astype(np.uint8)
    if dpi < UPSCALE_BELOW_DPI:
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
