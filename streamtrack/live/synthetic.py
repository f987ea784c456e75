"""A synthetic video with known answers: textured blobs that move, scale, occlude each other and
leave the frame and come back, each frame carrying the ground-truth mask of every object's
visible pixels. Tests, benchmarks and the demo use it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamtrack.live.sources import Source
from streamtrack.live.types import RawFrame
from streamtrack.video_file import SourceError

MAX_SCALE = 1.3
"""Largest size of an object relative to its base size; textures are made at this size."""
EXIT_SIN = 0.99
"""At base size or smaller, an object is fully outside the frame whenever |sin| of its horizontal
motion exceeds this (9% of a period), so objects leave now and then and come back."""


@dataclass(frozen=True)
class _Wave:
    """centre + amplitude * sin(2 pi freq_hz t + phase)."""

    centre: float
    amplitude: float
    freq_hz: float
    phase: float

    def at(self, t: float) -> float:
        return self.centre + self.amplitude * math.sin(2.0 * math.pi * self.freq_hz * t + self.phase)


@dataclass(frozen=True)
class _Sprite:
    obj_id: int
    texture: np.ndarray
    """uint8[S, S, 3] at MAX_SCALE."""
    shape: np.ndarray
    """uint8[S, S], 1 inside the object, at MAX_SCALE."""
    x: _Wave
    """Centre column in px."""
    y: _Wave
    """Centre row in px."""
    scale: _Wave
    """Size relative to the base size, within [2 - MAX_SCALE, MAX_SCALE]."""


@dataclass(frozen=True)
class _Placement:
    """A sprite as drawn on one frame: its top-left corner and pixels at that frame's scale."""

    obj_id: int
    top: int
    left: int
    patch: np.ndarray
    """uint8[s, s, 3]."""
    mask: np.ndarray
    """bool[s, s]."""

    def windows(self, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """(frame window, patch window) of the part inside an h x w frame, or None if none is."""
        s = self.mask.shape[0]
        y0, y1 = max(self.top, 0), min(self.top + s, h)
        x0, x1 = max(self.left, 0), min(self.left + s, w)
        if y0 >= y1 or x0 >= x1:
            return None
        frame_win = (slice(y0, y1), slice(x0, x1))
        patch_win = (slice(y0 - self.top, y1 - self.top), slice(x0 - self.left, x1 - self.left))
        return frame_win, patch_win


class SyntheticSource(Source):
    """``num_objects`` textured blobs (ids 1..N) on a textured background, drawn in a fixed depth order.

    Frame i shows time ``i / fps`` and is a pure function of (i, constructor arguments): the same
    seed gives the same video. Every RawFrame has ``gt_masks`` {obj_id: bool[H, W]}, the object's
    visible pixels (empty while it is hidden or outside), and ``source_ts = i / fps`` seconds.

    live=True: read() paces to ``fps`` like a camera: frame i is due ``i / fps`` s after open(), and
    a reader that falls behind gets the current frame, skipping those it missed. live=False: frames
    come as fast as they are read. ``num_frames=None`` is endless.
    """

    def __init__(self, width: int = 640, height: int = 480, num_objects: int = 3, fps: float = 30.0,
                 seed: int = 0, live: bool = True, num_frames: int | None = None) -> None:
        if width < 16 or height < 16:
            raise SourceError(f"synthetic source: size {width}x{height} is below the 16x16 minimum")
        if not 1 <= num_objects <= 32:
            raise SourceError(f"synthetic source: num_objects {num_objects} must be within 1..32")
        if not fps > 0:
            raise SourceError(f"synthetic source: fps {fps} must be > 0")
        if num_frames is not None and num_frames < 0:
            raise SourceError(f"synthetic source: num_frames {num_frames} must be >= 0")
        self.width, self.height, self.seed = int(width), int(height), int(seed)
        self.fps, self.live, self.num_frames = float(fps), bool(live), num_frames
        rng = np.random.default_rng(seed)
        self._background = _background(rng, self.height, self.width)
        self._sprites = [_make_sprite(rng, k, num_objects, self.height, self.width) for k in range(num_objects)]
        self._depth_order = [self._sprites[i] for i in rng.permutation(num_objects)]
        self._next = 0
        self._t0: float | None = None
        self._closed = threading.Event()

    @property
    def object_ids(self) -> list[int]:
        return [s.obj_id for s in self._sprites]

    def describe(self) -> str:
        return (f"synthetic {self.width}x{self.height}, {len(self._sprites)} objects, {self.fps:g} fps, "
                f"seed {self.seed}{'' if self.live else ', not live'}")

    def open(self) -> None:
        self._next = 0
        self._t0 = time.monotonic()

    def read(self) -> RawFrame | None:
        if self._t0 is None:
            raise SourceError(f"{self.describe()}: read before open")
        index = self._next
        if self.live:
            index = max(index, int((time.monotonic() - self._t0) * self.fps))
            wait = self._t0 + index / self.fps - time.monotonic()
            if wait > 0 and self._closed.wait(wait):
                return None
        if self._closed.is_set() or (self.num_frames is not None and index >= self.num_frames):
            return None
        self._next = index + 1
        return self.render(index)

    def close(self) -> None:
        self._closed.set()

    def render(self, index: int) -> RawFrame:
        """Frame ``index``: rgb uint8[H, W, 3], gt_masks {obj_id: bool[H, W]} of visible pixels."""
        rgb = self._background.copy()
        labels = np.zeros((self.height, self.width), np.uint8)  # id of the front-most object, 0 = none
        for p in self._placements(index):
            win = p.windows(self.height, self.width)
            if win is None:
                continue
            frame_win, patch_win = win
            inside = p.mask[patch_win]
            np.copyto(rgb[frame_win], p.patch[patch_win], where=inside[..., None])
            np.copyto(labels[frame_win], p.obj_id, where=inside)
        masks = {k: labels == k for k in self.object_ids}
        return RawFrame(rgb, index / self.fps, masks)

    def full_masks(self, index: int) -> dict[int, np.ndarray]:
        """Each object's whole shape on frame ``index``, hidden parts included: {obj_id: bool[H, W]}."""
        out = {k: np.zeros((self.height, self.width), bool) for k in self.object_ids}
        for p in self._placements(index):
            win = p.windows(self.height, self.width)
            if win is not None:
                out[p.obj_id][win[0]] = p.mask[win[1]]
        return out

    def first_frame_boxes(self) -> dict[int, tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) inclusive pixel bounds of each object's visible part on frame 0
        (the tracker's bbox convention), for prompting from ground truth; hidden objects are left out."""
        boxes = {}
        for obj_id, mask in (self.render(0).gt_masks or {}).items():
            ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if ys.size:
                boxes[obj_id] = (float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1]))
        return boxes

    def _placements(self, index: int) -> Iterator[_Placement]:
        """The sprites on frame ``index``, back to front."""
        t = index / self.fps
        for sp in self._depth_order:
            full = sp.shape.shape[0]
            size = max(2, round(full * sp.scale.at(t) / MAX_SCALE))
            patch = cv2.resize(sp.texture, (size, size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(sp.shape, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
            top, left = round(sp.y.at(t) - size / 2), round(sp.x.at(t) - size / 2)
            yield _Placement(sp.obj_id, top, left, patch, mask)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 3) -> np.ndarray:
    """float32[h, w, channels] in about [0, 1]: random values on a coarse grid, cubic-interpolated."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8[h, w, 3]: muted large blotches with finer texture and grain on top."""
    base = 0.6 * _smooth_noise(rng, h, w, 6) + 0.25 * _smooth_noise(rng, h, w, 40)
    base = 0.5 * base + 0.5 * base.mean(axis=2, keepdims=True)  # half-saturated: objects stand out
    grain = rng.normal(0.0, 0.02, (h, w, 1)).astype(np.float32)
    return np.clip((base + grain) * 200.0 + 20.0, 0, 255).astype(np.uint8)


def _make_sprite(rng: np.random.Generator, k: int, n: int, h: int, w: int) -> _Sprite:
    radius = min(h, w) * rng.uniform(0.11, 0.17)
    full = int(2 * radius * MAX_SCALE) + 1
    # Start spread out across the frame; the horizontal swing is wide enough to leave it.
    amp_x = (w / 2 + radius) / EXIT_SIN
    phase_x = math.asin(((k + 0.5) / n - 0.5) * w / amp_x)
    if rng.random() < 0.5:
        phase_x = math.pi - phase_x  # same start, moving the other way
    return _Sprite(
        obj_id=k + 1,
        texture=_texture(rng, full),
        shape=_blob(rng, full),
        x=_Wave(w / 2, amp_x, rng.uniform(0.04, 0.07), phase_x),
        y=_Wave(h / 2, h * rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.12), rng.uniform(0, 2 * math.pi)),
        scale=_Wave(1.0, MAX_SCALE - 1.0, rng.uniform(0.05, 0.15), rng.uniform(0, 2 * math.pi)),
    )


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8[size, size, 3]: a saturated base colour modulated by smooth noise at two scales."""
    hue = np.array([[[rng.uniform(0, 180), 200, 230]]], np.uint8)
    colour = cv2.cvtColor(hue, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    light = 0.45 + 0.35 * _smooth_noise(rng, size, size, 4, 1) + 0.3 * _smooth_noise(rng, size, size, 14, 1)
    return np.clip(colour * light, 0, 255).astype(np.uint8)


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8[size, size]: a random smooth star-shaped blob (radius with 2nd and 3rd harmonics) filling the square."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = 1 + rng.uniform(0, 0.25) * np.cos(2 * (theta - rng.uniform(0, np.pi))) \
        + rng.uniform(0, 0.15) * np.cos(3 * (theta - rng.uniform(0, np.pi)))
    aspect = rng.uniform(0.65, 1.0)
    scale = (size / 2 - 1) / r.max()
    c = (size - 1) / 2
    pts = np.stack([c + scale * r * np.cos(theta), c + scale * aspect * r * np.sin(theta)], axis=1)
    out = np.zeros((size, size), np.uint8)
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
    return out


_SPEC_FIELDS: dict[str, Callable[[str], Any]] = {
    "width": int, "height": int, "num_objects": int, "fps": float, "seed": int,
    "live": lambda v: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[v.lower()],
    "num_frames": int,
}


def parse_synthetic_spec(text: str) -> dict[str, Any]:
    """``"width=320,height=240,live=false"`` -> keyword arguments of SyntheticSource."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _SPEC_FIELDS:
            raise SourceError(f"synthetic source: {item!r} is not key=value with a key among "
                              f"{', '.join(_SPEC_FIELDS)}")
        try:
            out[key] = _SPEC_FIELDS[key](value.strip())
        except (ValueError, KeyError):
            raise SourceError(f"synthetic source: {key}={value!r} is not a valid value") from None
    return out
