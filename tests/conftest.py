"""Shared fixtures: official models with random weights, their checkpoints, and ours."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from oracle import build_official, save_official_checkpoint  # noqa: E402

torch.set_num_threads(2)


@dataclass
class Pair:
    """An official model and streamtrack's model loaded from its saved checkpoint."""

    name: str
    image_size: int
    official: torch.nn.Module
    ours: torch.nn.Module
    checkpoint: Path


@pytest.fixture(scope="session")
def pair_cache(tmp_path_factory):
    cache: dict[tuple[str, int], Pair] = {}
    root = tmp_path_factory.mktemp("checkpoints")

    def get(name: str, image_size: int) -> Pair:
        key = (name, image_size)
        if key not in cache:
            from streamtrack.checkpoint import load_model

            cache.clear()  # keep at most one pair of (possibly large) models alive
            official = build_official(name, image_size, seed=0)
            path = save_official_checkpoint(official, root / f"{name}.pt")
            ours = load_model(name, path, image_size=image_size)
            cache[key] = Pair(name, image_size, official, ours, path)
        return cache[key]

    return get


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8[h, w, 3]); smooth so resizing is not pure noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    t = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    img = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = img.permute(1, 2, 0).numpy() + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


SMALL_CONFIG = """
name: small_test
image_size: 128
trunk:
  embed_dim: 32
  num_heads: 1
  stages: [1, 1, 1, 1]
  global_att_blocks: [2, 3]
  window_spec: [8, 4, 4, 4]
  window_pos_embed_bkg_spatial_size: [4, 4]
hidden_dim: 96
mem_dim: 32
memory_attention_layers: 2
memory_attention_ffn_dim: 384
decoder_mlp_dim: 384
no_obj_embed_spatial: true
obj_ptr_temporal_encoding: true
"""
"""A small model at 128 px for tests that need many frames fast: a small trunk, and the nano
config's widths for the decoder, memory attention and memory bank (a frame costs about 0.4 of
what full widths cost). Full-size models are covered by the parity tests."""


@pytest.fixture(scope="session")
def small_model_files(tmp_path_factory):
    """(config path, checkpoint path) of the small test model with seeded random weights."""
    from streamtrack.config import load_config
    from streamtrack.model import build_sam2

    root = tmp_path_factory.mktemp("small_model")
    cfg = root / "small.yaml"
    cfg.write_text(SMALL_CONFIG)
    torch.manual_seed(0)
    ckpt = root / "small.pt"
    torch.save({"model": build_sam2(load_config(cfg)).state_dict()}, ckpt)
    return cfg, ckpt
