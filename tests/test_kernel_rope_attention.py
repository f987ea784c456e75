"""rope_attention (kernels/rope_attention.py) against a float64 reference written out plainly here.

The Triton kernel runs under TRITON_INTERPRET=1 on the CPU, in one subprocess for all cases:
the interpreter is chosen when ``@triton.jit`` runs, so it cannot share a process with code
that compiles the kernel for a GPU. Its outputs are poisoned with NaN first, so any element
the kernel fails to write fails the comparison. The PyTorch path, value folding and the
torch.library registration run in-process; the real GPU kernel only when CUDA is present.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

from streamtrack.model.memory_attention import axial_rope_angles
from streamtrack_kernels.rope_attention import KernelConfig, _launch, rope_attention, rope_tables

HEAD_DIM = 256
# (atol, rtol) against a float64 reference of the same (rounded) inputs: |out - ref| <= atol + rtol |ref|.
# The kernel rounds rotated q, k and the softmax weights to the input dtype before its products
# (as the tensor cores need), and the output to the input dtype.
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 3e-3), torch.bfloat16: (8e-3, 2.4e-2)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One random problem. Keys: ``grids`` whole query grids (rotated), then ``n_ptr`` unrotated
    pointer tokens (``extra_rope`` more keys rotated too, to test the j % N_q rule past whole grids)."""

    name: str
    side: int  # queries are a side x side grid
    grids: int
    n_ptr: int
    v_dim: int
    mask: str  # "none" | "slots": whole grids / pointers masked, one row nearly empty | "one_empty_row"
    batch: int = 2
    extra_rope: int = 0
    config: tuple | None = None  # KernelConfig fields, to override the launcher's choice

    @property
    def n_q(self) -> int:
        return self.side * self.side

    @property
    def n_rope(self) -> int:
        return self.grids * self.n_q + self.extra_rope

    @property
    def n_k(self) -> int:
        return self.grids * self.n_q + self.n_ptr


CASES = [
    # cross-attention as the tracker runs it: 2 memory frames + 12 pointer tokens, values folded to 64
    Case("cross_folded_9x9", side=9, grids=2, n_ptr=12, v_dim=64, mask="slots"),
    # self-attention: keys are the queries (one grid, no pointers), 256-channel values
    Case("self_9x9", side=9, grids=1, n_ptr=0, v_dim=256, mask="none", batch=1),
    # unfolded cross-attention on a 13x13 grid; batch row 1 has no valid key at all
    Case("cross_13x13_empty_row", side=13, grids=1, n_ptr=5, v_dim=256, mask="one_empty_row"),
    # pointers only (nothing rotated) and rotation past whole grids (key j uses table row j % N_q)
    Case("pointers_only_5x5", side=5, grids=0, n_ptr=21, v_dim=64, mask="slots"),
    Case("partial_grid_7x7", side=7, grids=1, n_ptr=9, v_dim=64, mask="none", extra_rope=6),
    # small blocks: many key steps, several value slices per query block, tails everywhere
    Case("small_blocks_9x9", side=9, grids=1, n_ptr=7, v_dim=64, mask="slots", config=(16, 16, 32, 4, 1, "ieee")),
]


def make_inputs(case: Case, dtype: torch.dtype, seed: int = 0) -> dict:
    """Random q, k, v (k, v of masked keys hold NaN: they must be ignored exactly), tables, mask."""
    g = torch.Generator().manual_seed(seed)
    b, n_q, n_k = case.batch, case.n_q, case.n_k
    q = torch.randn(b, n_q, HEAD_DIM, generator=g)
    k = torch.randn(b, n_k, HEAD_DIM, generator=g)
    v = torch.randn(b, n_k, case.v_dim, generator=g)
    key_valid = None
    if case.mask != "none":
        key_valid = torch.rand(b, n_k, generator=g) > 0.2
        if case.mask == "slots":
            if case.grids > 1:
                key_valid[0, n_q : 2 * n_q] = False  # a whole empty memory slot
            key_valid[0, case.grids * n_q :: 2] = False  # some pointer tokens
            key_valid[1] = False
            key_valid[1, torch.tensor([0, n_k // 2, n_k - 1])] = True  # a row with all but 3 keys masked
        else:
            key_valid[1] = False
        k[~key_valid] = float("nan")
        v[~key_valid] = float("nan")
    cos, sin = rope_tables(axial_rope_angles(HEAD_DIM, case.side))
    return dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), cos=cos, sin=sin, n_rope=case.n_rope, key_valid=key_valid)


def reference(q, k, v, cos, sin, n_rope, key_valid) -> torch.Tensor:
    """float64: rotate q and k pairwise, masked softmax, matmul; rows with no valid key give 0."""
    q, k, v, cos, sin = (t.double() for t in (q, k, v, cos, sin))

    def rotate(x, c, s):
        out = x.clone()
        out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
        return out

    n_q = q.shape[1]
    q = rotate(q, cos, sin)
    rows = torch.arange(n_rope) % max(n_q, 1)
    k = k.clone()
    k[:, :n_rope] = rotate(k[:, :n_rope], cos[rows], sin[rows])
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, :], float("-inf"))
        v = v.masked_fill(~key_valid[..., None], 0.0)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all -inf rows: NaN -> 0
    return weights @ v


