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
