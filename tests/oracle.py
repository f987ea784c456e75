"""The official SAM 2 package (``sam2==1.1.0``) as a test oracle.

Builds official models with seeded random weights, saves them in the official
checkpoint format, and exposes the official image predictor.

The official image predictor imports torchvision only for three transforms.
torchvision from PyPI does not import beside the CPU torch these machines use,
and the pair that does (torch 2.14.1 + torchvision 0.29.1) is a 5.5 GB CUDA
build. So when torchvision is missing, a stub provides exactly the tensor
operations torchvision documents for them (ToTensor: HWC uint8 -> CHW float / 255;
Resize on a tensor: bilinear, antialias=True; Normalize: (x - mean) / std).
Everything else the predictor does, coordinate transforms, prompt assembly,
decoding and post-processing, is the official code.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_CONFIG_FILES = {
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def _install_torchvision_stub() -> None:
    try:
        import torchvision.transforms  # noqa: F401

        return
    except Exception:
        pass

    class ToTensor:
        def __call__(self, pic):
            return torch.from_numpy(pic.transpose(2, 0, 1)).contiguous().float().div(255)

    class Resize(nn.Module):
        def __init__(self, size: tuple[int, int]) -> None:
            super().__init__()
            self.size = [int(size[0]), int(size[1])]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]

    class Normalize(nn.Module):
        def __init__(self, mean: list[float], std: list[float]) -> None:
            super().__init__()
            self.mean = torch.tensor(mean)[:, None, None]
            self.std = torch.tensor(std)[:, None, None]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.ToTensor, tr.Resize, tr.Normalize = ToTensor, Resize, Normalize
    tv.transforms = tr
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tr


def build_official(
    name: str, image_size: int = 1024, seed: int = 0, video: bool = False, overrides: tuple[str, ...] = ()
) -> nn.Module:
    """An official model (as ``build_sam2`` or ``build_sam2_video_predictor`` makes it) with
    seeded random weights: default init plus noise on *every* parameter and buffer."""
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    overrides = [f"++model.image_size={image_size}", *overrides]
    builder = build_sam2_video_predictor if video else build_sam2
    torch.manual_seed(seed)
    model = builder(OFFICIAL_CONFIG_FILES[name], ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    perturb(model, seed)
    return model.eval()


@torch.no_grad()
def perturb(model: nn.Module, seed: int, scale: float = 0.02) -> None:
    """Add seeded Gaussian noise to every parameter and buffer, so no path hides behind 0 or 1."""
    gen = torch.Generator().manual_seed(seed + 1)
    for _, t in sorted(model.state_dict(keep_vars=True).items()):
        if t.is_floating_point():
            t.add_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * scale)


def save_official_checkpoint(model: nn.Module, path: Path) -> Path:
    torch.save({"model": model.state_dict()}, path)
    return path


def official_image_predictor(model: nn.Module):
    """The official ``SAM2ImagePredictor`` around ``model``, with feature sizes for its image size."""
    _install_torchvision_stub()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    s = model.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


def official_video_state(predictor, frames: list, images: torch.Tensor, workdir: Path) -> dict:
    """An official inference state for ``frames`` (uint8[H, W, 3] each) whose model inputs are
    ``images`` (float[N, 3, S, S], streamtrack's preprocessing), so both sides see identical inputs.

    The official loader wants a folder of JPEGs; it gets placeholder files, and the decoded
    frames are then replaced by ``images``.
    """
    import numpy as np
    from PIL import Image

    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*.jpg"):
        old.unlink()
    h, w = frames[0].shape[:2]
    for i in range(len(frames)):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(workdir / f"{i:05d}.jpg")
    state = predictor.init_state(video_path=str(workdir))
    state["images"] = images
    state["cached_features"] = {}
    return state
