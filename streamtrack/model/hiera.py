"""Hiera: the hierarchical ViT trunk of the image encoder.

Four stages at strides 4, 8, 16 and 32. Each stage after the first starts with
a block that max-pools its queries by 2x2 and doubles the channels. Most
blocks attend within windows; a few (``global_att_blocks``) attend globally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from streamtrack.config import HieraConfig
from streamtrack.model.common import MLP, attention


def _pad_to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad ``[B, H, W, C]`` on the bottom/right to a multiple of ``window``."""
    _, h, w, _ = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, Hp, W p, C]`` (padded) -> ``[B * nWin, window, window, C]``."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def from_windows(x: torch.Tensor, window: int, hp: int, wp: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: ``[B * nWin, window, window, C] -> [B, Hp, Wp, C]``."""
    b = x.shape[0] // ((hp // window) * (wp // window))
    x = x.reshape(b, hp // window, wp // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)


def _pool2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pool of a channels-last map ``[B, H, W, C] -> [B, H/2, W/2, C]``."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).permute(0, 2, 3, 1)


class PooledAttention(nn.Module):
    """Multi-head self-attention whose queries may be 2x2 max-pooled (stage changes)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_q: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_q = pool_q
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim] -> [B, H', W', dim_out]`` (H' = H/2 when pooling)."""
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each [B, HW, heads, d]
        if self.pool_q:
            q = _pool2x(q.reshape(b, h, w, -1))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class HieraBlock(nn.Module):
    """Pre-norm transformer block with optional windowing and query pooling."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window: int, pool_q: bool) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window = window
        self.pool_q = pool_q
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledAttention(dim, dim_out, num_heads, pool_q)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, num_layers=2, act=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim] -> [B, H', W', dim_out]``."""
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool_q:
                shortcut = _pool2x(shortcut)
        h, w = shortcut.shape[1:3]  # output size
        if self.window > 0:
            x = _pad_to_windows(x, self.window)
            x = self.attn(to_windows(x, self.window))
            out_window = self.window // 2 if self.pool_q else self.window
            hp, wp = h + (-h % out_window), w + (-w % out_window)
            x = from_windows(x, out_window, hp, wp)[:, :h, :w]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution to tokens: ``[B, 3, S, S] -> [B, S/4, S/4, C]``."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Tokens contiguous in [B, H, W, C]: the first stage's map then reaches the neck's 1x1
        # conv channels-last, where the CPU runs it several times faster (docs/speed.md).
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class Hiera(nn.Module):
    """The trunk. Returns one feature map per stage, highest resolution first."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        first_window = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, first_window, first_window))
        self._pe_cache: tuple[tuple, torch.Tensor] | None = None

        stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self.stage_ends = tuple(stage_ends)
        self.blocks = nn.ModuleList()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(cfg.depth):
            starts_stage = i > 0 and (i - 1) in stage_ends
            # The first block of a stage still uses the previous stage's window.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if starts_stage:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(HieraBlock(dim, dim_out, heads, window, pool_q=starts_stage))
            dim = dim_out

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        """Background embedding resized to the grid plus the tiled window embedding: ``[1, H, W, C]``.

        Constant for given weights and grid size, so it is kept between frames (recomputed when
        the weights change, and never kept while autograd records).
        """
        key = (h, w, self.pos_embed.device, self.pos_embed._version, self.pos_embed_window._version)
        if self._pe_cache is not None and self._pe_cache[0] == key:
            return self._pe_cache[1]
        bkg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        reps = (h // win.shape[-2], w // win.shape[-1])
        pe = (bkg + win.tile(1, 1, *reps)).permute(0, 2, 3, 1)
        if not torch.is_grad_enabled():
            self._pe_cache = (key, pe)
        return pe

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``float[B, 3, S, S]`` -> 4 maps ``[B, C_i, S/4/2^i, S/4/2^i]``."""
        x = self.patch_embed(x)
        x = x + self._position_embedding(x.shape[1], x.shape[2])
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs
