"""The synthetic live source: procedural video (``streamtrack.procgen``) served like a camera,
each frame carrying the ground-truth mask of every object's visible pixels. Tests, benchmarks
and the demo use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamtrack.live.sources import Source
from streamtrack.live.types import RawFrame
from streamtrack.procgen import Scene, SceneConfig
from streamtrack.video_file import SourceError


class SyntheticSource(Source):
    """A procedural scene with ``num_objects`` labelled objects (ids 1..N) and ``distractors``
    unlabelled look-alikes; ``effects`` turns on camera motion, lighting changes, blur and noise.

    Frame i shows time ``i / fps`` and is a pure function of (i, constructor arguments): the same
    seed gives the same video. Every RawFrame has ``gt_masks`` {obj_id: bool[H, W]}, the object's
    visible pixels (empty while it is hidden or outside), and ``source_ts = i / fps`` seconds.

    live=True: read() paces to ``fps`` like a camera: frame i is due ``i / fps`` s after open(), and
    a reader that falls behind gets the current frame, skipping those it missed. live=False: frames
    come as fast as they are read. ``num_frames=None`` is endless.
    """

    def __init__(self, width: int = 640, height: int = 480, num_objects: int = 3, fps: float = 30.0,
                 seed: int = 0, live: bool = True, num_frames: int | None = None, distractors: int = 0,
                 effects: bool = True) -> None:
        if width < 16 or height < 16:
            raise SourceError(f"synthetic source: size {width}x{height} is below the 16x16 minimum")
        if not 1 <= num_objects <= 32:
            raise SourceError(f"synthetic source: num_objects {num_objects} must be within 1..32")
        if not 0 <= distractors <= 32:
            raise SourceError(f"synthetic source: distractors {distractors} must be within 0..32")
        if not fps > 0:
            raise SourceError(f"synthetic source: fps {fps} must be > 0")
        if num_frames is not None and num_frames < 0:
            raise SourceError(f"synthetic source: num_frames {num_frames} must be >= 0")
        self.width, self.height, self.seed = int(width), int(height), int(seed)
        self.fps, self.live, self.num_frames = float(fps), bool(live), num_frames
        self.scene = Scene(SceneConfig(width=self.width, height=self.height, num_objects=num_objects,
                                       num_distractors=distractors, fps=self.fps, camera=effects,
                                       lighting=effects, blur=effects, noise=effects), self.seed)
        self._next = 0
        self._t0: float | None = None
        self._closed = threading.Event()

    @property
    def object_ids(self) -> list[int]:
        return self.scene.object_ids

    def describe(self) -> str:
        return (f"synthetic {self.width}x{self.height}, {len(self.object_ids)} objects, {self.fps:g} fps, "
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
        rgb, masks = self.scene.render(index)
        return RawFrame(rgb, index / self.fps, masks)

    def full_masks(self, index: int) -> dict[int, np.ndarray]:
        """Each object's whole shape on frame ``index``, hidden parts included: {obj_id: bool[H, W]}."""
        return self.scene.full_masks(index)

    def first_frame_masks(self) -> dict[int, np.ndarray]:
        """The visible pixels of each object on frame 0, {obj_id: bool[H, W]}, for prompting from
        ground truth; hidden objects are left out."""
        return {obj_id: mask for obj_id, mask in (self.render(0).gt_masks or {}).items() if mask.any()}

    def first_frame_boxes(self) -> dict[int, tuple[float, float, float, float]]:
        """(x0, y0, x1, y1) inclusive pixel bounds of each object's visible part on frame 0
        (the tracker's bbox convention), for prompting from ground truth; hidden objects are left out."""
        boxes = {}
        for obj_id, mask in self.first_frame_masks().items():
            ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            boxes[obj_id] = (float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1]))
        return boxes


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_SPEC_FIELDS: dict[str, Callable[[str], Any]] = {
    "width": int, "height": int, "num_objects": int, "fps": float, "seed": int,
    "live": lambda v: _BOOLS[v.lower()],
    "num_frames": int, "distractors": int,
    "effects": lambda v: _BOOLS[v.lower()],
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
