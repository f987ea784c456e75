"""Per-frame stage timestamps, shared by the tracker and the live pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class StageTimes:
    """Monotonic timestamps (ns) of one frame's trip through the pipeline; 0 = not reached."""

    capture: int = 0
    dequeue: int = 0
    preprocess: int = 0
    image_encoder: int = 0
    memory_attention: int = 0
    decoder: int = 0
    memory_encoder: int = 0
    publish: int = 0

    def latencies_ms(self) -> dict[str, float]:
        """Duration of each stage from the previous reached timestamp, in ms."""
        out: dict[str, float] = {}
        prev = self.capture
        for name in ("dequeue", "preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder", "publish"):
            t = getattr(self, name)
            if t and prev:
                out[name] = (t - prev) / 1e6
                prev = t
        return out

    def mark(self, stage: str) -> None:
        """Record ``time.monotonic_ns()`` as the end of ``stage``."""
        setattr(self, stage, time.monotonic_ns())
