"""Data that flows through the live pipeline: captured frames, stage times, per-frame results."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamtrack.timing import StageTimes

__all__ = ["RawFrame", "CapturedFrame", "StageTimes", "Counters"]


@dataclass
class RawFrame:
    """One frame as a source produces it."""

    rgb: np.ndarray
    """uint8[H, W, 3]."""
    source_ts: float | None = None
    """Source presentation time in seconds (pts x time base), when the source has one."""
    gt_masks: dict[int, np.ndarray] | None = None
    """Ground-truth masks by object id (bool[H, W]); only the synthetic source has them."""


@dataclass
class CapturedFrame:
    """A frame stamped by the capture thread."""

    seq: int
    """Pipeline-wide sequence number: +1 per captured frame, across reconnects."""
    session: str
    """Source session id; a new one after every (re)connect."""
    frame: RawFrame
    t_capture_ns: int
    """time.monotonic_ns() when the frame was read."""
    t_capture_wall_ns: int
    """time.time_ns() when the frame was read."""


@dataclass
class Counters:
    """Running totals the status topic reports."""

    captured: int = 0
    dropped_stale: int = 0
    """Live frames replaced by a newer one before the tracker took them."""
    tracked: int = 0
    published: int = 0
    dropped_publish: int = 0
    """Messages not sent because the PUB socket's high-water mark was reached."""
    reconnects: int = 0
    damaged_packets: int = 0
    """Undecodable packets of live sources skipped (logged, and the stream goes on)."""
    control_requests: int = 0
    control_errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)
