"""Single-head attention with 2D RoPE applied inside the kernel (SAM 2 memory attention).

``out = softmax(rot(q) rot(k)^T / sqrt(D) masked by key_valid) v``, where ``rot`` turns
channel pairs ``(2i, 2i+1)`` by ``theta[n, i]`` (tables ``cos, sin: float32[N_q, D/2]``).
Query ``n`` uses table row ``n``; key ``j < n_rope`` uses row ``j % N_q`` (memory frames
are whole query grids); keys ``j >= n_rope`` (object pointers) are not rotated.

V has its own head dim, so value projections can be folded out: since softmax rows
sum to 1, ``P (X W^T + b) = (P X) W^T + b``; pass ``v = X`` (64 channels for SAM 2
memories) and apply ``W, b`` to the result.

Contract shared by both backends:
- invalid keys (``key_valid`` False) are ignored exactly; their k and v are never
  used in arithmetic, so they may hold anything, even NaN;
- a batch row with no valid key gets an all-zero output;
- compute is fp32 (rotation, scores, softmax, accumulation); the output has the
  input dtype. On the GPU, fp32 inputs use 3xTF32 tensor-core products, which are
  accurate to about fp32 rounding.

Layout follows the Triton tutorials: the kernel, a launcher that checks its inputs,
and the public op ``rope_attention`` (registered as ``torch.ops.streamtrack.rope_attention``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch path still works; the Triton backend reports itself unavailable
    triton = None

    class _NoTriton:
        @staticmethod
        def jit(fn):
            return fn

    _jit = _NoTriton.jit
else:
    _jit = triton.jit

DISABLE_ENV = "STREAMTRACK_DISABLE_TRITON"
BACKENDS = ("auto", "triton", "torch")


# --------------------------------------------------------------------------- kernel


@_jit
def _mma_operand(x, dtype, STAGE_IN_SMEM: tl.constexpr, INTERPRETER: tl.constexpr):
    """``x`` rounded to ``dtype``, ready to be a ``tl.dot`` operand.

    STAGE_IN_SMEM (compiled only): pass the tile through an opaque identity (one PTX mov),
    so Triton computes it once per CTA in a distributed layout and stages it in shared
    memory. Without it, on sm_80 (mma.sync) Triton hoists the MMA-operand layout above the
    rotation, so every warp along M rotates the whole K tile in its own registers: 4x the
    ALU work at 4 warps, and register spills (aot report).

    INTERPRETER: Triton's CPU interpreter multiplies the raw bit patterns of bf16 ``tl.dot``
    operands (triton-lang/triton#11584), so widen the rounded values to fp32 (exact): the
    products are then the tensor cores' products.
    """
    x = x.to(dtype)
    if INTERPRETER:
        x = x.to(tl.float32)
    elif STAGE_IN_SMEM:
        x = tl.inline_asm_elementwise(
            "mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=32 // dtype.primitive_bitwidth
        )
    return x


@_jit
def _load_rotated_half(
    base, row_stride, rows, row_ok, table_rows, rotate, cos_ptr, sin_ptr,
    HALF: tl.constexpr, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr,
    STAGE_IN_SMEM: tl.constexpr, INTERPRETER: tl.constexpr,
):
    """Rows ``rows`` of channels ``[HALF*D/2, (HALF+1)*D/2)``, rotated: (even, odd) channels,
    each ``[ROWS, D/4]`` as MMA operands. Rows with ``rotate`` False come back unrotated,
    rows with ``row_ok`` False as zeros (their memory is never read)."""
    QUARTER: tl.constexpr = HEAD_DIM // 4
    cols = HALF * (HEAD_DIM // 2) + tl.arange(0, HEAD_DIM // 2)
    x = tl.load(base + rows[:, None] * row_stride + cols[None, :], mask=row_ok[:, None], other=0.0)
    even, odd = tl.split(tl.reshape(x.to(tl.float32), (ROWS, QUARTER, 2)))
    pairs = HALF * QUARTER + tl.arange(0, QUARTER)
    t_off = table_rows[:, None] * (HEAD_DIM // 2) + pairs[None, :]
    c = tl.load(cos_ptr + t_off, mask=rotate[:, None], other=1.0)
    s = tl.load(sin_ptr + t_off, mask=rotate[:, None], other=0.0)
    dtype = base.dtype.element_ty
    return (
        _mma_operand(even * c - odd * s, dtype, STAGE_IN_SMEM, INTERPRETER),
        _mma_operand(even * s + odd * c, dtype, STAGE_IN_SMEM, INTERPRETER),
    )


@_jit
def _rope_attention_fwd_kernel(
    Q, K, V, COS, SIN, KEY_VALID, OUT,
    stride_qb, stride_qm, stride_kb, stride_kn, stride_vb, stride_vn, stride_ob, stride_om, stride_mb,
    N_Q, N_K, N_ROPE, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEY_VALID: tl.constexpr, DOT_PRECISION: tl.constexpr, INTERPRETER: tl.constexpr,
):
    """One program: BLOCK_M queries of batch row ``program_id(1)``, value channels
    ``[program_id(2)*BLOCK_DV, +BLOCK_DV)``, against all keys in one pass.

    D = HEAD_DIM is split into its two RoPE halves (x pairs, y pairs) and each half into
    even and odd channels, so QK^T is four dots of depth D/4 and the rotated K tile is
    built a quarter of D at a time. ``qk_scale`` = log2(e) / sqrt(D): softmax runs in base 2.
    """
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    dv0 = tl.program_id(2) * BLOCK_DV
    Q += b * stride_qb
    K += b * stride_kb
    V += b * stride_vb + dv0
    OUT += b * stride_ob + dv0
    KEY_VALID += b * stride_mb

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < N_Q
    q0e, q0o = _load_rotated_half(Q, stride_qm, offs_m, m_ok, offs_m, m_ok, COS, SIN, 0, HEAD_DIM, BLOCK_M,
                                  False, INTERPRETER)
    q1e, q1o = _load_rotated_half(Q, stride_qm, offs_m, m_ok, offs_m, m_ok, COS, SIN, 1, HEAD_DIM, BLOCK_M,
                                  False, INTERPRETER)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    offs_v = tl.arange(0, BLOCK_DV)
    for start_n in range(0, N_K, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        valid = offs_n < N_K
        if HAS_KEY_VALID:
            valid = valid & (tl.load(KEY_VALID + offs_n, mask=valid, other=0) != 0)
        rotate = valid & (offs_n < N_ROPE)
        t_rows = offs_n % N_Q
        k0e, k0o = _load_rotated_half(K, stride_kn, offs_n, valid, t_rows, rotate, COS, SIN, 0, HEAD_DIM, BLOCK_N,
                                      True, INTERPRETER)
        s = tl.dot(q0e, tl.trans(k0e), input_precision=DOT_PRECISION)
        s = tl.dot(q0o, tl.trans(k0o), s, input_precision=DOT_PRECISION)
        k1e, k1o = _load_rotated_half(K, stride_kn, offs_n, valid, t_rows, rotate, COS, SIN, 1, HEAD_DIM, BLOCK_N,
                                      True, INTERPRETER)
        s = tl.dot(q1e, tl.trans(k1e), s, input_precision=DOT_PRECISION)
        s = tl.dot(q1o, tl.trans(k1o), s, input_precision=DOT_PRECISION)
        s = tl.where(valid[None, :], s * qk_scale, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key yet: avoid inf - inf
        alpha = tl.math.exp2(m_i - m_ref)
        p = tl.math.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_n[:, None] * stride_vn + offs_v[None, :], mask=valid[:, None], other=0.0)
        if INTERPRETER:
            v = v.to(tl.float32)
        p = _mma_operand(p, V.dtype.element_ty, False, INTERPRETER)
        acc = tl.dot(p, v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # no valid key at all: acc is 0, out is 0
    tl.store(OUT + offs_m[:, None] * stride_om + offs_v[None, :], out.to(OUT.dtype.element_ty), mask=m_ok[:, None])


# --------------------------------------------------------------------------- launcher


@dataclass(frozen=True)
class KernelConfig:
    """Compile-time choices of one kernel instance (``streamtrack_kernels.aot`` compiles each one)."""

    block_m: int  # queries per program
    block_n: int  # keys per loop step
    block_dv: int  # value channels per program (< Dv: several programs share a query block)
    num_warps: int
    num_stages: int
    dot_precision: str  # tl.dot input_precision for fp32 inputs; 16-bit inputs ignore it


def kernel_config(head_dim: int, v_dim: int, dtype: torch.dtype, capability: tuple[int, int] = (8, 0)) -> KernelConfig:
    """The launch config for D = ``head_dim``, Dv = ``v_dim``, ``dtype`` and a CUDA capability.

    Tuned for register pressure at D = 256 (checked by ``python -m streamtrack_kernels.aot``:
    no spills on sm_80 or sm_90, wgmma on sm_90). A warp's 16 query rows of rotated q stay in
    registers across the key loop (64 registers per thread in 16 bit, 128 in fp32), so the
    key block is small and Dv = 256 uses 8 warps. fp32 runs 3xTF32 (about fp32 accuracy)
    over 64 value channels per program: for Dv = 256 that recomputes QK^T 4 times; it is
    the accuracy mode, not the fast one.
    """
    if dtype == torch.float32:
        return KernelConfig(64, 16, min(v_dim, 64), 8, 1, "tf32x3")
    hopper = capability[0] >= 9
    if v_dim > 128:
        return KernelConfig(64, 32, v_dim, 8, 2, "ieee") if hopper else KernelConfig(64, 16, v_dim, 8, 2, "ieee")
    return KernelConfig(64, 32, v_dim, 4, 2, "ieee")


def kernel_constexprs(cfg: KernelConfig, head_dim: int, has_key_valid: bool, interpreter: bool) -> dict:
    """The kernel's constexpr arguments for one config (shared by the launcher and the AOT report)."""
    return dict(
        HEAD_DIM=head_dim, BLOCK_DV=cfg.block_dv, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        HAS_KEY_VALID=has_key_valid, DOT_PRECISION=cfg.dot_precision, INTERPRETER=interpreter,
    )


def _check_inputs(q, k, v, cos, sin, n_rope, key_valid) -> None:
    """Raise ValueError/TypeError with a clear message for anything the op does not accept."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be [B, N, D], got shape {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, n_q, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"batch sizes differ: q {b}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[2] != d:
        raise ValueError(f"q and k head dims differ: {d} vs {k.shape[2]}")
    if v.shape[1] != k.shape[1]:
        raise ValueError(f"k has {k.shape[1]} keys but v has {v.shape[1]}")
    if d % 4:
        raise ValueError(f"head dim must be a multiple of 4 (two RoPE axes of channel pairs), got {d}")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dtype != torch.float32 or tuple(t.shape) != (n_q, d // 2):
            raise ValueError(f"{name} must be float32[{n_q}, {d // 2}], got {t.dtype}{list(t.shape)}")
    if not 0 <= n_rope <= k.shape[1]:
        raise ValueError(f"n_rope must be in [0, {k.shape[1]}], got {n_rope}")
    if n_rope > 0 and n_q == 0:
        raise ValueError("rotated keys need a non-empty query grid")
    if key_valid is not None and (key_valid.dtype != torch.bool or tuple(key_valid.shape) != (b, k.shape[1])):
        raise ValueError(f"key_valid must be bool[{b}, {k.shape[1]}], got {key_valid.dtype}{list(key_valid.shape)}")
    tensors = [q, k, v, cos, sin] + ([key_valid] if key_valid is not None else [])
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted({str(t.device) for t in tensors})}")


def _is_pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def _launch(q, k, v, cos, sin, n_rope, key_valid, out=None, config: KernelConfig | None = None) -> torch.Tensor:
    """Run the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); writes and returns ``out``.

    Inputs must pass :func:`_check_inputs`. Triton needs more: the last dim of q, k, v
    unit-strided, cos/sin contiguous, D/4 and Dv powers of two >= 16.
    """
    b, n_q, d = q.shape
    n_k, dv = k.shape[1], v.shape[2]
    if not (_is_pow2(d // 4) and _is_pow2(dv)):
        raise ValueError(f"the Triton kernel needs D/4 and Dv to be powers of two >= 16, got D={d}, Dv={dv}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(2) != 1:
            raise ValueError(f"{name} must have a unit-stride last dim (call .contiguous()), strides {t.stride()}")
    if not (cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError("cos and sin must be contiguous")
    if out is None:
        out = q.new_empty(b, n_q, dv)
    elif out.shape != (b, n_q, dv) or out.dtype != q.dtype or out.device != q.device or out.stride(2) != 1:
        raise ValueError(f"out must be {q.dtype}[{b}, {n_q}, {dv}] on {q.device} with a unit-stride last dim")
    if triton is None:
        raise RuntimeError("the Triton backend needs the `triton` package")
    if q.device.type != "cuda" and not _interpreted():
        raise RuntimeError(f"Triton on {q.device.type} tensors needs TRITON_INTERPRET=1 set before triton is imported")
    if key_valid is not None:
        key_valid = key_valid.contiguous().view(torch.uint8)
    if out.numel() == 0:
        return out
    cfg = config or kernel_config(d, dv, q.dtype, _capability(q.device))
    if dv % cfg.block_dv:
        raise ValueError(f"block_dv {cfg.block_dv} does not divide Dv {dv}")
    grid = (triton.cdiv(n_q, cfg.block_m), b, dv // cfg.block_dv)
    _rope_attention_fwd_kernel[grid](
        q, k, v, cos, sin, key_valid if key_valid is not None else q, out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        key_valid.stride(0) if key_valid is not None else 0,
        n_q, n_k, n_rope, math.log2(math.e) / math.sqrt(d),
        **kernel_constexprs(cfg, d, key_valid is not None, _interpreted()),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True,
    )
    return out


def _interpreted() -> bool:
    """Whether the kernel was built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return triton is not None and not isinstance(_rope_attention_fwd_kernel, triton.runtime.JITFunction)


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else (8, 0)


