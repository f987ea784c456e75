"""Turning user images and coordinates into model inputs, and model outputs back."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Validate ``uint8[H, W, 3]`` RGB; raise ValueError with what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape [H, W, 3] (RGB), got {list(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image is empty")
    return image


def image_to_input(image: np.ndarray | torch.Tensor, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``uint8[H, W, 3]`` RGB -> ``float32[1, 3, size, size]``, resized (bilinear, antialiased) and normalised."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(check_rgb_image(image)))
    x = image.to(device).permute(2, 0, 1).float().div(255)
    return normalize(resize(x[None], size))


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``float[B, 3, H, W]`` in [0, 1] -> ``float[B, 3, size, size]`` (bilinear, antialiased)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of ``float[B, 3, H, W]`` in [0, 1]."""
    mean = torch.tensor(MEAN, device=x.device)[:, None, None]
    std = torch.tensor(STD, device=x.device)[:, None, None]
    return (x - mean) / std


def to_model_coords(xy: torch.Tensor, orig_hw: tuple[int, int], size: int) -> torch.Tensor:
    """Pixel (x, y) in the source image -> pixels of the ``size x size`` model input."""
    h, w = orig_hw
    out = xy.clone().float()
    out[..., 0] = out[..., 0] / w
    out[..., 1] = out[..., 1] / h
    return out * size


def logits_to_source(low_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """``float[B, M, h, w]`` low-res logits -> ``float[B, M, H, W]`` at source size (bilinear)."""
    return F.interpolate(low_res.float(), size=tuple(orig_hw), mode="bilinear", align_corners=False)
