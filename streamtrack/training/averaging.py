"""A running mean of a model's weights over the last steps of a run (a tail average)."""

from __future__ import annotations

import torch


class TailAverage:
    """The uniform mean of a model's floating-point weights over the steps added so far.

    The mean is kept in float64, so that a few hundred updates do not round it; ``weights()`` gives
    it back in each tensor's own dtype, with non-float entries (counters, indices) as last seen.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}
        self.other: dict[str, torch.Tensor] = {}

    def add(self, state: dict[str, torch.Tensor]) -> None:
        """Fold one step's weights (a ``state_dict``) into the mean."""
        self.count += 1
        for name, value in state.items():
            value = value.detach()
            if not value.is_floating_point():
                self.other[name] = value.clone()
            elif name not in self.mean:
                self.mean[name] = value.to(torch.float64, copy=True)
            else:
                self.mean[name] += (value.to(torch.float64) - self.mean[name]) / self.count

    def weights(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean as a ``state_dict`` with the keys, order and dtypes of ``like``."""
        if self.count == 0:
            raise ValueError("no weights were added to the average")
        return {name: (self.mean[name].to(value.dtype) if value.is_floating_point() else self.other[name])
                for name, value in like.items()}

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "other": self.other}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.mean = dict(state["mean"])
        self.other = dict(state["other"])
