"""Typed inputs and outputs of the tracker."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class PromptError(ValueError):
    """A prompt is malformed; the message says how."""


@dataclass(frozen=True)
class TrackerConfig:
    """How the tracker behaves; the model itself is configured by ``ModelConfig``."""

    max_objects: int = 8
    """Object slots allocated up front; adding more objects than this is an error."""
    max_cond_frames: int = 4
    """Conditioning (prompted) frames kept per object. When full, the oldest is evicted,
    except the object's first, so hours of corrections never grow memory."""
    corrections_as_cond: bool = True
    """A correction on an already-tracked frame becomes a conditioning frame (official option
    ``add_all_frames_to_correct_as_cond``). On by default: a live user's correction should keep
    steering the object; off, it leaves memory after 6 frames."""
    fill_hole_area: int = 8
    """Fill background holes of at most this many low-res pixels (official default 8; 0 = off)."""
    non_overlap: bool = False
    """Give each pixel to at most one object (the one with the highest logit)."""
    mask_threshold: float = 0.0
    stream_length: int | None = None
    """Frames in the stream, when known (a video file). Object-pointer temporal positions are
    scaled by min(stream_length, 16) - 1, as the official predictor does; a live stream
    (None) uses 15. Only streams shorter than 16 frames are affected."""
    fixed_shapes: bool | None = None
    """True: the per-frame step attends over every memory slot with masks, so its tensor
    shapes never change (CUDA graphs need this). False: only the slots in use (exact, less
    work, shapes vary). None: True on CUDA, False elsewhere."""
    cuda_graph: bool | None = None
    """Record the fixed-shape frame step as a CUDA graph after two warm-up frames and replay it
    (needs CUDA and fixed shapes). Per-stage times then cover the step as a whole. None: on CUDA
    with fixed shapes."""

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise ValueError("max_objects must be at least 1")
        if self.max_cond_frames < 2:
            raise ValueError("max_cond_frames must be at least 2 (the first is never evicted)")
        if self.stream_length is not None and self.stream_length < 1:
            raise ValueError("stream_length must be at least 1")
        if self.fill_hole_area < 0:
            raise ValueError("fill_hole_area must be >= 0")


@dataclass(frozen=True)
class Prompt:
    """A prompt for one object on the current frame, in source-image pixels.

    Exactly one of: points (with labels), a box (optionally with points), or a mask.
    """

    obj_id: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    """1 = foreground, 0 = background, one per point."""
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = field(default=None, compare=False)
    """bool or 0/1 [H, W] at source resolution (or any size; it is resized)."""

    def __post_init__(self) -> None:
        if not isinstance(self.obj_id, int) or isinstance(self.obj_id, bool):
            raise PromptError(f"obj_id must be an int, got {self.obj_id!r}")
        if len(self.points) != len(self.labels):
            raise PromptError(f"{len(self.points)} points but {len(self.labels)} labels")
        for p in self.points:
            if len(p) != 2 or not all(_finite(v) for v in p):
                raise PromptError(f"point {p!r} must be two finite numbers (x, y)")
        if any(lab not in (0, 1) for lab in self.labels):
            raise PromptError("point labels must be 1 (foreground) or 0 (background)")
        if self.box is not None:
            if len(self.box) != 4 or not all(_finite(v) for v in self.box):
                raise PromptError(f"box {self.box!r} must be four finite numbers (x0, y0, x1, y1)")
            x0, y0, x1, y1 = self.box
            if x1 < x0 or y1 < y0:
                raise PromptError(f"box {self.box!r} must have x0 <= x1 and y0 <= y1")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.ndim != 2 or m.size == 0:
                raise PromptError(f"mask must be a 2-D array, got shape {list(m.shape)}")
            if self.points or self.box is not None:
                raise PromptError("a mask prompt cannot be combined with points or a box")
        elif not self.points and self.box is None:
            raise PromptError("a prompt needs points, a box or a mask")

    @property
    def num_points(self) -> int:
        """Points as the model counts them (a box is two corner points)."""
        return len(self.points) + (2 if self.box is not None else 0)


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class ObjectResult:
    obj_id: int
    mask: np.ndarray
    """bool[H, W] at source resolution; all False when not visible."""
    object_score: float
    """Object-score logit of SAM 2's occlusion head."""
    visible: bool
    """object_score > 0."""
    iou: float
    """Predicted IoU of the mask."""
    bbox: tuple[int, int, int, int] | None
    """(x0, y0, x1, y1) inclusive pixel bounds of the mask, or None when empty."""
    area: int
    """Mask pixels."""


@dataclass
class FrameResult:
    frame_index: int
    """0-based index of the frame in the stream (as fed to the tracker)."""
    objects: list[ObjectResult]

    def by_id(self) -> dict[int, ObjectResult]:
        return {o.obj_id: o for o in self.objects}
