"""COCO RLE and packed bits: round trips, hand-computed strings, and pycocotools as the oracle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamtrack.live import rle

try:
    from pycocotools import mask as coco
except ImportError:  # the test setup installs it; without it only the oracle cases skip
    coco = None

needs_coco = pytest.mark.skipif(coco is None, reason="pycocotools is not installed (pip install pycocotools)")
# pycocotools 2.0.x under numpy 2 warns inside its own decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SHAPES = [(1, 1), (1, 17), (17, 1), (3, 4), (31, 33), (64, 64), (480, 640)]


def random_mask(shape, density: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < density


def blob_mask(h: int, w: int) -> np.ndarray:
    """A disc: the typical shape of a tracked object (few, long runs)."""
    yy, xx = np.mgrid[:h, :w]
    return (yy - h * 0.45) ** 2 + (xx - w * 0.55) ** 2 < (min(h, w) * 0.3) ** 2


def edge_masks() -> dict[str, np.ndarray]:
    checker = (np.add.outer(np.arange(9), np.arange(7)) % 2).astype(bool)
    single = np.zeros((5, 6), bool)
    single[4, 5] = True
    first = np.zeros((5, 6), bool)
    first[0, 0] = True
    return {
        "empty": np.zeros((5, 6), bool), "full": np.ones((5, 6), bool), "single_last": single,
        "single_first": first, "checkerboard": checker, "inverse_checkerboard": ~checker,
        "row_1xN": np.array([[0, 1, 1, 0, 1]], bool), "column_Nx1": np.array([[1], [1], [0], [1]], bool),
        "zero_rows": np.zeros((0, 4), bool), "zero_columns": np.zeros((4, 0), bool),
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_random_masks_round_trip(shape, density):
    mask = random_mask(shape, density, seed=shape[0] * 1000 + shape[1])
    out = rle.decode(rle.encode(mask), *shape)
    assert out.dtype == bool and out.shape == shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, mask)


@pytest.mark.parametrize("name", list(edge_masks()))
def test_edge_case_masks_round_trip(name):
    mask = edge_masks()[name]
    np.testing.assert_array_equal(rle.decode(rle.encode(mask), *mask.shape), mask)
    np.testing.assert_array_equal(rle.unpack_bits(rle.pack_bits(mask), *mask.shape), mask)


def test_runs_are_column_major_and_start_with_zeros():
    # The worked example of docs/wire-format.md.
    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    mask[2, 3] = True
    assert rle.run_lengths(mask).tolist() == [4, 1, 2, 1, 3, 1]
    assert rle.encode(mask) == b"412010"
    assert rle.run_lengths(np.ones((2, 2), bool)).tolist() == [0, 4]
    assert rle.run_lengths(np.zeros((0, 3), bool)).tolist() == [0]


@pytest.mark.parametrize("counts, text", [
    ([100, 5, 2, 130], b"T352m3"),   # 100 -> 'T3'; index 3 is 130 - 5 = 125 -> 'm3'
    ([10, 20, 5, 3], b":d05_O"),     # index 3 is 3 - 20 = -17 -> '_O' (negative delta)
    ([16, 15], b"`0?"),              # 16 needs a second group: bit 4 alone would read as a sign
    ([2, 40, 7], b"2X17"),           # index 2 is written as is (COCO's deltas start at 3)
])
def test_counts_strings_match_hand_computed_values(counts, text):
    assert rle.counts_to_string(np.array(counts)) == text
    assert rle.string_to_counts(text).tolist() == counts


@needs_coco
@pytest.mark.parametrize("shape", SHAPES[1:] + [(1080, 1920)])
def test_strings_are_byte_identical_to_pycocotools(shape):
    for mask in (random_mask(shape, 0.3, seed=1), blob_mask(*shape)):
        theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert theirs["size"] == list(shape)
        assert rle.encode(mask) == theirs["counts"]
        np.testing.assert_array_equal(rle.decode(theirs["counts"], *shape), mask)
        np.testing.assert_array_equal(rle.decode(theirs["counts"].decode(), *shape), mask)


@needs_coco
@pytest.mark.parametrize("name", [n for n in edge_masks() if "zero" not in n])
def test_pycocotools_decodes_our_edge_cases(name):
    mask = edge_masks()[name]
    out = coco.decode({"size": list(mask.shape), "counts": rle.encode(mask)})
    np.testing.assert_array_equal(out.astype(bool), mask)
    assert coco.area({"size": list(mask.shape), "counts": rle.encode(mask)}) == mask.sum()


@pytest.mark.parametrize("counts, size, message", [
    (b"", (1, 1), "empty"),
    (b"4/", (2, 2), "outside"),                 # '/' = 47 is before '0'
    (b"4p", (2, 2), "outside"),                 # 'p' = 112 is past 'o'
    (b"4\xff", (2, 2), "outside"),
    ("4é", (2, 2), "ASCII"),
    (b"41", (2, 2), "cover 5 pixels"),
    (b"3", (2, 2), "cover 3 pixels"),
    (b"12_O", (4, 4), "negative"),              # index 2 is written as is: -17
    (b"4[", (2, 2), "middle of a value"),       # '[' = 48 + 43 has the continuation bit
    (b"oooooooo0", (2, 2), "longer than 7"),
])
def test_malformed_counts_raise(counts, size, message):
    with pytest.raises(rle.RLEError, match=message):
        rle.decode(counts, *size)


def test_packed_bits_are_row_major_msb_first_and_zero_padded():
    mask = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], bool)
    assert rle.pack_bits(mask) == bytes([0b10000000, 0b11000000])
    np.testing.assert_array_equal(rle.unpack_bits(b"\x80\xc0", 2, 5), mask)
    with pytest.raises(rle.RLEError, match="2 bytes, got 3"):
        rle.unpack_bits(b"\x80\xc0\x00", 2, 5)


def test_non_bool_masks_count_nonzero_as_set():
    mask = np.array([[0, 2], [255, 0]], np.uint8)
    np.testing.assert_array_equal(rle.decode(rle.encode(mask), 2, 2), mask != 0)
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 1), bool))


def test_1080p_object_mask_encodes_and_decodes_in_milliseconds():
    mask = blob_mask(1080, 1920)
    text = rle.encode(mask)
    enc, dec = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        rle.encode(mask)
        t1 = time.perf_counter()
        rle.decode(text, 1080, 1920)
        enc.append(t1 - t0)
        dec.append(time.perf_counter() - t1)
    # Typically ~2 ms each on one core; the bound leaves room for a busy shared machine.
    assert np.median(enc) < 0.05 and np.median(dec) < 0.05, (np.median(enc), np.median(dec))
