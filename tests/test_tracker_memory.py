"""Memory does not grow with the stream: 2,000 frames, 2 objects, corrections on the way."""

from __future__ import annotations

import time

import pytest

from streamtrack.checkpoint import load_model
from streamtrack.tracker import Prompt, Tracker, TrackerConfig
from test_reliability import rss_mib
from video import moving_shapes

N_FRAMES = 2000
WARMUP = 100


@pytest.mark.slow
def test_two_thousand_frames_in_constant_memory(small_model_files):
    """The small test model keeps this under a minute on 2 cores."""
    cfg, ckpt = small_model_files
    tracker = Tracker(load_model(cfg, ckpt), TrackerConfig(max_objects=2, max_cond_frames=3))
    frames = moving_shapes(50, 120, 160)
    state_bytes, rss = [], []
    start = time.monotonic()
    for t in range(N_FRAMES):
        tracker.track(frames[t % len(frames)])
        if t == 0:
            tracker.add_prompt(Prompt(1, points=((40.0, 90.0),), labels=(1,)))
            tracker.add_prompt(Prompt(2, box=(100.0, 30.0, 150.0, 80.0)))
        elif t % 150 == 0:  # corrections become conditioning frames; the cap keeps them bounded
            tracker.add_prompt(Prompt(1 + (t // 150) % 2, points=((60.0, 80.0),), labels=(1,)))
        if t >= WARMUP and t % 50 == 0:
            state_bytes.append(tracker.state_nbytes())
            rss.append(rss_mib())
    elapsed = time.monotonic() - start
    growth = max(rss) - rss[0]
    print(f"{N_FRAMES} frames in {elapsed:.0f} s; tracker tensors {state_bytes[0]} bytes "
          f"(min {min(state_bytes)}, max {max(state_bytes)}); RSS {rss[0]:.0f} MiB, growth {growth:.1f} MiB")
    assert len(set(state_bytes)) == 1, "tracker tensor bytes changed after warm-up"
    assert growth < 50
    for obj in (1, 2):
        assert len(tracker.bank.cond_frames(tracker._objects[obj].row)) == 3
