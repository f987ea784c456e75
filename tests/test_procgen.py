"""The procedural video generator: determinism, exact ground truth, the promised variety, and
held-out benchmark seeds that training never draws."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamtrack.procgen import (
    BENCHMARK_SEEDS,
    CATEGORIES,
    TRAIN_SEEDS,
    VALIDATION_SEEDS,
    Scene,
    SceneConfig,
    benchmark_clips,
    benchmark_config,
    benchmark_scene,
    frame_categories,
)
from streamtrack.training.clips import MIN_FIRST_AREA, clip_times, sample_clip


def test_benchmark_seeds_never_appear_in_training():
    assert not set(BENCHMARK_SEEDS) & set(range(TRAIN_SEEDS.start, TRAIN_SEEDS.stop))
    assert len(BENCHMARK_SEEDS) >= 30


def test_validation_seeds_are_neither_training_nor_benchmark_seeds():
    assert not set(VALIDATION_SEEDS) & (set(TRAIN_SEEDS) | set(BENCHMARK_SEEDS))
    assert len(VALIDATION_SEEDS) >= 30
    (name, _, _), = benchmark_clips(count=1, frames=2, seeds=VALIDATION_SEEDS)
    assert name == f"synthetic-{VALIDATION_SEEDS[0]}" == f"synthetic-{benchmark_scene(0, VALIDATION_SEEDS).seed}"


def test_training_clips_draw_only_training_seeds(monkeypatch):
    seen = []
    real_init = Scene.__init__

    def spy(self, config, seed=0):
        seen.append(seed)
        real_init(self, config, seed)

    monkeypatch.setattr(Scene, "__init__", spy)
    rng = np.random.default_rng(0)
    for _ in range(5):
        sample_clip(rng, 64, 2)
    assert seen and all(s in TRAIN_SEEDS and s not in BENCHMARK_SEEDS for s in seen)


def test_gap_clips_show_an_object_vanishing():
    """``gap_share`` clips have a tracked object gone on some later frame (the object score's
    negative examples); plain clips seldom do. Masks-only rendering agrees with render()."""

    def gaps(share: float) -> int:
        rng = np.random.default_rng(3)
        clips = [sample_clip(rng, 96, 6, 3, share) for _ in range(12)]
        return sum(bool((c.masks[:, 1:].reshape(len(c.masks), 5, -1).sum(-1) == 0).any()) for c in clips)

    assert gaps(1.0) >= 10 and gaps(1.0) >= gaps(0.0) + 5, (gaps(0.0), gaps(1.0))
    scene = Scene(SceneConfig(width=96, height=80, num_objects=3, num_distractors=1), 4)
    for i in (0, 7, 30):
        drawn, fast = scene.render(i)[1], scene.visible_masks(i)
        assert drawn.keys() == fast.keys() and all(np.array_equal(drawn[k], fast[k]) for k in drawn)
        assert scene.visible_areas(i) == {k: m.mean() for k, m in drawn.items()}


def test_return_clips_show_an_object_vanishing_and_coming_back():
    """``return_share`` clips have a tracked object, the first, that is gone on some frame and well
    visible again later; plain clips of the same length seldom do."""

    def returns(share: float) -> int:
        rng = np.random.default_rng(5)
        n = 0
        for _ in range(6):
            area = sample_clip(rng, 64, 12, 2, return_share=share).masks.mean((2, 3))  # [K, T]
            gone = np.flatnonzero(area[0, 1:] == 0)
            n += bool(gone.size and (area[0, gone[0] + 2:] >= MIN_FIRST_AREA).any())
        return n

    assert returns(1.0) == 6 and returns(0.0) <= 2, (returns(0.0), returns(1.0))


def test_a_lagged_clip_shows_its_scene_at_its_times():
    """With ``lag`` the frames after the prompted one are those ``lag`` frames further on in the
    same scene: the draws do not depend on the lag, so a plain clip of the same draws shows them."""
    plain = sample_clip(np.random.default_rng(11), 64, 9, 2)
    lagged = sample_clip(np.random.default_rng(11), 64, 4, 2, lag=5)
    assert plain.times == tuple(range(9)) and lagged.times == clip_times(4, 5) == (0, 6, 7, 8)
    assert np.array_equal(lagged.images, plain.images[[0, 6, 7, 8]])
    assert np.array_equal(lagged.masks, plain.masks[:, [0, 6, 7, 8]])
    assert not np.array_equal(plain.images[1], plain.images[6])


def test_a_scene_is_a_function_of_its_seed_and_frames_render_in_any_order():
    cfg = SceneConfig(width=96, height=80)
    a, b, c = Scene(cfg, 5), Scene(cfg, 5), Scene(cfg, 6)
    later = a.render(9)
    for i in (0, 9, 3):
        (ra, ma), (rb, mb) = a.render(i), b.render(i)
        assert np.array_equal(ra, rb) and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert np.array_equal(later[0], b.render(9)[0])
    assert not np.array_equal(a.render(0)[0], c.render(0)[0])


def test_masks_are_the_visible_pixels_and_occlusion_happens():
    cfg = SceneConfig(width=128, height=96, num_objects=3, num_distractors=2, fps=5.0)
    occluded = False
    for seed in range(3):
        scene = Scene(cfg, seed)
        for i in range(0, 60, 3):
            rgb, masks = scene.render(i)
            full = scene.full_masks(i)
            assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
            assert sorted(masks) == [1, 2, 3]
            for m1, m2 in itertools.combinations(masks.values(), 2):
                assert not (m1 & m2).any()
            for k, m in masks.items():
                assert m.dtype == bool and not (m & ~full[k]).any()
                occluded |= bool((full[k] & ~m).any())
    assert occluded


def test_effects_off_leaves_a_static_background():
    cfg = SceneConfig(width=96, height=96, camera=False, lighting=False, blur=False, noise=False)
    scene = Scene(cfg, 1)
    r0, _ = scene.render(0)
    r1, _ = scene.render(20)
    outside = ~np.any(list(scene.full_masks(0).values()) + list(scene.full_masks(20).values()), axis=0)
    # Distractors move too; compare only where no labelled object or distractor could be.
    same = (r0 == r1).all(axis=2)
    assert same[outside].mean() > 0.8
    moving = Scene(SceneConfig(width=96, height=96), 1)
    a, b = moving.render(0)[0], moving.render(20)[0]
    assert (a != b).any(axis=2).mean() > 0.5, "with effects on, the whole view changes"


def test_the_benchmark_has_exits_reentries_scale_changes_and_distractors():
    exits_and_returns, scale_ratio = 0, []
    for name, frames, gts in benchmark_clips(count=30):
        assert name.startswith("synthetic-") and len(frames) == len(gts) == 48
        for k in gts[0]:
            area = np.array([g[k].sum() for g in gts])
            present = area > 0
            if present[0] and not present.all() and present[np.argmin(present):].any():
                exits_and_returns += 1
            if (area > 0).sum() > 2:
                scale_ratio.append(area[area > 0].max() / area[area > 0].min())
    assert benchmark_config().num_distractors >= 1
    assert exits_and_returns >= 5, f"only {exits_and_returns} objects leave (or hide) and come back"
    assert np.median(scale_ratio) > 1.5


def test_benchmark_categories_match_the_ground_truth():
    seen: dict[str, int] = {}
    for index, (name, _, gts) in enumerate(benchmark_clips(count=6)):
        cats = frame_categories(benchmark_scene(index), gts)
        assert name == f"synthetic-{benchmark_scene(index).seed}" and len(cats) == len(gts)
        for gt, per_object in zip(gts, cats):
            for k, cat in per_object.items():
                assert (cat == "absent") == (not gt[k].any())
                seen[cat] = seen.get(cat, 0) + 1
    assert set(seen) == set(CATEGORIES), f"every condition occurs in 6 clips: {seen}"


@pytest.mark.parametrize("bad", [dict(width=8), dict(num_objects=0), dict(fps=0.0), dict(num_distractors=-1)])
def test_bad_scene_configs_are_refused(bad):
    with pytest.raises(ValueError):
        SceneConfig(**bad)
