"""Training batches drawn one step ahead in a worker process are the batches drawn in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamtrack.training.batches import Prefetcher, batch_drawer, draw_step


def assert_same(got: tuple, want: tuple) -> None:
    (batch, rng), (want_batch, want_rng) = got, want
    for x, y in zip(batch[:3], want_batch[:3]):
        assert x.dtype == y.dtype and x.stride() == y.stride() and torch.equal(x, y)
    plan, want_plan = batch[3], want_batch[3]
    assert (plan.first, plan.times, plan.corrections) == (want_plan.first, want_plan.times, want_plan.corrections)
    assert len(plan.first_prompts) == len(want_plan.first_prompts)
    for p, q in zip(plan.first_prompts, want_plan.first_prompts):
        assert np.array_equal(p.coords, q.coords) and np.array_equal(p.labels, q.labels)
    # The unroll draws on from the generator, so its state must come back too.
    assert np.array_equal(rng.random(8), want_rng.random(8))


def test_batches_drawn_ahead_equal_batches_drawn_in_place():
    draw = batch_drawer(64, 2, 4, 2, return_share=0.5, mask_share=0.0)
    with Prefetcher(draw, 11) as ahead:
        for step in (0, 1, 2):
            got = ahead.get(step)
            ahead.start(step + 1)
            assert_same(got, draw_step(draw, 11, step))
        assert_same(ahead.get(5), draw_step(draw, 11, 5))  # 3 was started, 5 is drawn in place


def test_an_error_in_the_worker_is_raised_by_get():
    bad = batch_drawer(-8, 1, 2, 1)  # a negative frame size: the scene refuses it
    with Prefetcher(bad, 0) as ahead:
        ahead.start(1)
        with pytest.raises(ValueError):
            ahead.get(1)


def test_without_a_worker_everything_is_drawn_in_place():
    draw = batch_drawer(64, 1, 3, 1)
    with Prefetcher(draw, 4, workers=0) as in_place:
        in_place.start(0)
        assert_same(in_place.get(0), draw_step(draw, 4, 0))
    with pytest.raises(ValueError, match="workers"):
        Prefetcher(draw, 4, workers=2)
