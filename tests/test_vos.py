"""DAVIS-style VOS metrics, annotation reading, folder layouts and the eval_vos command."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamtrack.tracker import FrameResult, ObjectResult
from streamtrack.vos import (
    ClipScore,
    DatasetError,
    age_groups,
    boundary_f,
    boundary_radius,
    davis_palette,
    frames_since_prompt,
    load_mask_folder,
    mask_boundary,
    read_label_map,
    read_masks,
    region_similarity,
    run_tracker_on_clip,
    score_by_category,
    score_clip,
    summarize,
)

ROOT = Path(__file__).resolve().parent.parent
EVAL_VOS = ROOT / "tools" / "eval_vos.py"


def box_mask(shape, y0, x0, y1, x1) -> np.ndarray:
    """bool[H, W], True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------ metrics


def test_identical_masks_score_one():
    m = box_mask((480, 854), 100, 200, 300, 500)
    assert region_similarity(m, m) == 1.0
    assert boundary_f(m, m) == 1.0


def test_disjoint_masks_score_zero():
    a = box_mask((480, 854), 10, 10, 100, 100)
    b = box_mask((480, 854), 300, 600, 400, 800)
    assert region_similarity(a, b) == 0.0
    assert boundary_f(a, b) == 0.0


def test_region_similarity_hand_computed():
    pred = box_mask((5, 5), 0, 0, 2, 3)  # rows 0-1, cols 0-2: 6 px
    gt = box_mask((5, 5), 0, 1, 3, 3)  # rows 0-2, cols 1-2: 6 px; 4 shared, union 8
    assert region_similarity(pred, gt) == pytest.approx(0.5)
    assert region_similarity(gt, pred) == pytest.approx(0.5)


def test_boundary_is_inner_four_neighbour_contour():
    sq = box_mask((7, 7), 2, 2, 5, 5)
    assert mask_boundary(sq).sum() == 8 and not mask_boundary(sq)[3, 3]
    full = np.ones((4, 6), dtype=bool)  # the image edge counts as outside
    b = mask_boundary(full)
    assert b.sum() == 2 * 6 + 2 * 2 and not b[1:-1, 1:-1].any()


def test_boundary_f_hand_computed_tolerance():
    # 3x3 squares three columns apart: their 8-pixel rings face each other across one column gap.
    gt = box_mask((10, 10), 2, 2, 5, 5)
    pred = box_mask((10, 10), 2, 5, 5, 8)
    # radius 1 (a cross): only the 3 facing columns match, both ways -> P = R = F = 3/8.
    assert boundary_f(pred, gt, bound_th=1) == pytest.approx(3 / 8)
    # radius 2: the ring's top and bottom pixels of the middle column also match -> 5/8.
    assert boundary_f(pred, gt, bound_th=2) == pytest.approx(5 / 8)
    assert region_similarity(pred, gt) == 0.0


def test_boundary_tolerance_davis_resolution():
    shape = (480, 854)
    assert boundary_radius(shape) == 8  # ceil(0.008 * 979.7)
    gt = box_mask(shape, 100, 200, 300, 500)
    one = box_mask(shape, 101, 201, 301, 501)  # shifted 1 px right and down
    far = box_mask(shape, 120, 220, 320, 520)  # shifted 20 px right and down
    assert boundary_f(one, gt) == 1.0
    assert region_similarity(one, gt) < 1.0
    f_far = boundary_f(far, gt)
    assert 0.0 < f_far < 0.5
    assert boundary_f(far, gt, bound_th=30) == 1.0  # within 30 px everywhere


def test_empty_mask_conventions():
    empty = np.zeros((20, 30), dtype=bool)
    m = box_mask((20, 30), 5, 5, 10, 10)
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f(empty, empty) == 1.0
    assert region_similarity(empty, m) == 0.0 and region_similarity(m, empty) == 0.0
    assert boundary_f(empty, m) == 0.0 and boundary_f(m, empty) == 0.0


