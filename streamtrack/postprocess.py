"""Mask post-processing: hole filling (OpenCV connected components) and non-overlap."""

from __future__ import annotations

import cv2
import numpy as np
import torch

HOLE_FILL_VALUE = 0.1
"""Logit written into a filled hole: just above the threshold, as in the official code."""


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Turn small background regions into foreground.

    A hole is an 8-connected component of background pixels (logit <= 0) with
    at most ``max_area`` pixels. Its logits become 0.1. Components touching the
    border count too, as in the official CUDA implementation.

    ``logits: float[B, 1, h, w]`` (low-res) -> same shape; ``max_area <= 0`` is a no-op.
    """
    if max_area <= 0:
        return logits
    background = (logits <= 0).cpu().numpy().astype(np.uint8)
    fill = np.zeros(background.shape, dtype=bool)
    for b in range(background.shape[0]):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background[b, 0], connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1
        if small.size:
            fill[b, 0] = np.isin(labels, small)
    if not fill.any():
        return logits
    return torch.where(torch.from_numpy(fill).to(logits.device), HOLE_FILL_VALUE, logits)


def non_overlapping(logits: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Each pixel goes to the object with the highest logit (the first on a tie); the others are
    clamped to at most -10.

    ``logits: float[N, 1, H, W]`` -> same shape. ``active: bool[N]`` (optional): only these
    objects compete; the other rows (empty bank rows) are returned unchanged.
    """
    if logits.shape[0] <= 1:
        return logits
    compete = logits
    if active is not None:
        compete = logits.masked_fill(~active[:, None, None, None], float("-inf"))
    winner = compete.max(dim=0, keepdim=True).indices  # argmax over dim 0 is ~15x slower on CPU
    keep = winner == torch.arange(logits.shape[0], device=logits.device)[:, None, None, None]
    if active is not None:
        keep = keep | ~active[:, None, None, None]
    return torch.where(keep, logits, logits.clamp(max=-10.0))
