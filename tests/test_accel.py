"""The fused-attention integration (value folding, tables, masks) matches the model's own path.

Run with the op's PyTorch backend here (no GPU); the Triton kernel itself is checked in
test_kernel_rope_attention.py under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import torch

from streamtrack import accel
from streamtrack.model.memory_attention import RoPEAttention


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_fused_path_matches_plain_path_with_folding_and_masks():
    torch.manual_seed(0)
    cross = RoPEAttention(256, kv_dim=64).eval()
    self_attn = RoPEAttention(256).eval()
    hw = 64
    q = torch.randn(2, hw, 256)
    mem = torch.randn(2, 3 * hw + 8, 64)
    valid = torch.ones(2, 3 * hw + 8, dtype=torch.bool)
    valid[0, hw : 2 * hw] = False
    valid[1, -4:] = False
    with torch.no_grad():
        rot = cross._rotation(hw, 256, q.device)
        cos, sin = rot.real.contiguous(), rot.imag.contiguous()
        for kv, module, n_ptr, kv_valid in ((mem, cross, 8, valid), (q, self_attn, 0, None)):
            plain = module(q, kv, kv, n_ptr, kv_valid)
            fused = accel.fused_rope_attention(module, q, kv, kv, cos, sin, n_ptr, kv_valid, backend="torch")
            assert rel(fused, plain) < 1e-5


def test_fused_path_is_only_chosen_on_cuda(monkeypatch):
    assert not accel.use_fused_attention(torch.device("cpu"))
    monkeypatch.setenv(accel.DISABLE_ENV, "1")
    assert not accel.use_fused_attention(torch.device("cuda"))