def assert_matches_reference(out: torch.Tensor, inputs: dict, dtype: torch.dtype, tolerance=TOLERANCE) -> None:
    ref = reference(**inputs)
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all(), "unwritten (NaN-poisoned) or non-finite output elements"
    atol, rtol = tolerance[dtype]
    excess = ((out.double() - ref).abs() / (atol + rtol * ref.abs())).max().item()
    assert excess <= 1, f"|out - ref| reaches {excess:.2f}x the {dtype} tolerance (atol {atol}, rtol {rtol})"


# --------------------------------------------------------------------------- Triton, interpreted


def _interpret_worker(inputs_path: str, outputs_path: str) -> None:
    """Subprocess body (TRITON_INTERPRET=1): run every saved problem through the kernel."""
    torch.set_num_threads(1)
    problems = torch.load(inputs_path)
    results = []
    for p in problems:
        x = p["inputs"]
        cfg = KernelConfig(*p["config"]) if p["config"] else None
        out = torch.full((x["q"].shape[0], x["q"].shape[1], x["v"].shape[2]), float("nan"), dtype=x["q"].dtype)
        _launch(x["q"], x["k"], x["v"], x["cos"], x["sin"], x["n_rope"], x["key_valid"], out=out, config=cfg)
        via_op = rope_attention(**x, backend="triton") if p["via_op"] else None
        results.append({"out": out, "via_op": via_op})
    torch.save(results, outputs_path)


