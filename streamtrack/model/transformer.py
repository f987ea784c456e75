"""Attention layers: the mask decoder's two-way transformer and the shared projection attention."""

from __future__ import annotations

import torch
from torch import nn

from streamtrack.model.common import MLP, attention


class Attention(nn.Module):
    """Multi-head attention with input/output projections.

    ``downsample`` shrinks the internal width (the decoder's cross-attention
    uses 128 of 256 channels); ``kv_dim`` lets keys/values come from another width.
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1, kv_dim: int | None = None) -> None:
        super().__init__()
        inner = dim // downsample
        kv_dim = kv_dim or dim
        if inner % num_heads:
            raise ValueError("num_heads must divide the internal dimension")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, C] -> [B, heads, N, C/heads]``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, heads, N, d] -> [B, N, heads*d]``, then the output projection."""
        b, h, n, d = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``q: [B, Nq, dim], k/v: [B, Nk, kv_dim] -> [B, Nq, dim]``."""
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        return self.merge_heads(attention(q, k, v))


class TwoWayBlock(nn.Module):
    """Tokens attend to themselves, then to the image; then the image attends to the tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample=2)
        self.skip_first_pe = skip_first_pe

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens: [B, T, C], image: [B, HW, C]`` -> updated (tokens, image)."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)

        keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, keys, image))
        tokens = self.norm3(tokens + self.mlp(tokens))

        image = self.norm4(image + self.cross_attn_image_to_token(keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, skip_first_pe=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image/image_pe: [B, C, H, W], tokens: [B, T, C]`` -> (tokens [B, T, C], image [B, HW, C])."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        queries, keys = tokens, image
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, image_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + image_pe, keys)
        return self.norm_final_attn(queries + attn), keys
