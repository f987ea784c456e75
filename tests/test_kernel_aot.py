"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90, without a GPU.

Runs ``python -m streamtrack_kernels.aot --json`` in a subprocess (with its own Triton cache,
and never under TRITON_INTERPRET) and checks every kernel instance the model launches:
no register spills, shared memory within the target's limit, tensor-core instructions
(mma.sync on sm_80, wgmma on sm_90).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

from streamtrack_kernels.aot import CASES, DTYPES, TARGETS, Report  # noqa: E402


def _have_ptxas() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return all(shutil.which(get_ptxas(arch).path) or os.path.exists(get_ptxas(arch).path) for arch in TARGETS)
    except Exception:
        return False


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> list[dict]:
    if not _have_ptxas():
        pytest.skip("Triton's NVIDIA backend (ptxas) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "streamtrack_kernels.aot", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    failing = [r for r in lines if r["problems"]]
    assert proc.returncode == (1 if failing else 0)
    return lines


def _table(reports: list[dict]) -> str:
    return "\n".join(
        f"{r['target']} {r['case']:13s} {r['dtype']} {r['config']:22s} regs {r['n_regs']:3d} "
        f"spills {r['n_spills']} smem {r['shared']} mma {r['mma']} wgmma {r['wgmma']} {r['problems'] or ''}"
        for r in reports
    )


def test_every_target_case_and_dtype_is_compiled(reports):
    got = {(r["target"], r["case"], r["dtype"]) for r in reports}
    want = {(f"sm_{a}", c.name, d) for a in TARGETS for c in CASES for d in DTYPES}
    assert got == want


def test_no_kernel_spills_registers(reports):
    spilling = [r for r in reports if r["n_spills"] or r["spill_bytes"]]
    assert not spilling, "register spills:\n" + _table(spilling)
    assert all(0 < r["n_regs"] <= 255 for r in reports)


def test_shared_memory_fits_each_target(reports):
    too_big = [r for r in reports if r["shared"] > r["shared_limit"]]
    assert not too_big, "shared memory over the limit:\n" + _table(too_big)


def test_sm80_uses_mma_and_sm90_uses_wgmma(reports):
    sm80 = [r for r in reports if r["target"] == "sm_80"]
    sm90 = [r for r in reports if r["target"] == "sm_90"]
    assert sm80 and all(r["mma"] > 0 for r in sm80), _table(sm80)
    assert sm90 and all(r["wgmma"] > 0 and r["mma"] == 0 for r in sm90), _table(sm90)


def test_report_flags_spills_missing_tensor_cores_and_shared_overflow():
    ok = Report("sm_90", "self", "bf16", "cfg", 168, 0, 0, 1000, 2000, 0, 34, False, 1.0)
    assert ok.problems() == []
    assert Report(**{**vars(ok), "n_spills": 2, "spill_bytes": 8}).problems() == ["spills (8 bytes)"]
    assert Report(**{**vars(ok), "wgmma": 0}).problems() == ["no wgmma"]
    assert Report(**{**vars(ok), "target": "sm_80", "mma": 0}).problems() == ["no mma.sync"]
    assert Report(**{**vars(ok), "shared": 4000}).problems() == ["shared memory 4000 > 2000"]
