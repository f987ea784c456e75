"""Ahead-of-time compile report: build the Triton kernels for CUDA targets without a GPU.

For every target (sm_80, sm_90) and every kernel instance the model launches (memory
cross-attention with folded 64-channel values and a key mask, self-attention with
256-channel values) in fp16, bf16 and fp32, compile with the launcher's own config and
report registers per thread, spills, shared memory and tensor-core instructions::

    python -m streamtrack_kernels.aot            # table
    python -m streamtrack_kernels.aot --json     # one JSON object per line

Exit status 1 if any instance spills, exceeds the target's shared memory, has no
``mma.sync`` (sm_80) or no ``wgmma`` (sm_90). Compiled kernels land in Triton's cache
(``TRITON_CACHE_DIR``), so a second run is quick.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Max dynamic shared memory per block (CUDA C++ Programming Guide, compute capabilities table).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
TARGETS = (80, 90)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Case:
    """One shape class of the op as the model calls it."""

    name: str
    head_dim: int
    v_dim: int
    has_key_valid: bool


CASES = (
    Case("cross_folded", 256, 64, True),  # frame -> memories and pointers, values folded to 64 channels
    Case("self", 256, 256, False),  # frame -> itself
)


@dataclass
class Report:
    target: str
    case: str
    dtype: str
    config: str  # BLOCK_M x BLOCK_N x BLOCK_DV, warps, stages, fp32 dot precision
    n_regs: int  # registers per thread
    n_spills: int  # as Triton's runtime reports it: local memory bytes / 4
    spill_bytes: int  # ptxas: spill stores + spill loads
    shared: int  # bytes of shared memory per program
    shared_limit: int
    mma: int  # mma.sync instructions in the PTX (sm_80 tensor cores)
    wgmma: int  # wgmma.mma_async instructions in the PTX (sm_90 warpgroup tensor cores)
    wgmma_serialized: bool  # ptxas warning C7515: the wgmma pipeline is serialised
    seconds: float  # triton.compile wall time (near 0 on a Triton cache hit)

    def problems(self) -> list[str]:
        """Why this instance fails the report's checks (empty if it passes)."""
        out = []
        if self.n_spills or self.spill_bytes:
            out.append(f"spills ({self.spill_bytes} bytes)")
        if self.shared > self.shared_limit:
            out.append(f"shared memory {self.shared} > {self.shared_limit}")
        if self.target == "sm_80" and not self.mma:
            out.append("no mma.sync")
        if self.target == "sm_90" and not self.wgmma:
            out.append("no wgmma")
        return out


def _signature(fn, dtype: str, constexprs: dict) -> tuple[dict, dict]:
    """Argument types and divisibility hints as the launcher's tensors produce them:
    16-byte aligned pointers and row strides that are multiples of 16."""
    sig = {name: "i32" for name in fn.arg_names}
    sig.update({name: f"*{dtype}" for name in ("Q", "K", "V", "OUT")})
    # Without a mask the launcher passes q as the (never read) KEY_VALID pointer.
    sig.update(COS="*fp32", SIN="*fp32", KEY_VALID="*u8" if constexprs["HAS_KEY_VALID"] else f"*{dtype}")
    sig.update(qk_scale="fp32")
    sig.update({name: "constexpr" for name in constexprs})
    aligned = ["Q", "K", "V", "COS", "SIN", "KEY_VALID", "OUT"] + [n for n in fn.arg_names if n.startswith("stride_")]
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    return sig, attrs


def _ptxas_info(ptx: str, arch: int) -> dict:
    """Run ptxas -v on the kernel's PTX (the flags Triton uses) and parse its resource report."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(tmp) / "k.cubin")]
        log = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if not (regs and frame):
        raise RuntimeError(f"cannot parse the ptxas report:\n{log}")
    return {
        "n_regs": int(regs.group(1)),
        "n_spills": int(frame.group(1)) // 4,
        "spill_bytes": int(frame.group(2)) + int(frame.group(3)),
        "wgmma_serialized": "C7515" in log,
    }


def compile_case(case: Case, dtype: str, arch: int, config=None) -> Report:
    """Compile one kernel instance for ``sm_<arch>`` (default: the launcher's config) and report on it."""
    import triton
    from triton.backends.compiler import GPUTarget

    from streamtrack_kernels import rope_attention as ra

    fn = ra._rope_attention_fwd_kernel
    if not isinstance(fn, triton.runtime.JITFunction):
        raise RuntimeError("the kernel was built for the interpreter: unset TRITON_INTERPRET to compile it")
    cfg = config or ra.kernel_config(case.head_dim, case.v_dim, DTYPES[dtype], (arch // 10, arch % 10))
    constexprs = ra.kernel_constexprs(cfg, case.head_dim, case.has_key_valid, interpreter=False)
    sig, attrs = _signature(fn, dtype, constexprs)
    start = time.perf_counter()
    kernel = triton.compile(
        triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
        target=GPUTarget("cuda", arch, 32),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True),
    )
    ptx = kernel.asm["ptx"]
    info = _ptxas_info(ptx, arch)
    return Report(
        target=f"sm_{arch}", case=case.name, dtype=dtype,
        config=f"{cfg.block_m}x{cfg.block_n}x{cfg.block_dv} w{cfg.num_warps} s{cfg.num_stages}"
        + (f" {cfg.dot_precision}" if dtype == "fp32" else ""),
        shared=kernel.metadata.shared, shared_limit=SHARED_LIMIT[arch],
        mma=ptx.count("mma.sync"), wgmma=ptx.count("wgmma.mma_async"),
        seconds=round(time.perf_counter() - start, 2), **info,
    )


def compile_all(targets=TARGETS, cases=CASES, dtypes=tuple(DTYPES)) -> list[Report]:
    return [compile_case(c, d, a) for a in targets for c in cases for d in dtypes]


def format_table(reports: list[Report]) -> str:
    """Plain-text table; ``serialized`` is ptxas's C7515 note (a performance hint, not a failure)."""
    cols = ["target", "case", "dtype", "config", "n_regs", "n_spills", "shared", "mma", "wgmma", "wgmma_serialized"]
    head = cols[:-1] + ["serialized", "seconds", "check"]
    rows = [head] + [
        [str(getattr(r, c)) for c in cols[:-1]]
        + ["yes" if r.wgmma_serialized else "", str(r.seconds), "; ".join(r.problems()) or "ok"]
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamtrack_kernels.aot", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel instance")
    parser.add_argument("--target", type=int, choices=TARGETS, action="append", help="only this sm (repeatable)")
    args = parser.parse_args(argv)
    reports = compile_all(targets=tuple(args.target or TARGETS))
    if args.json:
        for r in reports:
            print(json.dumps({**asdict(r), "problems": r.problems()}))
    else:
        print(format_table(reports))
    return 1 if any(r.problems() for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
