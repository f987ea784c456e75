"""Training-only linear read-outs that make the memory path carry each object's mask.

Trained from scratch on the tracking loss alone, the nano model learned to segment the most
salient shapes and to ignore its memory (docs/nano-model.md). Two 1x1 convolutions give the
memory path a direct signal:

- ``memory``: from a memory written on a frame to the mask it was written from, so that the
  memory encoder keeps the mask;
- ``conditioned``: from a later frame's memory-conditioned features to that frame's true mask,
  so that memory attention carries the mask to where the object is now.

With several objects on the same frames, only the memory can tell their masks apart, so the
read-outs cannot be satisfied by saliency. They are not part of the model and are not saved in
its checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from streamtrack.training.losses import dice

PROBE_WEIGHT = 1.0
"""Weight of each read-out's loss (BCE + dice at feature resolution) in the training loss."""


class MemoryProbes(nn.Module):
    def __init__(self, mem_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.memory = nn.Conv2d(mem_dim, 1, 1)
        self.conditioned = nn.Conv2d(hidden_dim, 1, 1)


def probe_loss(probe: nn.Conv2d, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``feats: float[B, D, h, w]``, ``mask: float[B, 1, S, S]`` in [0, 1] -> mean BCE + dice of
    the read-out against the mask's area fraction in each feature cell."""
    target = F.adaptive_avg_pool2d(mask, feats.shape[-2:])
    logits = probe(feats)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return PROBE_WEIGHT * (bce + dice(logits, target).mean())