INTERPRETED = [(case, dtype) for case in CASES for dtype in DTYPES]


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """{(case name, dtype name): (inputs, kernel output, public-op output or None)}, one subprocess."""
    from streamtrack_kernels import rope_attention as ra

    if ra.triton is None:
        pytest.skip("triton is not installed")
    tmp = tmp_path_factory.mktemp("interpret")
    problems = [
        {"inputs": make_inputs(case, DTYPES[dt]), "config": case.config, "via_op": dt == "bf16" and case.config is None}
        for case, dt in INTERPRETED
    ]
    torch.save(problems, tmp / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "STREAMTRACK_DISABLE_TRITON"}
    env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, "--interpret", str(tmp / "inputs.pt"), str(tmp / "outputs.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"interpreter subprocess failed:\n{proc.stderr[-4000:]}"
    results = torch.load(tmp / "outputs.pt")
    return {
        (case.name, dt): (p["inputs"], r["out"], r["via_op"])
        for (case, dt), p, r in zip(INTERPRETED, problems, results)
    }


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_interpreted_triton_kernel_matches_float64_reference(interpreted, case, dtype):
    inputs, out, via_op = interpreted[(case.name, dtype)]
    assert_matches_reference(out, inputs, DTYPES[dtype])
    if via_op is not None:  # the public op dispatched to the same kernel
        assert torch.equal(via_op, out)


def test_interpreted_kernel_gives_zeros_for_a_row_without_valid_keys(interpreted):
    _, out, _ = interpreted[("cross_13x13_empty_row", "fp32")]
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert out[0].abs().sum() > 0


# --------------------------------------------------------------------------- PyTorch path


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_backend_matches_float64_reference(case, dtype):
    inputs = make_inputs(case, DTYPES[dtype])
    assert_matches_reference(rope_attention(**inputs, backend="torch"), inputs, DTYPES[dtype])


def test_torch_backend_chunks_queries_without_changing_the_result():
    from streamtrack_kernels.rope_attention import _torch_rope_attention

    inputs = make_inputs(CASES[0], torch.float32)
    whole = _torch_rope_attention(*inputs.values())
    chunked = _torch_rope_attention(*inputs.values(), max_scores=7 * CASES[0].n_k * CASES[0].batch)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_auto_backend_runs_pytorch_on_cpu():
    inputs = make_inputs(CASES[0], torch.float32)
    assert torch.equal(rope_attention(**inputs), rope_attention(**inputs, backend="torch"))


def test_disable_switch_turns_triton_off_for_cuda_tensors(monkeypatch):
    from streamtrack_kernels import rope_attention as ra

    monkeypatch.delenv(ra.DISABLE_ENV, raising=False)
    assert ra.uses_triton(torch.device("cuda"), "auto") == (ra.triton is not None)
    monkeypatch.setenv(ra.DISABLE_ENV, "1")
    assert not ra.uses_triton(torch.device("cuda"), "auto")
    assert ra.uses_triton(torch.device("cuda"), "triton")  # explicit requests still run Triton


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_value_folding_equals_projecting_values_first(backend, request):
    """softmax(.) (X W^T + b) == (softmax(.) X) W^T + b: the kernel runs on the 64-channel X."""
    case, dtype = CASES[0], torch.float32
    inputs = make_inputs(case, dtype)
    x = inputs["v"]
    g = torch.Generator().manual_seed(1)
    w, bias = torch.randn(256, x.shape[-1], generator=g) / 8, torch.randn(256, generator=g)
    projected_first = reference(**{**inputs, "v": x.double().nan_to_num() @ w.double().T + bias.double()})
    if backend == "torch":
        folded = rope_attention(**inputs, backend="torch")
    else:
        folded = request.getfixturevalue("interpreted")[(case.name, "fp32")][1]
    projected_after = folded.double() @ w.double().T + bias.double()
    assert (projected_after - projected_first).abs().max() < 1e-4


@torch.no_grad()
def test_torch_backend_reproduces_the_model_rope_attention_bitwise():
    """The op is a drop-in for RoPEAttention's core: same rounding, so parity tests are unaffected."""
    from streamtrack.model.memory_attention import RoPEAttention

    torch.manual_seed(0)
    side, n_ptr = 8, 16
    layer = RoPEAttention(256, kv_dim=64)
    x, memory = torch.randn(2, side * side, 256), torch.randn(2, 2 * side * side + n_ptr, 64)
    key_valid = torch.rand(2, memory.shape[1]) > 0.3
    cos, sin = rope_tables(axial_rope_angles(256, side))
    q, k, v = layer.q_proj(x), layer.k_proj(memory), layer.v_proj(memory)
    out = rope_attention(q, k, v, cos, sin, k.shape[1] - n_ptr, key_valid, backend="torch")
    assert torch.equal(layer.out_proj(out), layer(x, memory, memory, n_ptr, key_valid))


def test_rejects_malformed_inputs_with_clear_errors():
    x = make_inputs(CASES[0], torch.float32)
    bad = [
        ({"k": x["k"].half()}, TypeError, "share a dtype"),
        ({"cos": x["cos"][:-1]}, ValueError, "cos must be float32"),
        ({"sin": x["sin"].double()}, ValueError, "sin must be float32"),
        ({"n_rope": x["k"].shape[1] + 1}, ValueError, "n_rope"),
        ({"key_valid": x["key_valid"].int()}, ValueError, "key_valid must be bool"),
        ({"v": x["v"][:, :-1]}, ValueError, "keys but v has"),
        ({"q": x["q"][0]}, ValueError, r"\[B, N, D\]"),
    ]
    for change, error, message in bad:
        with pytest.raises(error, match=message):
            rope_attention(**{**x, **change})
    with pytest.raises(ValueError, match="backend"):
        rope_attention(**x, backend="cuda")
    strided = {**x, "k": x["k"].transpose(1, 2).contiguous().transpose(1, 2)}
    with pytest.raises(ValueError, match="unit-stride"):
        _launch(*strided.values())


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="this process runs the interpreter")
def test_triton_backend_on_cpu_needs_the_interpreter():
    pytest.importorskip("triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        rope_attention(**make_inputs(CASES[0], torch.float32), backend="triton")


# --------------------------------------------------------------------------- torch.library / compile


def test_op_is_registered_for_torch_compile():
    x = make_inputs(CASES[3], torch.float32)
    x.update(k=x["k"].nan_to_num(), v=x["v"].nan_to_num())  # also used unmasked below
    for key_valid in (x["key_valid"], None):
        args = (x["q"], x["k"], x["v"], x["cos"], x["sin"], x["n_rope"], key_valid, "torch")
        torch.library.opcheck(torch.ops.streamtrack.rope_attention.default, args)

    def layer(q, k, v, key_valid):
        return rope_attention(q, k, v, x["cos"], x["sin"], x["n_rope"], key_valid).sum(-1) * 2

    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    args = (x["q"], x["k"], x["v"], x["key_valid"])
    torch.testing.assert_close(compiled(*args), layer(*args))


# --------------------------------------------------------------------------- real GPU


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the kernel runs compiled)")
GPU_TOLERANCE = {**TOLERANCE, torch.float32: (1e-4, 1e-4)}  # fp32 runs 3xTF32 on the GPU


@needs_cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cuda_kernel_matches_float64_reference(case, dtype):
    inputs = make_inputs(case, DTYPES[dtype])
    gpu = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    out = torch.full((case.batch, case.n_q, case.v_dim), float("nan"), dtype=DTYPES[dtype], device="cuda")
    cfg = KernelConfig(*case.config) if case.config else None
    _launch(*gpu.values(), out=out, config=cfg)
    assert_matches_reference(out.cpu(), inputs, DTYPES[dtype], GPU_TOLERANCE)


@needs_cuda
def test_auto_backend_runs_triton_on_cuda(monkeypatch):
    from streamtrack_kernels import rope_attention as ra

    monkeypatch.delenv(ra.DISABLE_ENV, raising=False)
    x = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in make_inputs(CASES[0], torch.bfloat16).items()}
    assert torch.equal(rope_attention(**x), _launch(*x.values()))


if __name__ == "__main__" and sys.argv[1:2] == ["--interpret"]:
    _interpret_worker(sys.argv[2], sys.argv[3])
