"""Small building blocks shared by the model parts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them (none after the last).

    Parameter names (``layers.{i}``) follow the official checkpoint layout.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        act: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, H, W]`` maps."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _interleaved_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` angles -> ``[..., D]`` with sin at even and cos at odd positions."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_encoding(
    channels: int, height: int, width: int, device: torch.device | None = None, temperature: float = 10000.0
) -> torch.Tensor:
    """Normalised 2D sine encoding of a feature grid (DETR style).

    Returns ``float32[channels, height, width]``: the first half of the channels
    encodes y, the second half x; positions are scaled to (0, 2*pi].
    """
    half = channels // 2
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    eps = 1e-6
    y = y / (height + eps) * (2 * math.pi)
    x = x / (width + eps) * (2 * math.pi)
    k = torch.arange(half, dtype=torch.float32, device=device)
    inv = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    pos_y = _interleaved_sin_cos(y[:, None] / inv)  # [H, half]
    pos_x = _interleaved_sin_cos(x[:, None] / inv)  # [W, half]
    pos_y = pos_y[:, None, :].expand(height, width, half)
    pos_x = pos_x[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).contiguous()


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine/cosine encoding: ``float[N] -> float[N, dim]`` (all sines, then all cosines)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=positions.device)
    inv = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)
    angles = positions[..., None] / inv
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention: ``[B, heads, Nq, D], [B, heads, Nk, D] -> [B, heads, Nq, D]``.

    ``key_valid``: optional bool[B, Nk]; keys marked False are ignored, exactly as
    if they were absent (fixed-capacity memory uses this for empty slots).

    The one place the model calls attention, so faster kernels can be swapped in
    from outside (see ``streamtrack.accel``).
    """
    if key_valid is None:
        if _small_on_cpu(q, k):
            weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
            return weights @ v
        return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])


SMALL_ATTENTION_KEYS = 64
SMALL_ATTENTION_BATCH = 8


def _small_on_cpu(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Many small attentions (Hiera's windows, the decoder's token attention) on the CPU.

    There, two matmuls and a softmax beat PyTorch's flash kernel, whose per-block set-up
    dominates at these sizes: 111 against 620 us for 64 windows x 4 heads of 4 queries, 16 keys.
    With few heads or many keys the flash kernel stays faster (docs/speed.md, "Small
    attentions and the first stage's layout on the CPU").
    """
    return (q.device.type == "cpu" and k.shape[-2] <= SMALL_ATTENTION_KEYS
            and q.shape[:-2].numel() >= SMALL_ATTENTION_BATCH)
