"""Binary masks as COCO run-length encoding (compressed counts strings) or packed bits.

The counts string is byte-for-byte what COCO's ``maskApi`` (pycocotools) produces, so
``pycocotools.mask.decode({"size": [h, w], "counts": encode(mask)})`` gives the mask back:

1. Runs: the mask is read in column-major (Fortran) order; counts alternate between runs
   of 0s and runs of 1s, starting with 0s (so the first count is 0 when the first pixel
   is set). The last run is always written; an image with no pixels has counts ``[0]``.
2. Deltas: for i > 2 (sic: index 2 is written as is), count i is written as
   ``counts[i] - counts[i - 2]``, which may be negative.
3. Characters: each value is cut into 5-bit groups, least significant first, in two's
   complement. Each group becomes one character ``48 + group (+ 32 if more groups
   follow)``. Groups stop once the rest of the value is pure sign extension of bit 4
   of the last group written (0 for values >= 0, -1 for values < 0).

Everything is vectorised with numpy: no Python loop over runs or pixels.
"""

from __future__ import annotations

import numpy as np

_MAX_GROUPS = 13
"""5-bit groups that fit an int64; COCO's counts are 32-bit, which need at most 7."""


class RLEError(ValueError):
    """A counts string or packed-bits payload is malformed or does not fit the mask size."""


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """bool[H, W] -> int64[K]: COCO run lengths (column-major, zeros first)."""
    mask = _check_mask(mask)
    flat = np.ravel(mask, order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int64, copy=False)


def encode(mask: np.ndarray) -> bytes:
    """bool[H, W] -> the compressed COCO counts string, as ASCII bytes."""
    return counts_to_string(run_lengths(mask))


def decode(counts: bytes | str, height: int, width: int) -> np.ndarray:
    """A compressed COCO counts string -> bool[height, width] (C-contiguous).

    Raises :class:`RLEError` if the string is malformed or its runs do not add up to
    ``height * width``.
    """
    if height < 0 or width < 0:
        raise RLEError(f"mask size must be non-negative, got {height}x{width}")
    runs = string_to_counts(counts)
    total = int(runs.sum())
    if total != height * width:
        raise RLEError(f"RLE runs cover {total} pixels, but a {height}x{width} mask has {height * width}")
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def counts_to_string(runs: np.ndarray) -> bytes:
    """int[K] run lengths -> compressed counts string (COCO ``rleToString``)."""
    x = np.asarray(runs, dtype=np.int64).copy()
    if x.size > 3:
        x[3:] -= np.asarray(runs, dtype=np.int64)[1:-2]
    groups = _groups_needed(x)
    ends = np.cumsum(groups)
    starts = ends - groups
    out = np.empty(int(ends[-1]) if x.size else 0, np.uint8)
    for k in range(int(groups.max()) if x.size else 0):
        sel = groups > k
        chunk = (x[sel] >> (5 * k)) & 0x1F
        more = np.where(groups[sel] > k + 1, 0x20, 0)
        out[starts[sel] + k] = (chunk | more) + 48
    return out.tobytes()


def string_to_counts(counts: bytes | str) -> np.ndarray:
    """Compressed counts string -> int64[K] run lengths (COCO ``rleFrString``), validated."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise RLEError("RLE counts must be ASCII") from None
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        raise RLEError("RLE counts string is empty")
    if c.min() < 0 or c.max() > 63:
        raise RLEError("RLE counts contain a character outside '0'..'o' (48..111)")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise RLEError("RLE counts string ends in the middle of a value")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    groups = ends - starts + 1
    if groups.max() > 7:
        raise RLEError("RLE counts contain a value longer than 7 characters (more than 32 bits)")
    value_of = np.repeat(np.arange(ends.size), groups)
    k = np.arange(c.size) - starts[value_of]
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * groups[negative])
    # Undo the deltas: counts[i] = x[i] + counts[i - 2] for i > 2, i.e. running sums over
    # the odd indices from 1 and over the even indices from 2.
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    if x.size > 2:
        runs[2::2] = np.cumsum(x[2::2])
    if runs.min() < 0:
        raise RLEError("RLE counts decode to a negative run length")
    return runs


def pack_bits(mask: np.ndarray) -> bytes:
    """bool[H, W] -> ceil(H*W / 8) bytes: row-major pixels, most significant bit first, zero-padded."""
    return np.packbits(_check_mask(mask), axis=None).tobytes()


def unpack_bits(data: bytes, height: int, width: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` -> bool[height, width]; checks the length."""
    expected = (height * width + 7) // 8
    if len(data) != expected:
        raise RLEError(f"packed bits of a {height}x{width} mask are {expected} bytes, got {len(data)}")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), count=height * width)
    return bits.view(bool).reshape(height, width)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {list(mask.shape)}")
    return mask if mask.dtype == bool else mask != 0


def _groups_needed(x: np.ndarray) -> np.ndarray:
    """Characters per value: the fewest 5-bit groups holding x in two's complement."""
    groups = np.ones(x.shape, np.int64)
    for n in range(1, _MAX_GROUPS):
        half = np.int64(1) << (5 * n - 1)
        groups += (x < -half) | (x >= half)
    return groups
