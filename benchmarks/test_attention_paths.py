"""Micro-benchmarks of the memory cross-attention paths (pytest-benchmark).

One SAM 2 memory cross-attention layer at 512 px: 32x32 = 1,024 queries against 7 memory
frames (7,168 rotated keys) and 64 object-pointer tokens, attention width 256, memories 64
channels. Each benchmark first checks its path against a float64 reference, so a fast
wrong path fails.

    .venv-test/bin/python -m pytest benchmarks/test_attention_paths.py --benchmark-only
    .venv-test/bin/python -m pytest benchmarks/test_attention_paths.py --benchmark-columns=min,median,max

The suite runs them too (``testpaths``), timing included: pytest-benchmark stops each one
after about a second.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamtrack.accel import fused_rope_attention
from streamtrack.model.memory_attention import RoPEAttention

SIDE, FRAMES, POINTER_TOKENS, DIM, MEM_DIM = 32, 7, 64, 256, 64
N_Q, N_ROPE = SIDE * SIDE, FRAMES * SIDE * SIDE
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def layer() -> RoPEAttention:
    torch.manual_seed(0)
    attn = RoPEAttention(DIM, 1, kv_dim=MEM_DIM).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return attn


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, N_Q, DIM, generator=g)
    k = torch.randn(1, N_ROPE + POINTER_TOKENS, MEM_DIM, generator=g)
    return q, k, torch.randn(k.shape, generator=g)


@pytest.fixture(scope="module")
def reference(layer, inputs) -> torch.Tensor:
    """The layer in float64."""
    wide = RoPEAttention(DIM, 1, kv_dim=MEM_DIM).double()
    wide.load_state_dict(layer.state_dict())
    q, k, v = inputs
    with torch.no_grad():
        return wide(q.double(), k.double(), v.double(), POINTER_TOKENS).float()


def rotation(layer: RoPEAttention) -> tuple[torch.Tensor, torch.Tensor]:
    rot = layer._rotation(N_Q, DIM, torch.device("cpu"))
    return rot.real.contiguous(), rot.imag.contiguous()


def check(out: torch.Tensor, reference: torch.Tensor) -> None:
    err = (out - reference).abs().max().item() / reference.abs().max().item()
    assert err < TOLERANCE, f"relative error {err:.2e}"


@torch.no_grad()
def test_model_path_values_projected_first(benchmark, layer, inputs, reference):
    """The model's CPU path: V projected to 256 channels, then PyTorch's fused attention."""
    q, k, v = inputs
    check(benchmark(layer, q, k, v, POINTER_TOKENS), reference)


@torch.no_grad()
def test_folded_values_through_the_op(benchmark, layer, inputs, reference):
    """Value folding through ``streamtrack::rope_attention`` (PyTorch backend): P.V over the
    64-channel memories, the projection after."""
    q, k, v = inputs
    cos, sin = rotation(layer)
    check(benchmark(fused_rope_attention, layer, q, k, v, cos, sin, POINTER_TOKENS, None, backend="torch"), reference)


@torch.no_grad()
@pytest.mark.parametrize("v_dim", [DIM, MEM_DIM])
def test_fused_attention_by_value_width(benchmark, v_dim):
    """PyTorch's fused CPU attention alone, 256- against 64-channel values: folding saves work only
    if the narrower call stays on the fast path."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, N_Q, DIM, generator=g)
    k = torch.randn(1, 1, N_ROPE + POINTER_TOKENS, DIM, generator=g)
    v = torch.randn(1, 1, k.shape[2], v_dim, generator=g)
    out = benchmark(F.scaled_dot_product_attention, q, k, v)
    scores = (q.double() @ k.double().transpose(-1, -2)) / DIM**0.5
    check(out, torch.softmax(scores, -1) @ v.double())
