"""Memory attention: the current frame's features attend to the memory bank.

Each layer: RoPE self-attention over the frame, RoPE cross-attention to the
memories (spatial memory tokens are rotated by their grid position; object-pointer
tokens at the end are not), then an MLP. Pre-norm, residual.
"""

from __future__ import annotations

import torch
from torch import nn

from streamtrack import accel
from streamtrack.model.common import attention
from streamtrack.model.transformer import Attention


def axial_rope_angles(head_dim: int, side: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Rotation angles of a ``side x side`` grid: ``float[side*side, head_dim/2]``.

    The first half of each head's channel pairs rotates with x, the second with y.
    """
    n = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[:n].float() / head_dim))
    idx = torch.arange(side * side, dtype=torch.float32, device=device)
    tx = idx % side
    ty = torch.div(idx, side, rounding_mode="floor")
    return torch.cat((torch.outer(tx, freqs), torch.outer(ty, freqs)), dim=-1)


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs: ``x: [..., N, D]`` by unit complex numbers ``rot: complex[N, D/2]``.

    Complex multiplication (rather than cos/sin arithmetic) rounds exactly as the
    official implementation does, which keeps long-stream parity tight.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rot).flatten(-2).type_as(x)


class RoPEAttention(Attention):
    """:class:`Attention` with 2D rotary position encoding on queries and keys.

    Queries form a square grid; keys are ``n_rope`` grid tokens (any whole number
    of grids, each rotated like the queries) followed by unrotated tokens.
    """

    def __init__(self, dim: int, num_heads: int = 1, kv_dim: int | None = None, theta: float = 10000.0) -> None:
        super().__init__(dim, num_heads, kv_dim=kv_dim)
        self.theta = theta
        self._rotations: dict[tuple[int, str], torch.Tensor] = {}

    def _rotation(self, n_query: int, head_dim: int, device: torch.device) -> torch.Tensor:
        """``complex[n_query, head_dim/2]`` unit rotations of the query grid (cached per size)."""
        side = int(round(n_query**0.5))
        if side * side != n_query:
            raise ValueError(f"RoPE queries must form a square grid, got {n_query} tokens")
        key = (n_query, str(device))
        if key not in self._rotations:
            ang = axial_rope_angles(head_dim, side, self.theta, device)
            self._rotations[key] = torch.polar(torch.ones_like(ang), ang)
        return self._rotations[key]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        n_unrotated: int = 0,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``q: [B, HW, dim]``, ``k/v: [B, Nk, kv_dim]`` -> ``[B, HW, dim]``.

        The last ``n_unrotated`` keys (object pointers) get no rotation;
        ``key_valid``: optional bool[B, Nk] to ignore empty memory slots.
        On CUDA the fused Triton kernel runs instead (see ``streamtrack.accel``).
        """
        if accel.use_fused_attention(q.device):
            rot = self._rotation(q.shape[1], q.shape[-1] // self.num_heads, q.device)
            return accel.fused_rope_attention(self, q, k, v, rot.real.contiguous(), rot.imag.contiguous(),
                                              n_unrotated, key_valid)
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        n_q = q.shape[-2]
        rot = self._rotation(n_q, q.shape[-1], q.device)
        q = rotate(q, rot)
        n_rope = k.shape[-2] - n_unrotated
        if n_rope > 0:
            if n_rope % n_q:
                raise ValueError(f"{n_rope} rotated keys are not a whole number of {n_q}-token grids")
            reps = n_rope // n_q
            k_rot = rotate(k[:, :, :n_rope], rot.repeat(reps, 1))
            k = torch.cat((k_rot, k[:, :, n_rope:]), dim=2)
        return self.merge_heads(attention(q, k, v, key_valid))


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int = 256, mem_dim: int = 64, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim)
        self.cross_attn_image = RoPEAttention(dim, kv_dim=mem_dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        n_ptr_tokens: int,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)
        h = self.norm2(x)
        x = x + self.cross_attn_image(h, memory + memory_pos, memory, n_ptr_tokens, key_valid)
        h = self.norm3(x)
        return x + self.linear2(torch.relu(self.linear1(h)))


class MemoryAttention(nn.Module):
    def __init__(self, dim: int = 256, mem_dim: int = 64, num_layers: int = 4, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, mem_dim, ffn_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        n_ptr_tokens: int = 0,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition frame features on memory.

        Args:
            curr, curr_pos: float[B, HW, 256] frame tokens and their sine encoding.
            memory, memory_pos: float[B, Nk, 64]: spatial memories (whole HW grids
                first), then ``n_ptr_tokens`` object-pointer tokens.
            key_valid: optional bool[B, Nk]; False marks empty slots.

        Returns:
            float[B, HW, 256].
        """
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, n_ptr_tokens, key_valid)
        return self.norm(x)
