"""The CPU path for many small attentions gives softmax attention, as the flash kernel does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamtrack.model import common


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "small"),
    [
        ((64, 4, 4, 24), (64, 4, 16, 24), True),  # Hiera pooled windows
        ((64, 1, 64, 24), (64, 1, 64, 24), True),  # Hiera first-stage windows
        ((1, 8, 256, 6), (1, 8, 8, 6), True),  # decoder: image to tokens
        ((1, 8, 8, 6), (1, 8, 256, 6), False),  # decoder: tokens to image (many keys)
        ((1, 1, 8, 96), (1, 1, 8, 96), False),  # one head: the flash kernel is faster
    ],
)
def test_small_attention_matches_a_float64_reference(q_shape, k_shape, small):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, generator=gen) * 2 for s in (q_shape, k_shape, k_shape))
    assert common._small_on_cpu(q, k) is small
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    out = common.attention(q, k, v)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-5)  # float32 rounding; a wrong scale is O(1)
    # A non-contiguous view, as Hiera passes its heads.
    qt, kt, vt = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    torch.testing.assert_close(common.attention(qt, kt, vt), out, rtol=0, atol=2e-5)
