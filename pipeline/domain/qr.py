"""QR codes as reportlab encodes them (level M), with its choice of mask made in NumPy.

reportlab's encoder picks the mask by building the symbol eight times in Python and scoring each with its
penalty rules — three quarters of the ~14 ms a forms' QR code costs. :func:`qr_modules` builds the symbol
once, scores the eight masks on arrays with the same rules as reportlab's ``QRUtil.getLostPoint`` (its quirks
included: the finder-like pattern is looked for in rows only, one way round, and not at the last position),
and has reportlab build the symbol with the mask chosen. The modules are reportlab's own, mask for mask
(``tests/test_forms.py`` compares both on many payloads), so a form's QR code is the same as before.
"""

from __future__ import annotations

import numpy as np
from reportlab.graphics.barcode import qrencoder

__all__ = ["qr_modules"]

#: The finder-like run reportlab's rule 3 penalises (dark, light, 3 dark, light, dark, 4 light).
_FINDER_LIKE = np.array([1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)


def _masks(rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """The eight mask conditions of ISO/IEC 18004 at (row, column), as reportlab's ``QRUtil.maskPattern``."""
    i, j = rows, cols
    return [
        (i + j) % 2 == 0,
        i % 2 == 0,
        j % 3 == 0,
        (i + j) % 3 == 0,
        (i // 2 + j // 3) % 2 == 0,
        (i * j) % 2 + (i * j) % 3 == 0,
        ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        ((i * j) % 3 + (i + j) % 2) % 2 == 0,
    ]


def _long_runs(m: np.ndarray) -> int:
    """Rule 1 along the rows of ``m``: each run of 5 or more same-colour modules costs its length − 2."""
    n = m.shape[1]
    rows = np.full((m.shape[0], n + 1), 2, dtype=np.int8)  # a separator after each row: a run of its own
    rows[:, :n] = m
    flat = rows.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(edges, prepend=0, append=flat.size)
    long = lengths[lengths >= 5]
    return int(long.sum()) - 2 * int(long.size)


def _lost_points(m: np.ndarray) -> int:
    """reportlab's ``QRUtil.getLostPoint`` of the symbol ``m`` (True: dark)."""
    n = m.shape[0]
    score = _long_runs(m) + _long_runs(m.T)
    same = (m[1:, 1:] == m[:-1, 1:]) & (m[1:, 1:] == m[1:, :-1]) & (m[1:, 1:] == m[:-1, :-1])
    score += 3 * int(same.sum())
    windows = np.lib.stride_tricks.sliding_window_view(m, len(_FINDER_LIKE), axis=1)[:, : n - len(_FINDER_LIKE)]
    score += 40 * int((windows == _FINDER_LIKE).all(axis=2).sum())  # rows only, as reportlab scores them
    dark = int(m.sum())
    return score + 10 * (abs(100 * dark // (n * n) - 50) // 5)


def _best_mask(qr: qrencoder.QRCode) -> int:
    """The mask reportlab's ``getBestMaskPattern`` picks (the first of the lowest score)."""
    qr.makeImpl(True, 0)  # the symbol as scored: function patterns, blank format information, data under mask 0
    base = np.array(qr.modules, dtype=bool)
    positions = np.array(qr.dataPosIterator(), dtype=np.int64)  # (column, row) of each data module
    cols, rows = positions[:, 0], positions[:, 1]
    bits = np.zeros(len(positions), dtype=bool)
    data = np.array(qr._dataBitList or [], dtype=bool)[: len(positions)]
    bits[: len(data)] = data
    scores = []
    for mask in _masks(rows, cols):
        m = base.copy()
        m[rows, cols] = bits ^ mask
        scores.append(_lost_points(m))
    return scores.index(min(scores))


def qr_modules(payload: str) -> list[list[bool]]:
    """The modules of ``payload``'s QR code (level M, smallest version; True: dark), row by row from the top,
    without the quiet zone: reportlab's symbol, its mask chosen faster."""
    qr = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
    qr.addData(payload)
    qr.version = qr.calculate_version()
    qr.makeImpl(False, _best_mask(qr))
    return [[bool(module) for module in row] for row in qr.modules]
