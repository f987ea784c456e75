"""Hole filling and non-overlap, against hand-made masks."""

from __future__ import annotations

import torch

from streamtrack.postprocess import HOLE_FILL_VALUE, fill_holes, non_overlapping


def ring_with_holes() -> torch.Tensor:
    """Foreground square with a 2x2 hole, a 4x4 hole, a diagonal 2-pixel hole and a corner nick."""
    m = -torch.ones(1, 1, 20, 20)
    m[0, 0, 2:18, 2:18] = 5.0
    m[0, 0, 4:6, 4:6] = -3.0     # 4 px hole
    m[0, 0, 10:14, 10:14] = -3.0  # 16 px hole
    m[0, 0, 7, 14] = -1.0         # two pixels touching only diagonally:
    m[0, 0, 8, 15] = -1.0         # one 8-connected 2 px hole
    return m


def test_fills_holes_up_to_max_area_only():
    m = ring_with_holes()
    out = fill_holes(m, max_area=8)
    assert (out[0, 0, 4:6, 4:6] == HOLE_FILL_VALUE).all()
    assert (out[0, 0, 10:14, 10:14] == -3.0).all()
    assert out[0, 0, 7, 14] == HOLE_FILL_VALUE and out[0, 0, 8, 15] == HOLE_FILL_VALUE
    assert (out[0, 0, 0] == -1.0).all(), "the large outer background is not a hole"
    changed = out != m
    assert changed.sum() == 4 + 2


def test_diagonal_neighbours_join_one_component():
    """8-connectivity: the two diagonal pixels form one 2-px hole, so max_area=1 fills neither."""
    out = fill_holes(ring_with_holes(), max_area=1)
    assert out[0, 0, 7, 14] == -1.0 and out[0, 0, 8, 15] == -1.0


def test_zero_area_is_a_no_op_and_batches_are_independent():
    m = torch.cat([ring_with_holes(), -torch.ones(1, 1, 20, 20)])
    assert torch.equal(fill_holes(m, 0), m)
    out = fill_holes(m, 8)
    assert torch.equal(out[1], m[1])
    assert (out[0, 0, 4:6, 4:6] == HOLE_FILL_VALUE).all()


def test_non_overlapping_keeps_the_winner_per_pixel():
    logits = torch.tensor([[[[3.0, -2.0, 5.0]]], [[[4.0, 1.0, -20.0]]]])
    out = non_overlapping(logits)
    assert out[:, 0, 0].tolist() == [[-10.0, -10.0, 5.0], [4.0, 1.0, -20.0]]
    assert torch.equal(non_overlapping(logits[:1]), logits[:1])


def test_non_overlapping_leaves_inactive_rows_out_of_the_contest():
    logits = torch.tensor([[[[3.0, -2.0]]], [[[9.0, 9.0]]], [[[4.0, -5.0]]]])
    out = non_overlapping(logits, torch.tensor([True, False, True]))
    assert out[:, 0, 0].tolist() == [[-10.0, -2.0], [9.0, 9.0], [4.0, -10.0]]
