"""Training clips from the procedural generator: one object's frames and masks, and prompts
sampled from its ground truth as a person or a detector would give them."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamtrack.procgen import TRAIN_SEEDS, Scene, SceneConfig

MIN_FIRST_AREA = 0.004
"""The tracked object covers at least this fraction of the first frame."""

GAP_TRIES = 20
"""Scenes tried for a clip in which a tracked object vanishes, before taking any clip."""

GAP_STARTS = 8
"""Start frames tried per scene for such a clip."""

RETURN_STARTS = 200
"""Start frames scanned per scene for a clip in which a tracked object vanishes and comes back."""


@dataclass(frozen=True)
class Clip:
    images: np.ndarray
    """uint8[T, S, S, 3]."""
    masks: np.ndarray
    """bool[K, T, S, S]: the visible pixels of each of the K tracked objects."""
    times: tuple[int, ...]
    """Each frame's index in the scene, counted from frame 0 (the prompted frame)."""


@dataclass(frozen=True)
class PointPrompt:
    """Points (and a box as two corner points labelled 2 and 3) in model pixels."""

    coords: np.ndarray
    """float32[N, 2] (x, y)."""
    labels: np.ndarray
    """int32[N]: 1 positive, 0 negative, 2/3 box corners."""


def train_scene_config(size: int, rng: np.random.Generator) -> SceneConfig:
    """Scenes for training: the benchmark's kind of scene with varied counts and speeds."""
    return SceneConfig(width=size, height=size, num_objects=int(rng.integers(1, 4)),
                       num_distractors=int(rng.integers(0, 3)), fps=float(rng.uniform(6.0, 14.0)))


def clip_times(frames: int, lag: int = 0) -> tuple[int, ...]:
    """Frame 0, then ``frames - 1`` consecutive frames starting ``lag + 1`` frames later."""
    return (0,) + tuple(range(lag + 1, lag + frames))


def sample_clip(rng: np.random.Generator, size: int, frames: int, max_objects: int = 1,
                gap_share: float = 0.0, lag: int = 0, return_share: float = 0.0) -> Clip:
    """A clip of ``frames`` frames at ``size`` x ``size`` with up to ``max_objects`` tracked objects,
    each well visible on frame 0. Several objects of one clip are tracked side by side, as the
    tracker does: their masks differ only through what each one's memory holds.

    With probability ``gap_share`` the clip is one where a tracked object vanishes (hidden or out
    of the frame) on a later frame, if one is found within :data:`GAP_TRIES` scenes. Few random
    short clips have such frames, and without them the object score never learns to say "gone".

    With ``lag`` > 0 the frames after frame 0 start ``lag + 1`` frames after it (:func:`clip_times`):
    the prompt is as old as it is deep into a live stream, when the object has moved and changed
    since.

    With probability ``return_share`` (drawn only when above 0, and taking precedence over a gap)
    the clip is one where a tracked object vanishes and is well visible again on a later frame of
    the clip. Random clips almost never show one (1 in 51 of 16 frames), so the model learns
    that an object once gone stays gone, and misses objects that come back."""
    times = clip_times(frames, lag)
    want_gap = gap_share > 0 and rng.random() < gap_share  # no draw when off: clips as before
    want_return = return_share > 0 and rng.random() < return_share
    for attempt in range(10_000):
        seed = int(rng.integers(TRAIN_SEEDS.start, TRAIN_SEEDS.stop))
        scene = Scene(train_scene_config(size, rng), seed)
        if want_return and attempt < GAP_TRIES:
            found = _returning_start(rng, scene, times)
            if found is None:
                continue
            start, order = found
        else:  # after GAP_TRIES scenes without one, a return clip falls back to a plain clip
            seek_gap = want_gap and attempt < GAP_TRIES  # never for a return clip: attempt is past GAP_TRIES
            # A scene is costly to build and a frame's masks are cheap: look at several starts of it.
            for start in rng.integers(0, 200, GAP_STARTS if seek_gap else 1).tolist():
                order = _first_frame_objects(rng, scene, start)
                if order and seek_gap:
                    order = _vanishing_first(scene, order, [start + t for t in times[1:]])
                if order:
                    break
            else:
                continue
        objs = order[:max_objects]
        images, masks = [], []
        for t in times:
            rgb, gt = scene.render(start + t)
            images.append(rgb)
            masks.append([gt[k] for k in objs])
        return Clip(np.stack(images), np.stack(masks).transpose(1, 0, 2, 3), times)
    raise RuntimeError("no scene with a visible object in 10,000 tries")


