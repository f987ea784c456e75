"""Memory encoder: fuses a frame's features with its predicted mask into a compact memory."""

from __future__ import annotations

import torch
from torch import nn

from streamtrack.model.common import LayerNorm2d


class MaskDownSampler(nn.Module):
    """Four stride-2 3x3 convs (x4 channels each) and a 1x1 projection: ``[B,1,S,S] -> [B,C,S/16,S/16]``."""

    def __init__(self, out_dim: int = 256, num_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(num_layers):
            layers += [nn.Conv2d(chans, chans * 4, kernel_size=3, stride=2, padding=1), LayerNorm2d(chans * 4), nn.GELU()]
            chans *= 4
        layers.append(nn.Conv2d(chans, out_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class ConvNeXtBlock(nn.Module):
    """Depth-wise 7x7 conv, LayerNorm, pointwise MLP (x4), layer scale, residual."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode one memory per object.

        Args:
            pix_feat: float[B, 256, S/16, S/16] frame features (without memory conditioning).
            mask: float[B, 1, S, S] at model resolution, as the tracker prepares it
                (``sigmoid(logits)`` or a binarised mask, times scale plus bias).

        Returns:
            float[B, 64, S/16, S/16] memory features; their position encoding is
            :func:`streamtrack.model.image_encoder.position_encoding_like`.
        """
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)
        return self.out_proj(self.fuser(x))
