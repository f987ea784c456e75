"""The measurements behind ``streamtrack bench`` and ``benchmarks/``: work counted right, the plot written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from streamtrack import benchmark as bm


@pytest.mark.parametrize("masked", [False, True])
def test_attention_work_is_counted_as_two_flops_per_multiply_add(masked):
    b, h, n_q, n_k, d, dv = 2, 1, 48, 80, 32, 16
    q, k, v = torch.randn(b, h, n_q, d), torch.randn(b, h, n_k, d), torch.randn(b, h, n_k, dv)
    mask = (torch.rand(b, 1, 1, n_k) > 0.3) if masked else None
    counter = FlopCounterMode(display=False, custom_mapping=bm._attention_ops())
    with counter:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert counter.get_total_flops() == 2 * b * h * n_q * n_k * (d + dv)


def test_series_summary_and_plot(tmp_path):
    s = bm.Series([10.0, 20.0, 30.0, 40.0]).summary()
    assert s["median"] == 25.0 and s["max"] == 40.0 and 38.0 < s["p95"] < 40.0
    assert bm.Series([]).summary() == {}
    path = tmp_path / "plot.png"
    bm.plot_png(str(path), "title", {"a": [1.0, 2.0, float("nan"), 3.0], "b": [2.0, 2.5]}, {"x": 5.0, "y": 0.0}, "GFLOP/s")
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (640, 960, 3)
    assert (img < 128).any(axis=2).mean() > 0.01, "something was drawn"
    with pytest.raises(OSError, match="could not write"):
        bm.plot_png(str(tmp_path / "missing" / "plot.png"), "t", {"a": [1.0]}, {}, "ms")


def test_matmul_ceiling_is_a_plausible_rate():
    rate = bm.matmul_ceiling_gflops(n=256, repeats=3)
    assert np.isfinite(rate) and rate > 0.1