def _first_frame_objects(rng: np.random.Generator, scene: Scene, start: int) -> list[int]:
    """The labelled objects well visible on frame ``start``, in random order."""
    first = scene.visible_masks(start)
    candidates = [k for k, m in first.items() if m.mean() >= MIN_FIRST_AREA]
    return [candidates[i] for i in rng.permutation(len(candidates))]


def _vanishing_first(scene: Scene, order: list[int], later_frames: list[int]) -> list[int]:
    """``order`` with the objects that are gone on some of ``later_frames`` first; empty when none is."""
    later = [scene.visible_masks(i) for i in later_frames]
    gone = [k for k in order if any(not m[k].any() for m in later)]
    return gone + [k for k in order if k not in gone] if gone else []


def _returning_start(rng: np.random.Generator, scene: Scene, times: tuple[int, ...]
                     ) -> tuple[int, list[int]] | None:
    """A start frame of ``scene`` (one of :data:`RETURN_STARTS`, uniformly among those that qualify)
    on which some object is well visible, then gone on a later frame of ``times``, then well
    visible again; with the labelled objects well visible on it, returning ones first (each group
    in random order). None when no start qualifies."""
    span = RETURN_STARTS + max(times)
    area = {k: np.zeros(span) for k in scene.object_ids}
    for i in range(span):
        for k, a in scene.visible_areas(i).items():
            area[k][i] = a
    offsets = np.array(times)
    starts: list[tuple[int, list[int]]] = []
    for start in range(RETURN_STARTS):
        back = []
        for k, a in area.items():
            w = a[start + offsets]
            gone = np.flatnonzero(w[1:] == 0)
            if w[0] >= MIN_FIRST_AREA and gone.size and (w[gone[0] + 2:] >= MIN_FIRST_AREA).any():
                back.append(k)
        if back:
            starts.append((start, back))
    if not starts:
        return None
    start, back = starts[int(rng.integers(len(starts)))]
    rest = [k for k, a in area.items() if k not in back and a[start] >= MIN_FIRST_AREA]
    return start, [back[i] for i in rng.permutation(len(back))] + [rest[i] for i in rng.permutation(len(rest))]


def interior_point(rng: np.random.Generator, region: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel of ``region`` (bool[H, W], non-empty), biased away from its edge."""
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist >= 0.5 * dist.max())
    i = int(rng.integers(len(ys)))
    return float(xs[i]), float(ys[i])


def first_frame_prompt(rng: np.random.Generator, mask: np.ndarray, kind: str) -> PointPrompt:
    """``kind`` "points" (1-3 clicks, some negative) or "box" (jittered by up to 10% of its size)."""
    if kind == "box":
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        jit = 0.1 * np.array([x1 - x0 + 1, y1 - y0 + 1] * 2) * rng.uniform(-1, 1, 4)
        box = np.array([x0, y0, x1, y1], np.float32) + jit.astype(np.float32)
        return PointPrompt(box.reshape(2, 2), np.array([2, 3], np.int32))
    coords, labels = [interior_point(rng, mask)], [1]
    for _ in range(int(rng.integers(0, 3))):
        positive = rng.random() < 0.6
        region = mask if positive else ~mask
        coords.append(interior_point(rng, region))
        labels.append(int(positive))
    return PointPrompt(np.array(coords, np.float32), np.array(labels, np.int32))


def correction_click(rng: np.random.Generator, pred: np.ndarray, gt: np.ndarray) -> PointPrompt | None:
    """A click on the larger error of ``pred`` vs ``gt``: positive on a miss, negative on a false
    positive; None when there is no error."""
    missed, extra = gt & ~pred, pred & ~gt
    if not missed.any() and not extra.any():
        return None
    positive = missed.sum() >= extra.sum()
    xy = interior_point(rng, missed if positive else extra)
    return PointPrompt(np.array([xy], np.float32), np.array([int(positive)], np.int32))


def pad_prompts(prompts: list[PointPrompt]) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts of different lengths: float32[B, N, 2], int32[B, N], padded with label -1."""
    n = max(len(p.labels) for p in prompts)
    coords = np.zeros((len(prompts), n, 2), np.float32)
    labels = -np.ones((len(prompts), n), np.int32)
    for i, p in enumerate(prompts):
        coords[i, : len(p.labels)] = p.coords
        labels[i, : len(p.labels)] = p.labels
    return coords, labels
