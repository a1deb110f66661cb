"""Stage 4b: from Tesseract's lines of words to the page's text: noise dropped, reading order fixed.

Tesseract (psm 4) reads a page row by row. Dossier pages put two centred blocks side by side in their
headers ("UBND XÃ …" beside "CỘNG HÒA …") and signature blocks ("BÊN ỦY QUYỀN" beside "BÊN NHẬN ỦY
QUYỀN"); those read left block first, then right. Tables and form rows stay row by row, cells left to
right: only bands whose columns hold centred lines are read column by column.

Noise: photos, card borders and QR codes come back as symbol-only "words" ("|", "(", "=") and lone
low-confidence letters; they are dropped before the text and the PDF text layer are made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import median

from ocr.models import Word

__all__ = ["Line", "drop_noise", "reading_order", "split_wide_gaps", "text_of"]

Line = list[Word]

#: Punctuation that stands alone between words in Vietnamese documents ("Độc lập - Tự do", "Số / No.").
_STANDALONE = re.compile(r"^(?:[-–—/:;,.…]+|-/-)$")
LONE_CHAR_MIN_CONFIDENCE = 0.5
#: A gap this many line heights wide inside a Tesseract line separates two blocks, not two words.
BLOCK_GAP = 2.5
#: Column gutter: at least this many line heights of white space down the whole band.
MIN_GUTTER = 1.5


def _box(line: Sequence[Word]) -> tuple[int, int, int, int]:
    return (
        min(w.left for w in line),
        min(w.top for w in line),
        max(w.left + w.width for w in line),
        max(w.top + w.height for w in line),
    )


def _height(line: Sequence[Word]) -> float:
    return float(median(w.height for w in line))


def is_noise(word: Word) -> bool:
    """A word that is no text: symbols only (a photo's edge read as "|"), or a lone unsure letter."""
    text = word.text
    if not any(ch.isalnum() for ch in text):
        return _STANDALONE.match(text) is None
    return len(text) <= 2 and word.confidence < LONE_CHAR_MIN_CONFIDENCE and not text.isdigit()


def drop_noise(lines: Sequence[Line]) -> list[Line]:
    """Lines without noise words; lines left empty, or holding only punctuation, are dropped."""
    out = []
    for line in lines:
        kept = [w for w in line if not is_noise(w)]
        if any(any(ch.isalnum() for ch in w.text) for w in kept):
            out.append(kept)
    return out


def split_wide_gaps(lines: Sequence[Line]) -> list[Line]:
    """Split Tesseract lines at gaps wider than BLOCK_GAP line heights (two blocks on one baseline)."""
    out: list[Line] = []
    for line in lines:
        words = sorted(line, key=lambda w: w.left)
        gap_px = BLOCK_GAP * _height(words)
        piece = [words[0]]
        for prev, word in zip(words, words[1:], strict=False):
            if word.left - (prev.left + prev.width) > gap_px:
                out.append(piece)
                piece = []
            piece.append(word)
        out.append(piece)
    return out


def _rows(lines: Sequence[Line]) -> list[list[Line]]:
    """Group lines into rows: lines whose vertical extents overlap by half the smaller height."""
    rows: list[list[Line]] = []
    r_top = r_bottom = 0  # the last row's vertical extent
    for line in sorted(lines, key=lambda ln: _box(ln)[1]):
        _, top, _, bottom = _box(line)
        if rows and min(bottom, r_bottom) - max(top, r_top) > 0.5 * min(bottom - top, r_bottom - r_top):
            rows[-1].append(line)
            r_top, r_bottom = min(r_top, top), max(r_bottom, bottom)
        else:
            rows.append([line])
            r_top, r_bottom = top, bottom
    for row in rows:
        row.sort(key=lambda ln: _box(ln)[0])
    return rows


def _gutters(row: list[Line], height: float) -> list[tuple[int, int]]:
    """White x-intervals between the lines of a row, at least MIN_GUTTER line heights wide."""
    boxes = [_box(ln) for ln in row]
    return [
        (a[2], b[0]) for a, b in zip(boxes, boxes[1:], strict=False) if b[0] - a[2] >= MIN_GUTTER * height
    ]


def _centred(lines: list[Line], height: float) -> bool:
    """Whether the lines are centred on a common axis rather than sharing a left edge."""
    if len(lines) < 2:
        return False
    boxes = [_box(ln) for ln in lines]
    lefts = [b[0] for b in boxes]
    centres = [(b[0] + b[2]) / 2 for b in boxes]
    left_spread, centre_spread = max(lefts) - min(lefts), max(centres) - min(centres)
    return centre_spread < 1.5 * height and centre_spread < left_spread


def _band_order(band: list[list[Line]], cut: tuple[int, int]) -> list[Line] | None:
    """The band's lines column by column when the sides of ``cut`` are centred blocks (a side of one
    line counts as centred), each row holding at most one line a side."""
    mid = (cut[0] + cut[1]) / 2
    left: list[Line] = []
    right: list[Line] = []
    for row in band:
        row_left = [ln for ln in row if _box(ln)[2] <= mid]
        row_right = [ln for ln in row if _box(ln)[0] >= mid]
        if len(row_left) > 1 or len(row_right) > 1:
            return None  # more than two cells a row: a table, read row by row
        left += row_left
        right += row_right
    height = median(_height(ln) for row in band for ln in row)
    if not left or not right:
        return None
    sides = [side for side in (left, right) if len(side) >= 2]
    if not sides or not all(_centred(side, height) for side in sides):
        return None  # a left-aligned side: form rows ("Giới tính: …   Sinh ngày: …"), read row by row
    return left + right


def _band_end(
    rows: list[list[Line]], start: int, gutter: tuple[int, int], height: float
) -> tuple[int, tuple[int, int]]:
    """How far from row ``start`` a common gutter (narrowing from ``gutter``) stays white: the end row
    (exclusive) and the gutter over the band."""
    lo, hi = gutter
    j = start + 1
    while j < len(rows):
        mid = (lo + hi) / 2
        boxes = [_box(ln) for ln in rows[j]]
        if any(b[0] < mid < b[2] for b in boxes):
            break
        new_lo = max([lo, *(b[2] for b in boxes if b[2] <= mid)])
        new_hi = min([hi, *(b[0] for b in boxes if b[0] >= mid)])
        if new_hi - new_lo < MIN_GUTTER * height:
            break
        lo, hi = new_lo, new_hi
        j += 1
    return j, (lo, hi)


def reading_order(lines: Sequence[Line]) -> list[Line]:
    """Lines in reading order: top to bottom, except that a band of rows split by a common gutter
    into centred blocks (headers, signature blocks) reads its left block first, then the right one."""
    rows = _rows(lines)
    out: list[Line] = []
    i = 0
    while i < len(rows):
        height = median(_height(ln) for ln in rows[i])
        gutters = _gutters(rows[i], height)
        best: tuple[int, list[Line]] | None = None
        for gutter in gutters:
            j, cut = _band_end(rows, i, gutter, height)
            if j - i >= 2:
                ordered = _band_order(rows[i:j], cut)
                if ordered is not None and (best is None or j > best[0]):
                    best = (j, ordered)
        if best is not None:
            out.extend(best[1])
            i = best[0]
        else:
            out.extend(rows[i])
            i += 1
    return out


def text_of(lines: Sequence[Line]) -> str:
    """The page text: words joined by spaces, lines by newlines."""
    return "\n".join(" ".join(w.text for w in line) for line in lines)
