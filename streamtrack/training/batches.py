"""A training step's batch: its clips drawn from the step's generator, and drawn one step ahead.

Every clip, prompt and plan of a step comes from ``numpy.random.default_rng((seed, step))``, and
nothing in it depends on the model, so the next step's batch can be drawn in a worker process
while this step trains (:class:`Prefetcher`). Drawing is numpy and OpenCV work, 0.15 s a step for
plain 8-frame clips and about 1.5 s when half of them must show an object coming back
(docs/nano-model.md), which otherwise holds up the step.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamtrack.preprocess import normalize
from streamtrack.training.clips import first_frame_prompt, sample_clip
from streamtrack.training.unroll import ClipPlan


def make_batch(rng: np.random.Generator, size: int, batch: int, frames: int, objects: int, gap_share: float = 0.0,
               prompt_lag: int = 0, lag_share: float = 1.0, mask_share: float = 0.3, return_share: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ClipPlan]:
    """float[C, T, 3, S, S] normalised images, float[R, T, S, S] masks of the R objects, int[R]
    clip of each object, and how they are prompted. The clips of a batch share one lag: with
    probability ``lag_share`` drawn from 0..``prompt_lag``, else 0. The coin is drawn only when
    ``lag_share`` < 1 and the lag only when ``prompt_lag`` > 0, so earlier runs replay."""
    lagged = prompt_lag > 0 and (lag_share >= 1.0 or rng.random() < lag_share)
    lag = int(rng.integers(0, prompt_lag + 1)) if lagged else 0
    clips = [sample_clip(rng, size, frames, objects, gap_share, lag, return_share) for _ in range(batch)]
    images = torch.from_numpy(np.stack([c.images for c in clips])).permute(0, 1, 4, 2, 3).float().div(255)
    images = normalize(images.flatten(0, 1)).view(batch, frames, 3, size, size)
    masks = torch.from_numpy(np.concatenate([c.masks for c in clips])).float()
    row_clip = torch.tensor([i for i, c in enumerate(clips) for _ in range(len(c.masks))])
    other = (1.0 - mask_share) / 2
    first = ("mask", "box", "points")[int(rng.choice(3, p=[mask_share, other, other]))]
    rows = [m for c in clips for m in c.masks]
    prompts = [first_frame_prompt(rng, m[0], first) for m in rows] if first != "mask" else []
    corrections = frozenset(int(f) for f in rng.choice(np.arange(1, frames), size=int(rng.integers(0, 2)), replace=False))
    return images, masks, row_clip, ClipPlan(first, prompts, corrections, clips[0].times)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, ClipPlan]


def draw_step(draw: Callable[[np.random.Generator], Batch], seed: int, step: int) -> tuple[Batch, np.random.Generator]:
    """Step ``step``'s batch, and its generator as the drawing left it (the unroll draws on from it)."""
    rng = np.random.default_rng((seed, step))
    return draw(rng), rng


def _draw_in_worker(draw: Callable[[np.random.Generator], Batch], seed: int, step: int) -> tuple[tuple, dict]:
    """:func:`draw_step` in the worker: tensors go back as numpy arrays, the generator as its state."""
    batch, rng = draw_step(draw, seed, step)
    return tuple(_Strided(x.numpy(), x.stride()) if isinstance(x, torch.Tensor) else x for x in batch), \
        rng.bit_generator.state


@dataclass(frozen=True)
class _Strided:
    """A tensor on its way from the worker: its values, and its strides, which pickling drops.
    The strides matter: the images come out of ``make_batch`` permuted, and convolutions round
    differently on a contiguous copy, so the weights would drift from a run drawn in place."""

    values: np.ndarray
    stride: tuple[int, ...]

    def tensor(self) -> torch.Tensor:
        out = torch.empty_strided(self.values.shape, self.stride, dtype=torch.from_numpy(self.values[:0]).dtype)
        return out.copy_(torch.from_numpy(self.values))


def _quiet_worker() -> None:
    torch.set_num_threads(1)  # the trainer keeps the cores; drawing is numpy and OpenCV work


class Prefetcher:
    """Hands out each step's batch; ``start(step)`` draws one ahead in a worker process.

    ``get(step)`` returns exactly what :func:`draw_step` returns in the calling process: the same
    arrays, and a generator in the same state. ``draw`` must be picklable (a module-level function,
    or a ``functools.partial`` of one). With ``workers=0`` everything is drawn in the caller.
    An error in the worker is raised from ``get``.
    """

    def __init__(self, draw: Callable[[np.random.Generator], Batch], seed: int, workers: int = 1) -> None:
        if workers not in (0, 1):
            raise ValueError(f"workers must be 0 or 1, got {workers}")
        self._draw, self._seed = draw, seed
        self._pool = None if workers == 0 else ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_worker)
        self._ahead: tuple[int, Future] | None = None

    def start(self, step: int) -> None:
        """Begin drawing ``step``'s batch in the worker (nothing with ``workers=0``)."""
        self._cancel()
        if self._pool is not None:
            self._ahead = (step, self._pool.submit(_draw_in_worker, self._draw, self._seed, step))

    def get(self, step: int) -> tuple[Batch, np.random.Generator]:
        """Step ``step``'s batch and generator: the worker's, if it was started on that step."""
        if self._ahead is None or self._ahead[0] != step:
            self._cancel()
            return draw_step(self._draw, self._seed, step)
        arrays, state = self._ahead[1].result()
        self._ahead = None
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        return tuple(x.tensor() if isinstance(x, _Strided) else x for x in arrays), rng

    def _cancel(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    def close(self) -> None:
        self._cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def batch_drawer(size: int, batch: int, frames: int, objects: int, **options: Any) -> Callable[[np.random.Generator], Batch]:
    """:func:`make_batch` with everything but the generator fixed, picklable for :class:`Prefetcher`."""
    return functools.partial(make_batch, size=size, batch=batch, frames=frames, objects=objects, **options)
