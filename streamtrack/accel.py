"""Kernel selection, applied from outside the plain-PyTorch model.

The memory attention's RoPE attention runs through the fused Triton kernel
(``streamtrack_kernels.rope_attention``) on CUDA, with value folding for the
cross-attention: softmax rows sum to 1, so P (X W_v + b) = (P X) W_v + b and the
P.V product runs over the 64-channel memories instead of 256 channels. Everywhere
else, and with ``STREAMTRACK_DISABLE_TRITON=1``, the model's own exact PyTorch path runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISABLE_ENV = "STREAMTRACK_DISABLE_TRITON"
"""Set to 1 to run the PyTorch path everywhere (the kernel module reads the same variable)."""


def use_fused_attention(device: torch.device) -> bool:
    """True where the fused kernel is the right choice: CUDA with Triton installed, not disabled."""
    if device.type != "cuda":  # decided before importing the kernel module (and Triton) at all
        return False
    from streamtrack_kernels.rope_attention import uses_triton

    return uses_triton(device)


def fused_rope_attention(
    attn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_unrotated: int,
    key_valid: torch.Tensor | None,
    backend: str = "auto",
) -> torch.Tensor:
    """``attn``'s forward (a single-head ``RoPEAttention``) through the fused op.

    ``q: [B, N_q, dim]``, ``k/v: [B, N_k, kv_dim]``; ``cos/sin: float32[N_q, dim/2]``.
    When ``kv_dim`` is smaller than the attention width, V is folded (projected after attention).
    """
    from streamtrack_kernels.rope_attention import rope_attention

    if attn.num_heads != 1:
        raise ValueError("the fused RoPE attention is single-head (as in every SAM 2 config)")
    qp, kp = attn.q_proj(q), attn.k_proj(k)
    n_rope = kp.shape[1] - n_unrotated
    fold = v.shape[-1] < attn.v_proj.out_features
    if fold:
        out = F.linear(rope_attention(qp, kp, v.contiguous(), cos, sin, n_rope, key_valid, backend=backend),
                       attn.v_proj.weight, attn.v_proj.bias)
        if key_valid is not None:  # a row with no valid key: zeros, as without folding
            out = torch.where(key_valid.any(1)[:, None, None], out, 0.0)
    else:
        out = rope_attention(qp, kp, attn.v_proj(v), cos, sin, n_rope, key_valid, backend=backend)
    return attn.out_proj(out)
