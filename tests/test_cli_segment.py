"""``streamtrack segment`` run as a real subprocess, checked against the official predictor."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import random_image
from oracle import official_image_predictor

SIZE = 512


def run_cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "streamtrack", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    image = random_image(240, 320, seed=2)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path, image


def test_segment_writes_masks_matching_official(pair_cache, image_file, tmp_path):
    pair = pair_cache("sam2.1_hiera_t", SIZE)
    path, image = image_file
    out = tmp_path / "out"
    proc = run_cli(
        "segment", "--config", "sam2.1_hiera_t", "--checkpoint", str(pair.checkpoint), "--image", str(path),
        "--box", "40,30,200,180", "--box", "150,100,310,230", "--image-size", str(SIZE), "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["image_hw"] == [240, 320] and result["config"] == "sam2.1_hiera_t"
    assert [m["prompt"]["box"] for m in result["masks"]] == [[40, 30, 200, 180], [150, 100, 310, 230]]

    predictor = official_image_predictor(pair.official)
    predictor.set_image(image)
    ref_masks, ref_iou, _ = predictor.predict(box=np.array([[40, 30, 200, 180], [150, 100, 310, 230]]), multimask_output=False)
    for obj, record in enumerate(result["masks"]):
        png = cv2.imread(str(out / record["file"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (240, 320) and set(np.unique(png)) <= {0, 255}
        assert ((png > 0) != ref_masks[obj, 0]).mean() <= 1e-3
        assert record["predicted_iou"] == pytest.approx(float(ref_iou[obj, 0]), abs=1e-5)
        assert record["area"] == int((png > 0).sum())


def test_segment_multimask_points_give_three_candidates(pair_cache, image_file, tmp_path):
    pair = pair_cache("sam2.1_hiera_t", SIZE)
    path, _ = image_file
    out = tmp_path / "out"
    proc = run_cli(
        "segment", "--config", "sam2.1_hiera_t", "--checkpoint", str(pair.checkpoint), "--image", str(path),
        "--point", "100,80", "--point", "250,200,0", "--multimask", "--image-size", str(SIZE), "--out", str(out),
    )
    assert proc.returncode == 0, proc.stderr
    masks = json.loads((out / "result.json").read_text())["masks"]
    assert [m["candidate"] for m in masks] == [0, 1, 2]
    assert masks[0]["prompt"]["points"] == [[100, 80, 1], [250, 200, 0]]
    assert all((out / m["file"]).is_file() for m in masks)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "give at least one --point or --box"),
        (["--point", "10"], "expected 2 or 3 numbers"),
        (["--point", "a,b"], "expected comma-separated numbers"),
        (["--point", "10,10,7"], "LABEL must be 1"),
        (["--box", "50,50,10,10"], "X0 <= X1"),
        (["--box", "1,1,5,5", "--box", "2,2,6,6", "--point", "3,3"], "at most one --box"),
    ],
)
def test_segment_rejects_malformed_prompts(image_file, tmp_path, extra, message):
    path, _ = image_file
    proc = run_cli("segment", "--config", "sam2.1_hiera_t", "--checkpoint", str(tmp_path / "x.pt"),
                   "--image", str(path), "--out", str(tmp_path / "o"), *extra)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_segment_reports_bad_checkpoint_and_image(image_file, tmp_path):
    path, _ = image_file
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    proc = run_cli("segment", "--config", "sam2.1_hiera_t", "--checkpoint", str(bad), "--image", str(path),
                   "--box", "1,1,5,5", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "empty (0 bytes)" in proc.stderr and "Traceback" not in proc.stderr

    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    proc = run_cli("segment", "--config", "sam2.1_hiera_t", "--checkpoint", str(bad), "--image", str(not_image),
                   "--box", "1,1,5,5", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "cannot be decoded as an image" in proc.stderr

    proc = run_cli("segment", "--config", "nosuch", "--checkpoint", str(bad), "--image", str(path),
                   "--box", "1,1,5,5", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no config named" in proc.stderr


def test_make_checkpoint_round_trips(tmp_path):
    ckpt = tmp_path / "r.pt"
    proc = run_cli("make-checkpoint", "--config", "sam2_hiera_t", "--seed", "3", "--out", str(ckpt))
    assert proc.returncode == 0, proc.stderr
    from streamtrack.checkpoint import read_state_dict
    from streamtrack.config import load_config
    from streamtrack.checkpoint import check_state_dict

    check_state_dict(read_state_dict(ckpt), load_config("sam2_hiera_t"), ckpt)


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert all(c in proc.stdout for c in ("segment", "track", "run", "echo", "view", "prompt", "bench", "make-checkpoint"))


def test_bench_reports_steady_state_stages(small_model_files, tmp_path):
    cfg, _ = small_model_files
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    proc = run_cli("bench", "--config", str(cfg), "--frames", "18", "--objects", "2", "--json", str(out),
                   "--pipeline-frames", "20", "--fps", "10", "--plot", str(plot), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["steady_frames"] == 2 and report["objects"] == 2
    assert report["threads"] == 1 and "(1 threads)" in proc.stdout
    stages = report["stage_ms_median"]
    assert set(stages) == {"preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder"}
    assert all(v > 0 for v in stages.values())
    assert report["frame_ms_median"] >= sum(stages.values()) * 0.9
    assert "frames/s" in proc.stdout
    work = report["stage_gflop"]
    assert all(work[s] > 0 for s in ("image_encoder", "memory_attention", "decoder", "memory_encoder"))
    assert all(0 < report["stage_gflops_per_s"][s] for s in work if s != "other")
    assert report["matmul_ceiling_gflops_per_s"] > 0 and "matmul ceiling" in proc.stdout
    live = report["pipeline"]
    assert live["tracked"] == 20 and live["received"] == 20 - 16  # frames after warm-up
    assert live["captured"] >= live["tracked"] + live["dropped_stale"]
    lat = live["capture_to_receipt_ms"]
    assert 0 < lat["median"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert "capture to subscriber" in proc.stdout and "dropped:" in proc.stdout
    assert cv2.imread(str(plot)) is not None
    assert run_cli("bench", "--frames", "5").returncode == 2
    assert run_cli("bench", "--pipeline-frames", "3").returncode == 2
    refused = run_cli("bench", "--threads", "0")
    assert refused.returncode == 2 and "at least 1 thread is needed" in refused.stderr


def test_client_commands_start_without_torch(tmp_path):
    """`echo`, `view` and `prompt` run on subscriber machines that may never load a model; they
    reach their work, and their errors, without importing torch."""
    code = (
        "import sys\n"
        "from streamtrack.cli import main\n"
        "codes = [main(['echo', '--connect', 'tcp://127.0.0.1:9', '--count', '1', '--timeout', '0.3']),\n"
        "         main(['prompt', '--control', 'tcp://127.0.0.1:9', '--timeout', '0.3', 'list']),\n"
        "         main(['view', '--connect', 'tcp://127.0.0.1:9', '--timeout', '0.3', '--out', sys.argv[1]])]\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.mp4")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[1, 2, 0] False", proc.stdout + proc.stderr
    assert "no reply from tcp://127.0.0.1:9" in proc.stderr, "prompt's error is reported as one line"
