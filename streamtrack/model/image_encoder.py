"""Image encoder: Hiera trunk plus a feature-pyramid neck."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from streamtrack.config import HieraConfig
from streamtrack.model.common import sine_position_encoding
from streamtrack.model.hiera import Hiera


@dataclass
class BackboneFeatures:
    """What the image encoder gives the rest of the model for one batch of images.

    Sizes are for image side ``S`` (64 = S/16 at S=1024).
    """

    embed: torch.Tensor
    """float[B, 256, S/16, S/16]: top-level features (the 'image embedding' before memory)."""
    embed_pos: torch.Tensor
    """float[B, 256, S/16, S/16]: sine position encoding of ``embed``."""
    high_res: tuple[torch.Tensor, torch.Tensor]
    """(float[B, 32, S/4, S/4], float[B, 64, S/8, S/8]): projected stride-4/8 features for the mask decoder."""


class FpnNeck(nn.Module):
    """1x1 lateral convs to ``d_model`` channels; top-down fusion only into the two coarsest levels.

    The coarsest level (stride 32) is dropped from the output, as in the official
    models (``scalp=1``); the stride-16 level receives the upsampled stride-32 map.
    """

    TOP_DOWN_LEVELS = (2, 3)

    def __init__(self, in_dims: tuple[int, ...], d_model: int = 256) -> None:
        super().__init__()
        # Official layout: convs[0] takes the coarsest stage.
        self.convs = nn.ModuleList()
        for dim in reversed(in_dims):
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """4 trunk maps (fine to coarse) -> 3 maps of ``d_model`` channels (strides 4, 8, 16)."""
        n = len(feats) - 1
        out: list[torch.Tensor] = [feats[0]] * len(feats)
        prev = None
        for level in range(n, -1, -1):
            lateral = self.convs[n - level](feats[level])
            if level in self.TOP_DOWN_LEVELS and prev is not None:
                up = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + up
            else:
                prev = lateral
            out[level] = prev
        return out[:-1]


class ImageEncoder(nn.Module):
    def __init__(self, trunk_cfg: HieraConfig, d_model: int = 256) -> None:
        super().__init__()
        self.trunk = Hiera(trunk_cfg)
        self.neck = FpnNeck(trunk_cfg.stage_dims, d_model)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``float[B, 3, S, S]`` normalised -> maps ``[B, 256, S/4|S/8|S/16, ...]``."""
        return self.neck(self.trunk(images))


def position_encoding_like(x: torch.Tensor) -> torch.Tensor:
    """Sine position encoding for a ``[B, C, H, W]`` map, broadcast over the batch."""
    b, c, h, w = x.shape
    pe = sine_position_encoding(c, h, w, device=x.device).to(x.dtype)
    return pe[None].expand(b, c, h, w)
