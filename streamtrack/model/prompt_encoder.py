"""Prompt encoder: points/box corners to sparse tokens, a low-res mask to a dense map.

Point labels: 1 foreground, 0 background, 2 box top-left, 3 box bottom-right,
-1 padding (not a point).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from streamtrack.model.common import LayerNorm2d


class RandomFourierEncoding(nn.Module):
    """Position encoding with fixed random spatial frequencies (stored in the checkpoint)."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        """``float[..., 2]`` (x, y) in [0, 1] -> ``float[..., 2 * num_feats]``."""
        angles = 2 * math.pi * ((2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid: ``float[C, h, w]``."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        coords = torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), dim=-1)
        return self.encode(coords).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, embed_size: int, image_size: int, mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embed_size = embed_size
        self.image_size = image_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # Index = label: 0 background, 1 foreground, 2/3 box corners.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask input (256 at image size 1024)."""
        return 4 * self.embed_size

    def dense_pe(self) -> torch.Tensor:
        """``float[1, C, S/16, S/16]``: the encoding of the image-embedding grid."""
        return self.pe_layer.grid(self.embed_size, self.embed_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``float[B, N, 2]`` pixel (x, y) at model resolution, ``int[B, N]`` -> ``float[B, N, C]``."""
        pe = self.pe_layer.encode((coords + 0.5) / self.image_size)
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)  # [4, C]
        label_embed = table[labels.clamp(min=0).long()]
        out = pe + label_embed
        not_point = (labels == -1).unsqueeze(-1)
        return torch.where(not_point, self.not_a_point_embed.weight.expand_as(out), out)

    def forward(
        self,
        batch: int,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts for ``batch`` decodes.

        Args:
            coords: float[B, N, 2] point coordinates (x, y) in model-input pixels, or None.
            labels: int[B, N], or None. A padding point (label -1) is appended, as
                the official models were trained with it.
            mask: float[B, 1, 4*S/16, 4*S/16] low-res mask logits, or None.

        Returns:
            sparse: float[B, N+1, C] (float[B, 0, C] without points),
            dense: float[B, C, S/16, S/16].
        """
        if coords is not None:
            pad_xy = coords.new_zeros(coords.shape[0], 1, 2)
            pad_label = labels.new_full((labels.shape[0], 1), -1)
            sparse = self.embed_points(torch.cat((coords, pad_xy), 1), torch.cat((labels, pad_label), 1))
        else:
            sparse = self.no_mask_embed.weight.new_zeros(batch, 0, self.embed_dim)
        if mask is not None:
            dense = self.mask_downscaling(mask)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                batch, -1, self.embed_size, self.embed_size
            )
        return sparse, dense
