"""COCO number lists as JSON text, formatted for many rows at once in numpy.

A release writes 60,000 annotations of 111 numbers each: `json.dumps` spends ~300 ns on every
float (`float.__repr__` finds the shortest round-trip digits). Numbers already rounded to 3
decimals have a simpler shortest form, the decimal itself with trailing zeros dropped, which
numpy can lay out as bytes for all rows together. `number_rows` gives exactly the text
`json.dumps(row, separators=(",", ":"))` would (tests/test_release_fast_paths.py checks it), and
None for any row it cannot vouch for (not finite, not a 3-decimal value, too large): the caller
encodes those the ordinary way.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

_DECIMALS = 3
_SCALE = 10 ** _DECIMALS


def number_rows(values: NDArray[np.float64], int_columns: NDArray[np.bool_]) -> list[str | None]:
    """JSON text of each row of `values` (N, M): floats rounded to 3 decimals, and ints (given as
    floats with integer values) where `int_columns` (M,) is set; None where a row is not that."""
    values = np.asarray(values, dtype=np.float64)
    rows, width = values.shape
    if rows == 0 or width == 0:
        return ["[]"] * rows
    is_int = np.asarray(int_columns, dtype=bool)
    out: list[str | None] = []
    for start in range(0, rows, _BLOCK):  # blocks: the temporaries stay in cache and get reused
        out += _block_rows(values[start:start + _BLOCK], is_int)
    return out


#: Rows formatted together (~10 MB of temporaries at 111 numbers a row).
_BLOCK = 4096


def _block_rows(values: NDArray[np.float64], is_int: NDArray[np.bool_]) -> list[str | None]:
    scale = np.where(is_int, 1, _SCALE)  # per column
    with np.errstate(invalid="ignore", over="ignore"):
        units = np.rint(values * scale)
        exact = units / scale == values  # False for NaN
        ok_cells = exact & (np.abs(units) < _WHOLE_LIMIT * scale)
    ok_rows = ok_cells.all(axis=1)
    out: list[str | None] = [None] * len(values)
    if not ok_rows.any():
        return out
    good = values[ok_rows]
    text, lengths = _format(units[ok_rows].astype(np.int32), np.signbit(good),
                            np.broadcast_to(is_int, good.shape))
    ends = np.cumsum(lengths.sum(axis=1, dtype=np.int64))
    starts = np.concatenate(([0], ends[:-1]))
    for n, start, end in zip(np.flatnonzero(ok_rows).tolist(), starts.tolist(), ends.tolist(), strict=True):
        out[n] = "[" + text[start:end - 1] + "]"  # each number ends in a comma: drop the row's last
    return out


#: Whole parts written from a table (larger numbers: the row goes the ordinary way).
_WHOLE_LIMIT = 10 ** 5
_WHOLE_DIGITS = 6
#: A number's text laid out in 12 bytes: sign, 6 whole digits (right-aligned), '.' (one 8-byte
#: word), 3 decimals, ',' (one 4-byte word); a mask of the same layout keeps the bytes it needs.
_CELL = np.dtype([("whole", "<u8"), ("fraction", "<u4")])


@lru_cache(maxsize=1)
def _tables() -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint32], NDArray[np.uint32],
                       NDArray[np.uint8], NDArray[np.uint8]]:
    """Per whole part below _WHOLE_LIMIT: its 8-byte word ('-', digits, '.'), the word's keep
    mask for a float and for an int (no '.'), and per fraction 0-999 (1000: none, for ints) its
    4-byte word and mask (trailing zeros dropped, one digit always kept); with the kept lengths."""
    whole = np.arange(_WHOLE_LIMIT, dtype=np.int64)
    places = 10 ** np.arange(_WHOLE_DIGITS - 1, -1, -1, dtype=np.int64)  # 100000 ... 1 (a 0 first)
    word = np.empty((_WHOLE_LIMIT, 8), dtype=np.uint8)
    word[:, 0] = ord("-")
    word[:, 1:7] = 48 + (whole[:, None] // places) % 10
    word[:, 7] = ord(".")
    float_keep = np.zeros((_WHOLE_LIMIT, 8), dtype=np.uint8)
    float_keep[:, 1:7] = (whole[:, None] >= places) | (places == 1)
    int_keep = float_keep.copy()
    float_keep[:, 7] = 1
    fraction = np.arange(_SCALE + 1, dtype=np.int64)
    tail = np.empty((_SCALE + 1, 4), dtype=np.uint8)
    tail[:, :3] = 48 + (fraction[:, None] // np.array([100, 10, 1])) % 10
    tail[:, 3] = ord(",")
    shown = 1 + (fraction % 100 != 0) + (fraction % 10 != 0)  # 0 -> "0", 120 -> "12", 5 -> "005"
    tail_keep = np.zeros((_SCALE + 1, 4), dtype=np.uint8)
    tail_keep[:, :3] = np.arange(3)[None, :] < shown[:, None]
    tail_keep[_SCALE, :3] = 0  # an int's
    tail_keep[:, 3] = 1
    lengths = np.stack([float_keep.sum(axis=1), int_keep.sum(axis=1)]).astype(np.uint8)
    keeps = np.concatenate([float_keep.view("<u8")[:, 0], int_keep.view("<u8")[:, 0]])
    return (word.view("<u8")[:, 0], keeps, tail.view("<u4")[:, 0], tail_keep.view("<u4")[:, 0],
            lengths.reshape(-1),
            tail_keep.sum(axis=1).astype(np.uint8))


def _format(units: NDArray[np.int32], sign_bit: NDArray[np.bool_],
            is_int: NDArray[np.bool_]) -> tuple[str, NDArray[np.uint8]]:
    """Every number as `[-]digits[.decimals],` in one string, and each one's length (same shape).

    `units` are the numbers times 1000 (floats) or the numbers (ints); a float with its sign bit
    set is written with a minus even when it is 0 (repr writes -0.0)."""
    word, word_keep, tail, tail_keep, word_lengths, tail_lengths = _tables()
    shape = units.shape
    units, is_int, sign_bit = units.reshape(-1), is_int.reshape(-1), sign_bit.reshape(-1)
    negative = (units < 0) | (sign_bit & ~is_int)
    magnitude = np.abs(units)
    whole = np.where(is_int, magnitude, magnitude // _SCALE)
    fraction = np.where(is_int, _SCALE, magnitude - whole * _SCALE)
    kind = np.where(is_int, whole + _WHOLE_LIMIT, whole)  # into word_keep, word_lengths: float, int
    cells = np.empty(len(units), dtype=_CELL)
    cells["whole"] = np.take(word, whole)
    cells["fraction"] = np.take(tail, fraction)
    keep = np.empty(len(units), dtype=_CELL)
    keep["whole"] = np.take(word_keep, kind) | negative.astype(np.uint64)  # byte 0: the sign
    keep["fraction"] = np.take(tail_keep, fraction)
    text = cells.view(np.uint8)[keep.view(np.uint8).view(bool)].tobytes().decode("ascii")
    lengths = negative.view(np.uint8) + np.take(word_lengths, kind) + np.take(tail_lengths, fraction)
    return text, lengths.reshape(shape)
