"""tools/calibrate_score.py: the object-score shift it bakes into a checkpoint, and its command."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamtrack.checkpoint import load_model, resolve_checkpoint
from streamtrack.procgen import VALIDATION_SEEDS, benchmark_clips
from streamtrack.tracker import Prompt, Tracker, TrackerConfig

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "calibrate_score.py"


def calibrate_module():
    sys.path.insert(0, str(TOOL.parent))  # the tool imports its neighbour eval_vos
    try:
        spec = importlib.util.spec_from_file_location("calibrate_score_under_test", TOOL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TOOL.parent))


def shipped_state() -> dict[str, torch.Tensor]:
    return torch.load(resolve_checkpoint("nano", None), weights_only=True)["model"]


def test_the_shift_lowers_the_object_score_by_the_offset_and_changes_nothing_else(tmp_path):
    tool = calibrate_module()
    state = shipped_state()
    shifted = tool.shift_object_score(state, 1.25)
    changed = [k for k in state if not torch.equal(state[k], shifted[k])]
    assert changed == ["sam_mask_decoder.pred_obj_score_head.layers.2.bias"]
    torch.save({"model": shifted}, tmp_path / "shifted.pt")

    # Through the tracker: prompt with a mask on frame 0, then frame 1 reads the same memory in
    # both models, so its object score differs by exactly the offset.
    (_, frames, gts), = benchmark_clips(count=1, frames=2, seeds=VALIDATION_SEEDS)
    obj_id, mask = next((k, m) for k, m in sorted(gts[0].items()) if m.any())
    scores = []
    for ckpt in (resolve_checkpoint("nano", None), tmp_path / "shifted.pt"):
        tracker = Tracker(load_model("nano", ckpt), TrackerConfig(max_objects=1))
        tracker.track(frames[0])
        tracker.add_prompt(Prompt(obj_id=obj_id, mask=mask))
        (obj,) = tracker.track(frames[1]).objects
        scores.append(obj.object_score)
    assert scores[0] - scores[1] == pytest.approx(1.25, abs=1e-4)


def test_the_score_head_is_found_in_both_layouts():
    tool = calibrate_module()
    linear = {"sam_mask_decoder.pred_obj_score_head.weight": torch.zeros(1, 4),
              "sam_mask_decoder.pred_obj_score_head.bias": torch.zeros(1)}
    assert tool.shift_object_score(linear, 2.0)["sam_mask_decoder.pred_obj_score_head.bias"].item() == -2.0
    mlp = {f"sam_mask_decoder.pred_obj_score_head.layers.{i}.bias": torch.zeros(1) for i in (0, 1, 10)}
    assert tool.score_bias_key(mlp).endswith("layers.10.bias")
    with pytest.raises(tool.UsageError, match="no object-score head"):
        tool.score_bias_key({"image_encoder.x": torch.zeros(1)})


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


def test_the_command_keeps_the_best_offset_on_validation_clips(tmp_path):
    out, record_path = tmp_path / "cal" / "nano.pt", tmp_path / "cal.json"
    proc = _run("--checkpoint", str(resolve_checkpoint("nano", None)), "--out", str(out), "--offsets", "0,4",
                "--clips", "1", "--frames", "8", "--threads", "1", "--json", str(record_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(record_path.read_text())
    assert record == json.loads(proc.stdout)
    assert record["split"] == "validation" and set(record["validation"]) == {"0", "4"}
    jf = {float(k): v["J&F"] for k, v in record["validation"].items()}
    assert record["offset"] == max(jf, key=jf.get) and jf[0] != jf[4]
    key = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    written = torch.load(out, weights_only=True)["model"][key]
    assert torch.allclose(written, shipped_state()[key] - record["offset"])


def test_the_command_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = _run("--checkpoint", str(bad), "--out", str(tmp_path / "o.pt"))
    assert proc.returncode == 2 and "not a PyTorch checkpoint" in proc.stderr and not (tmp_path / "o.pt").exists()
    proc = _run("--checkpoint", str(resolve_checkpoint("nano", None)), "--out", str(tmp_path / "o.pt"),
                "--offsets", "1,x")
    assert proc.returncode == 2 and "--offsets" in proc.stderr