def test_metrics_reject_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        region_similarity(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# ------------------------------------------------------------------------------ scoring


def test_score_clip_skips_prompt_frames_and_counts_absence():
    shape = (32, 32)
    a = box_mask(shape, 4, 4, 12, 12)
    b = box_mask(shape, 20, 20, 28, 28)
    gts = [{1: a}, {1: a, 2: b}, {1: a}, {1: a, 2: np.zeros(shape, bool)}]
    bad = box_mask(shape, 0, 20, 3, 30)
    preds = [{1: bad}, {1: a, 2: b}, {1: a}, {1: a}]  # wrong only on frame 0; object 2 missing = empty
    s = score_clip(preds, gts, skip={0}, name="clip")
    assert isinstance(s, ClipScore) and s.name == "clip"
    assert s.frames == 3
    assert s.j_per_object == {1: 1.0, 2: 1.0} and s.f_per_object == {1: 1.0, 2: 1.0}
    assert (s.j, s.f, s.jf) == (1.0, 1.0, 1.0)
    unskipped = score_clip(preds, gts)
    assert unskipped.frames == 4
    assert unskipped.j_per_object[1] == pytest.approx(0.75)
    assert unskipped.j_per_object[2] == 1.0  # frame 0: absent in both


def test_scores_by_category_pool_object_frames_after_each_prompt():
    shape = (32, 32)
    a = box_mask(shape, 4, 4, 12, 12)
    half = box_mask(shape, 4, 4, 12, 7)
    empty = np.zeros(shape, bool)
    gts = [{1: a, 2: empty}, {1: a, 2: a}, {1: half, 2: empty}, {1: empty, 2: a}]
    preds = [{1: a}, {1: a, 2: empty}, {1: a, 2: empty}, {1: empty, 2: a}]
    cats = [{1: "clear", 2: "absent"}, {1: "clear", 2: "clear"}, {1: "occluded", 2: "absent"},
            {1: "absent", 2: "reappeared"}]
    got = score_by_category(preds, gts, cats)
    # Object 2 starts on frame 1 (its first non-empty mask): its absence on frame 0 is not scored.
    assert set(got) == {"clear", "occluded", "absent", "reappeared"}
    assert got["clear"][0] == pytest.approx(2.0) and got["clear"][2] == 3  # object 1 twice right, object 2 missed
    assert got["occluded"][0] == pytest.approx(half.sum() / a.sum()) and got["occluded"][2] == 1
    assert got["absent"] == (2.0, 2.0, 2)  # empty where absent scores 1
    assert got["reappeared"][:2] == (1.0, 1.0)
    skipped = score_by_category(preds, gts, cats, skip={0, 1})
    assert "clear" not in skipped and skipped["absent"][2] == 2


def test_frames_since_prompt_groups_each_object_from_its_own_first_mask():
    shape = (8, 8)
    on, off = box_mask(shape, 1, 1, 4, 4), np.zeros(shape, bool)
    gts = {0: {1: on, 2: off}, 3: {1: off, 2: on}, 40: {1: on, 2: on}}  # sparse; object 1 gone on frame 3
    ages = frames_since_prompt(gts, 41)
    assert age_groups() == ["1-7", "8-15", "16-31", "32+"]
    assert ages[0] == {} and ages[1] == {1: "1-7"} and ages[3] == {1: "1-7"}  # object 2 starts on frame 3
    assert ages[4] == {1: "1-7", 2: "1-7"}
    assert [ages[i][1] for i in (7, 8, 15, 16, 31, 32, 40)] == ["1-7", "8-15", "8-15", "16-31", "16-31", "32+", "32+"]
    assert [ages[i][2] for i in (10, 11, 35)] == ["1-7", "8-15", "32+"]


def test_scores_by_category_skip_frames_without_annotation():
    shape = (16, 16)
    a = box_mask(shape, 2, 2, 8, 8)
    gts = {0: {1: a}, 2: {1: a}}  # frame 1 has no annotation: it is not scored
    preds = [{1: a}, {1: np.zeros(shape, bool)}, {1: a}]
    got = score_by_category(preds, gts, frames_since_prompt(gts, 3), skip={0})
    assert got == {"1-7": (1.0, 1.0, 1)}


def test_score_clip_wrong_object_and_sparse_annotations():
    shape = (32, 32)
    a = box_mask(shape, 4, 4, 12, 12)
    preds = [{1: a}, {1: a}, {}, {1: a}]
    gts = {0: {1: a}, 2: {1: a}, 3: {}}  # frames 1 unannotated; frame 3: object gone
    s = score_clip(preds, gts, skip={0})
    assert s.frames == 2
    assert s.j_per_object[1] == pytest.approx(0.0)  # frame 2 missed, frame 3 false positive
    assert s.f_per_object[1] == pytest.approx(0.0)
    assert s.jf == pytest.approx(0.0)


def test_score_clip_rejects_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        score_clip([{1: np.ones((4, 4), bool)}], [{1: np.ones((5, 5), bool)}])


def test_summarize_averages_over_objects():
    one = ClipScore("a", {1: 1.0}, {1: 1.0}, 1.0, 1.0, 1.0, 5)
    three = ClipScore("b", {1: 0.0, 2: 0.0, 3: 0.0}, {1: 0.5, 2: 0.5, 3: 0.5}, 0.0, 0.5, 0.25, 5)
    nothing = ClipScore("c", {}, {}, float("nan"), float("nan"), float("nan"), 0)
    s = summarize([one, three, nothing])
    assert s["J"] == pytest.approx(0.25) and s["F"] == pytest.approx(0.625)
    assert s["J&F"] == pytest.approx(0.4375)
    assert (s["clips"], s["objects"], s["frames"]) == (2, 4, 10)


# ------------------------------------------------------------------------------ prompting


class StubTracker:
    """Echoes the last prompt mask of each object on every later frame; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.masks: dict[int, np.ndarray] = {}
        self.index = -1

    def reset(self) -> None:
        self.calls.append(("reset",))
        self.masks, self.index = {}, -1

    def track(self, rgb):
        self.index += 1
        self.calls.append(("track", self.index))
        return self._result()

    def add_prompt(self, prompt):
        self.calls.append(("prompt", self.index, prompt.obj_id))
        self.masks[prompt.obj_id] = prompt.mask
        return self._result()

    def _result(self):
        objs = [ObjectResult(k, m, 1.0, True, 1.0, None, int(m.sum())) for k, m in self.masks.items()]
        return FrameResult(self.index, objs)


def test_run_tracker_prompts_each_object_where_it_first_appears():
    shape = (16, 16)
    a, b = box_mask(shape, 1, 1, 5, 5), box_mask(shape, 8, 8, 12, 12)
    empty = np.zeros(shape, bool)
    gts = [{1: a, 2: empty}, None, {1: a, 2: b}, {1: a, 2: b}]
    frames = (np.zeros((*shape, 3), np.uint8) for _ in range(4))
    seen = []
    tracker = StubTracker()
    preds, latency, skip = run_tracker_on_clip(tracker, frames, gts, on_frame=seen.append)
    assert tracker.calls == [("reset",), ("track", 0), ("prompt", 0, 1), ("track", 1), ("track", 2),
                             ("prompt", 2, 2), ("track", 3)]
    assert skip == {0, 2} and seen == [0, 1, 2, 3]
    assert len(latency) == 4 and all(t >= 0 for t in latency)
    assert set(preds[0]) == {1} and set(preds[3]) == {1, 2}
    assert score_clip(preds, gts, skip).jf == 1.0


def test_run_tracker_box_and_point_prompts():
    shape = (16, 16)
    gts = [{3: box_mask(shape, 2, 4, 9, 13)}]
    frames = [np.zeros((*shape, 3), np.uint8)]

    class Recorder(StubTracker):
        def add_prompt(self, prompt):
            self.prompt = prompt
            return self._result()

    t = Recorder()
    run_tracker_on_clip(t, frames, gts, prompt="box")
    assert t.prompt.box == (4.0, 2.0, 12.0, 8.0)
    run_tracker_on_clip(t, frames, gts, prompt="point")
    (x, y), = t.prompt.points
    assert gts[0][3][int(y), int(x)] and 6 <= x <= 10 and 4 <= y <= 6


# ------------------------------------------------------------------------------ annotation files


def test_davis_palette_order():
    pal = davis_palette()
    assert pal.shape == (256, 3)
    assert pal[:9].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128],
                                [128, 0, 128], [0, 128, 128], [128, 128, 128], [64, 0, 0]]
    assert len({tuple(c) for c in pal.tolist()}) == 256


def _label_image() -> np.ndarray:
    labels = np.zeros((12, 10), np.uint8)
    labels[1:4, 1:4] = 1
    labels[5:8, 2:6] = 2
    labels[9:11, 6:9] = 7  # DAVIS colour (128, 128, 128): grey, but an indexed file says 7
    labels[0, 9] = 255
    return labels


def test_read_palette_png(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    labels = _label_image()
    img = Image.fromarray(labels, mode="P")
    pal = davis_palette()
    pal[20:40] = 0  # unused entries that repeat black must not steal the background
    img.putpalette(pal.reshape(-1).tolist())
    img.save(tmp_path / "m.png")
    assert np.array_equal(read_label_map(tmp_path / "m.png"), labels)
    # A file with its own palette order: ids follow the file's indices, not the DAVIS colours.
    custom = np.zeros((256, 3), np.uint8)
    custom[1], custom[2], custom[7], custom[255] = (0, 255, 0), (255, 0, 0), (9, 9, 9), (224, 224, 192)
    img.putpalette(custom.reshape(-1).tolist())
    img.save(tmp_path / "c.png")
    masks = read_masks(tmp_path / "c.png")
    assert sorted(masks) == [1, 2, 7, 255]
    assert np.array_equal(masks[2], labels == 2)


def test_read_colour_and_grayscale_png(tmp_path):
    labels = _label_image()
    labels[labels == 255] = 0
    rgb = davis_palette()[labels]
    rgb[11, 0] = (10, 200, 30)  # not a palette colour: a stable id of its own
    assert cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    got = read_label_map(tmp_path / "rgb.png")
    expected = labels.astype(np.int64)
    expected[11, 0] = 256 + (10 << 16 | 200 << 8 | 30)
    assert np.array_equal(got, expected)
    binary = (labels == 2).astype(np.uint8) * 255
    assert cv2.imwrite(str(tmp_path / "gray.png"), binary)
    assert list(read_masks(tmp_path / "gray.png")) == [255]
    assert cv2.imwrite(str(tmp_path / "gray3.png"), np.repeat(binary[..., None], 3, axis=2))
    assert np.array_equal(read_label_map(tmp_path / "gray3.png"), binary)


# ------------------------------------------------------------------------------ folders


def _write_frames(folder: Path, names: list[str], shape=(24, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        assert cv2.imwrite(str(folder / n), np.full((*shape, 3), 90, np.uint8))


def _write_mask(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), davis_palette()[labels][..., ::-1])


def test_load_davis_layout_with_resolution_level(tmp_path):
    root = tmp_path / "DAVIS"
    labels = np.zeros((24, 32), np.uint8)
    labels[2:6, 3:9] = 1
    labels[10:20, 10:20] = 2
    for seq in ("dog", "bear"):
        _write_frames(root / "JPEGImages" / "480p" / seq, ["10.jpg", "2.jpg", "0.jpg"])
    _write_mask(root / "Annotations" / "480p" / "bear" / "0.png", labels)
    _write_mask(root / "Annotations" / "480p" / "bear" / "10.png", labels)
    (root / "Annotations" / "480p" / "dog").mkdir(parents=True)
    seqs = load_mask_folder(root)
    assert [s.name for s in seqs] == ["bear", "dog"]
    bear = seqs[0]
    assert [p.name for p in bear.frames] == ["0.jpg", "2.jpg", "10.jpg"]  # numeric order
    assert sorted(bear.masks) == [0, 2]
    ann = bear.read_annotations()
    assert sorted(ann) == [0, 2] and sorted(ann[0]) == [1, 2]
    assert np.array_equal(ann[2][2], labels == 2)
    assert bear.read_frame(1).shape == (24, 32, 3)
    assert seqs[1].masks == {}
    assert [s.name for s in load_mask_folder(root, ["dog"])] == ["dog"]
    with pytest.raises(DatasetError, match="no sequence"):
        load_mask_folder(root, ["cat"])


def test_load_flat_layout(tmp_path):
    root = tmp_path / "clip1"
    _write_frames(root / "frames", ["a_000.png", "a_001.png"])
    _write_mask(root / "masks" / "a_000.png", np.ones((24, 32), np.uint8))
    (seq,) = load_mask_folder(root)
    assert seq.name == "clip1" and len(seq.frames) == 2 and list(seq.masks) == [0]


def test_load_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_mask_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="not a DAVIS-style folder"):
        load_mask_folder(tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DatasetError, match="no sequences"):
        load_mask_folder(tmp_path)
    _write_frames(tmp_path / "JPEGImages" / "s", ["0.jpg"])
    _write_mask(tmp_path / "Annotations" / "s" / "7.png", np.ones((24, 32), np.uint8))
    with pytest.raises(DatasetError, match="no frame named 7"):
        load_mask_folder(tmp_path)


# ------------------------------------------------------------------------------ command line


def _eval_vos_module():
    spec = importlib.util.spec_from_file_location("eval_vos_under_test", EVAL_VOS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def square_clip(tmp_path) -> Path:
    """A DAVIS-style folder, one sequence: 6 frames 96x96 with a square moving right."""
    root = tmp_path / "data"
    for i in range(6):
        rgb = np.full((96, 96, 3), 40, np.uint8)
        labels = np.zeros((96, 96), np.uint8)
        labels[30:60, 10 + 6 * i : 40 + 6 * i] = 1
        rgb[labels == 1] = (220, 60, 40)
        (root / "JPEGImages" / "square").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "JPEGImages" / "square" / f"{i:05d}.jpg"), rgb[..., ::-1])
        _write_mask(root / "Annotations" / "square" / f"{i:05d}.png", labels)
    return root


def test_cli_end_to_end(small_model_files, square_clip, tmp_path):
    cfg, ckpt = small_model_files
    out = tmp_path / "report" / "vos.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(EVAL_VOS), "--config", str(cfg), "--checkpoint", str(ckpt), "--folder", str(square_clip),
         "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "square" in proc.stdout and "J&F" in proc.stdout and "frames/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["config"] == "small_test" and report["checkpoint"] == str(ckpt) and report["image_size"] == 128
    (clip,) = report["clips"]
    assert clip["name"] == "square" and clip["frames"] == 6 and clip["frames_scored"] == 5
    assert clip["prompt_frames"] == [0] and set(clip["objects"]) == {"1"}
    for key in ("J", "F", "J&F"):
        assert 0.0 <= clip[key] <= 1.0 and 0.0 <= report["summary"][key] <= 1.0
    assert report["summary"]["objects"] == 1 and report["summary"]["frames"] == 5
    assert report["latency_ms_p95"] >= report["latency_ms_p50"] > 0 and report["frames_per_second"] > 0
    assert report["machine"]["torch_threads"] == 1 and report["machine"]["platform"]


def test_cli_synthetic_benchmark_reports_scores_by_condition(tmp_path, capsys):
    """The default: nano on the held-out synthetic clips, with scores by the objects' condition."""
    out = tmp_path / "vos.json"
    assert _eval_vos_module().main(["--clips", "2", "--frames", "24", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["config"] == "nano" and report["source"] == {"kind": "synthetic", "split": "benchmark"}
    assert [c["name"] for c in report["clips"]] == ["synthetic-9000000", "synthetic-9000001"]
    cats = report["by_category"]
    assert cats and set(cats) <= {"clear", "occluded", "absent", "reappeared"}
    assert sum(v["object_frames"] for v in cats.values()) == 2 * 2 * 23  # 2 clips x 2 objects x unprompted frames
    assert all(0.0 <= v["J&F"] <= 1.0 for v in cats.values())
    assert "by condition" in printed
    ages = report["by_frames_since_prompt"]
    assert list(ages) == ["1-7", "8-15", "16-31"]  # 24 frames: ages 1 to 23
    assert [v["object_frames"] for v in ages.values()] == [2 * 2 * 7, 2 * 2 * 8, 2 * 2 * 8]
    pooled_j = sum(v["J"] * v["object_frames"] for v in ages.values())
    assert pooled_j == pytest.approx(sum(v["J"] * v["object_frames"] for v in cats.values()))
    assert "by frames since the object's prompt" in printed


def test_cli_validation_split_scores_other_clips_than_the_benchmark(tmp_path):
    out = tmp_path / "vos.json"
    assert _eval_vos_module().main(["--split", "validation", "--clips", "1", "--frames", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["source"] == {"kind": "synthetic", "split": "validation"}
    assert [c["name"] for c in report["clips"]] == ["synthetic-8000000"] and report["by_category"]


def test_cli_usage_errors(small_model_files, square_clip, tmp_path, capsys):
    cfg, _ = small_model_files
    main = _eval_vos_module().main
    (tmp_path / "empty" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "empty" / "Annotations").mkdir(parents=True)
    cases = [
        (["--config", str(cfg), "--folder", str(tmp_path / "empty")], "no sequences"),
        (["--config", str(cfg), "--folder", str(square_clip), "--checkpoint", str(tmp_path / "nope.pt")],
         "no such file"),
        (["--config", "no_such_config", "--folder", str(square_clip)], "no config named"),
        (["--config", str(cfg), "--folder", str(square_clip), "--clips", "0"], "--clips must be at least 1"),
        (["--config", str(cfg), "--folder", str(square_clip), "--split", "validation"], "does not apply to --folder"),
        (["--split", "validation", "--clips", "65"], "synthetic validation clips: there are 1..64 clips"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
