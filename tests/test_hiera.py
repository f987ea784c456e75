"""The Hiera trunk keeps its resized position embedding between frames, and only while valid."""

from __future__ import annotations

import torch

from streamtrack.config import load_config
from streamtrack.model.hiera import Hiera


def test_position_embedding_cache_follows_weights_and_size():
    torch.manual_seed(0)
    trunk = Hiera(load_config("sam2.1_hiera_t").trunk).eval()
    with torch.no_grad():
        trunk.pos_embed.normal_()
        a = trunk._position_embedding(32, 32)
        assert trunk._position_embedding(32, 32) is a  # kept between frames
        assert trunk._position_embedding(16, 16).shape == (1, 16, 16, 96)  # another size: recomputed
        sd = trunk.state_dict()
        sd["pos_embed"] = torch.randn_like(sd["pos_embed"])
        trunk.load_state_dict(sd)
        b = trunk._position_embedding(32, 32)
    fresh = Hiera(load_config("sam2.1_hiera_t").trunk)
    fresh.load_state_dict(sd)
    with torch.no_grad():
        assert torch.equal(b, fresh._position_embedding(32, 32))
    assert not torch.equal(a, b)
    with torch.enable_grad():  # never cached while autograd records
        trunk._position_embedding(32, 32)
        assert trunk._pe_cache[1] is b