# --------------------------------------------------------------------------- PyTorch path


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn channel pairs of ``x: [..., N, D]`` by ``cos/sin: float32[N, D/2]``, in fp32; returns fp32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def _rotated_keys(k, cos, sin, n_rope, key_valid) -> torch.Tensor:
    """k with its first ``n_rope`` rows rotated (row j by table row j % N_q) and invalid rows zeroed."""
    b, n_k, d = k.shape
    n_q = cos.shape[0]
    out = torch.empty_like(k)
    full, rest = divmod(n_rope, n_q) if n_q else (0, n_rope)
    if full:
        grids = k[:, : full * n_q].unflatten(1, (full, n_q))
        out[:, : full * n_q] = _rotate(grids, cos, sin).flatten(1, 2).to(k.dtype)
    if rest:
        out[:, full * n_q : n_rope] = _rotate(k[:, full * n_q : n_rope], cos[:rest], sin[:rest]).to(k.dtype)
    out[:, n_rope:] = k[:, n_rope:]
    if key_valid is not None:
        out.masked_fill_(~key_valid[..., None], 0)
    return out


def _torch_rope_attention(q, k, v, cos, sin, n_rope, key_valid, max_scores: int = 1 << 26) -> torch.Tensor:
    """The same math in PyTorch: fp32 rotation, then F.scaled_dot_product_attention over query chunks
    that keep at most ``max_scores`` attention scores alive at once (its unfused paths materialise them)."""
    b, n_q, _ = q.shape
    if k.shape[1] == 0:
        return q.new_zeros(b, n_q, v.shape[-1])
    qr = _rotate(q, cos, sin).to(q.dtype)[:, None]
    kr = _rotated_keys(k, cos, sin, n_rope, key_valid)[:, None]
    mask = None
    if key_valid is not None:
        any_valid = key_valid.any(1)
        v = v.masked_fill(~key_valid[..., None], 0)
        # A row with no valid key attends to its zeroed keys (finite), then is set to zero below.
        mask = (key_valid | ~any_valid[:, None])[:, None, None, :]
    v = v[:, None]
    out = q.new_empty(b, 1, n_q, v.shape[-1])
    chunk = max(1, max_scores // max(1, b * k.shape[1]))
    for s in range(0, n_q, chunk):
        out[:, :, s : s + chunk] = F.scaled_dot_product_attention(qr[:, :, s : s + chunk], kr, v, attn_mask=mask)
    out = out[:, 0]
    if key_valid is not None:
        out = torch.where(any_valid[:, None, None], out, 0)
    return out


# --------------------------------------------------------------------------- public op


@torch.library.custom_op("streamtrack::rope_attention", mutates_args=())
def _rope_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_rope: int,
    key_valid: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    if uses_triton(q.device, backend):
        return _launch(q, k, v, cos, sin, n_rope, key_valid)
    return _torch_rope_attention(q, k, v, cos, sin, n_rope, key_valid)


@_rope_attention_op.register_fake
def _(q, k, v, cos, sin, n_rope, key_valid, backend):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


def uses_triton(device: torch.device, backend: str = "auto") -> bool:
    """Whether ``backend`` runs the Triton kernel for tensors on ``device`` (the dispatch rule)."""
    if backend == "triton":
        return True
    if backend == "torch":
        return False
    return device.type == "cuda" and triton is not None and os.environ.get(DISABLE_ENV, "") != "1"


def rope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_rope: int,
    key_valid: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Single-head attention with RoPE on queries and the first ``n_rope`` keys.

    Args:
        q: [B, N_q, D] queries of an S x S grid (N_q = S*S), D a multiple of 4 (SAM 2: 256).
        k: [B, N_k, D] keys: ``n_rope`` grid tokens (key j rotated like query j % N_q),
            then N_k - n_rope unrotated tokens (object pointers).
        v: [B, N_k, Dv] values; Dv may differ from D (value folding: 64 for SAM 2 memories).
        cos, sin: float32[N_q, D/2] tables of the query grid's angles (axial_rope_angles).
        n_rope: number of rotated keys, 0 <= n_rope <= N_k.
        key_valid: optional bool[B, N_k]; False keys are ignored exactly (any content);
            a batch row with none valid gets zeros.
        backend: "auto" (Triton on CUDA unless STREAMTRACK_DISABLE_TRITON=1, else PyTorch),
            "triton" (also CPU tensors under TRITON_INTERPRET=1) or "torch".

    q, k, v share a dtype (float32, float16 or bfloat16); compute is fp32.

    Returns:
        [B, N_q, Dv] in the input dtype; softmax scale 1/sqrt(D).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(q, k, v, cos, sin, n_rope, key_valid)
    return _rope_attention_op(q, k, v, cos, sin, n_rope, key_valid, backend)


def rope_tables(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``angles: float[N_q, D/2]`` (e.g. ``axial_rope_angles``) -> contiguous float32 (cos, sin).

    Built through ``torch.polar`` like the model's complex rotation (``memory_attention.rotate``),
    whose values differ from ``angles.cos()`` in the last bit: the PyTorch path then rotates
    bit-identically to the model.
    """
    unit = torch.polar(torch.ones_like(angles, dtype=torch.float32), angles.float())
    return unit.real.contiguous(), unit.imag.contiguous()
