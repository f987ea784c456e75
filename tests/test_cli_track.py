"""``streamtrack track`` as a real subprocess on a real video file made with PyAV."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
import torch

from oracle import build_official, official_video_state, save_official_checkpoint
from streamtrack.checkpoint import load_model
from streamtrack.preprocess import image_to_input
from streamtrack.tracker import Prompt, Tracker, TrackerConfig
from video import disc_mask, iou, moving_shapes

SIZE = 256
N = 20
FPS = 10


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "streamtrack", "track", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """An H.264 file of moving shapes, and its frames as PyAV decodes them."""
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 240, 180, "yuv420p"
        stream.options = {"crf": "18"}
        for f in moving_shapes(N):
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        decoded = [vf.to_ndarray(format="rgb24") for vf in container.decode(video=0)]
    assert len(decoded) == N
    return path, decoded


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    predictor = build_official("sam2.1_hiera_t", SIZE, seed=0, video=True)
    return predictor, save_official_checkpoint(predictor, root / "t.pt")


def read_masks(out, frame: int) -> dict[int, np.ndarray]:
    folder = out / f"{frame:06d}"
    return {int(p.stem): cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("*.png"))}


def test_track_video_matches_official(video, official, tmp_path):
    path, frames = video
    predictor, ckpt = official
    out = tmp_path / "masks"
    proc = run_cli("--config", "sam2.1_hiera_t", "--checkpoint", str(ckpt), "--source", str(path),
                   "--point", "40,90", "--image-size", str(SIZE), "--fill-hole-area", "0", "--save-masks", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"tracking [{'#' * 30}] {N}/{N}" in proc.stderr  # the progress bar reached the end

    images = torch.cat([image_to_input(f, SIZE) for f in frames])
    state = official_video_state(predictor, frames, images, tmp_path / "jpg")
    predictor.add_new_points_or_box(state, 0, 1, points=np.array([[40.0, 90.0]], np.float32), labels=np.array([1], np.int32))
    worst = 1.0
    for f, _, logits in predictor.propagate_in_video(state):
        png = read_masks(out, f)[1]
        assert png.shape == (180, 240) and set(np.unique(png)) <= {0, 255}
        worst = min(worst, iou(png > 0, (logits[0, 0] > 0).numpy()))
    assert worst >= 0.999

    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(N))
    assert lines[1]["timestamp"] == pytest.approx(1 / FPS, abs=1e-3)
    for line in lines:
        (obj,) = line["objects"]
        png = read_masks(out, line["frame"])[1] > 0
        assert obj["obj_id"] == 1 and obj["area"] == int(png.sum())
        assert obj["visible"] == (obj["object_score"] > 0)
        if obj["area"]:
            ys, xs = np.nonzero(png)
            assert obj["bbox"] == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_prompts_file_with_mask_late_object_and_correction(video, official, tmp_path):
    """The CLI applies a prompts file exactly as the Tracker API does, frame by frame."""
    path, frames = video
    _, ckpt = official
    cv2.imwrite(str(tmp_path / "disc.png"), disc_mask().astype(np.uint8) * 255)
    prompts = [
        {"frame": 0, "obj_id": 7, "mask": "disc.png"},
        {"frame": 0, "obj_id": 1, "points": [[190, 150, 1], [120, 40, 0]]},
        {"frame": 6, "obj_id": 2, "box": [150, 36, 200, 86]},
        {"frame": 10, "obj_id": 1, "points": [[60, 60, 0]]},
    ]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "masks"
    proc = run_cli("--config", "sam2.1_hiera_t", "--checkpoint", str(ckpt), "--source", str(path),
                   "--prompts", str(tmp_path / "prompts.json"), "--image-size", str(SIZE), "--save-masks", str(out))
    assert proc.returncode == 0, proc.stderr

    tracker = Tracker(load_model("sam2.1_hiera_t", ckpt, image_size=SIZE), TrackerConfig(max_objects=3, stream_length=N))
    for t, frame in enumerate(frames):
        result = tracker.track(frame)
        for p in prompts:
            if p["frame"] == t:
                kw = {"mask": disc_mask()} if "mask" in p else {"box": tuple(p["box"])} if "box" in p else {
                    "points": tuple((x, y) for x, y, _ in p["points"]), "labels": tuple(lab for *_, lab in p["points"])}
                result = tracker.add_prompt(Prompt(p["obj_id"], **kw))
        written = read_masks(out, t)
        assert sorted(written) == sorted(o.obj_id for o in result.objects)
        for o in result.objects:
            assert np.array_equal(written[o.obj_id] > 0, o.mask), (t, o.obj_id)
    assert sorted(read_masks(out, 5)) == [1, 7] and sorted(read_masks(out, 6)) == [1, 2, 7]


@pytest.mark.parametrize(
    "make,extra,message",
    [
        (None, ["--source", "nowhere.mp4", "--box", "1,1,5,5"], "no such file or directory"),
        ("text.mp4", ["--box", "1,1,5,5"], "cannot be opened as a video"),
        ("empty_dir", ["--box", "1,1,5,5"], "has no images"),
        ("video", ["--prompts", "p.json"], "not valid JSON"),
        ("video", ["--prompts", "missing.json"], "no such file"),
        ("video", ["--point", "1,2,9"], "labels must be 1"),
        ("video", ["--box", "5,5,1,1"], "x0 <= x1"),
    ],
)
def test_bad_input_is_reported_clearly(video, tmp_path, make, extra, message):
    path, _ = video
    args = ["--config", "sam2.1_hiera_t", "--checkpoint", str(tmp_path / "unused.pt"), "--save-masks", str(tmp_path / "o")]
    if make == "text.mp4":
        (tmp_path / "text.mp4").write_text("not a video")
        args += ["--source", str(tmp_path / "text.mp4")]
    elif make == "empty_dir":
        (tmp_path / "frames").mkdir()
        args += ["--source", str(tmp_path / "frames")]
    elif make == "video":
        (tmp_path / "p.json").write_text("[{oops")
        args += ["--source", str(path)]
    proc = run_cli(*args, *[a.replace("p.json", str(tmp_path / "p.json")).replace("missing.json", str(tmp_path / "m.json"))
                            for a in extra])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_prompt_after_the_last_frame_is_an_error(video, official, tmp_path):
    path, _ = video
    _, ckpt = official
    (tmp_path / "p.json").write_text(json.dumps([{"frame": N + 5, "obj_id": 1, "box": [1, 1, 9, 9]}]))
    proc = run_cli("--config", "sam2.1_hiera_t", "--checkpoint", str(ckpt), "--source", str(path),
                   "--prompts", str(tmp_path / "p.json"), "--save-masks", str(tmp_path / "o"))
    assert proc.returncode == 2 and f"has {N} frames" in proc.stderr


def test_frame_folder_source(tmp_path, official):
    _, ckpt = official
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(moving_shapes(4)):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out = tmp_path / "o"
    proc = run_cli("--config", "sam2.1_hiera_t", "--checkpoint", str(ckpt), "--source", str(folder),
                   "--box", "150,30,200,80", "--image-size", str(SIZE), "--save-masks", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 1, 2, 3]
    assert json.loads(lines[0])["timestamp"] is None
    assert all((out / f"{i:06d}" / "1.png").is_file() for i in range(4))
