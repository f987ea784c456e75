"""The live pipeline tracking on the thread that loaded the model, or on a thread of its own.

`Pipeline.run` tracks on the calling thread (what `streamtrack run` does); `Pipeline.start`
tracks on a new thread. Torch's CPU kernels keep one OpenMP thread team per calling thread,
and a second team makes every parallel kernel slower (see `streamtrack/live/pipeline.py`).
This script runs both ways on the same frames, alternating, in one process: a replaying
live camera at ``--fps``, the tracker, the ZeroMQ publisher and a subscriber on 127.0.0.1.
Per run it reports the median time of ``Tracker.track`` from frame 16 on, capture to
subscriber (p50 and p95) and the frames dropped as stale.

    .venv-test/bin/python benchmarks/pipeline_threads.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from streamtrack import benchmark as bm
from streamtrack.checkpoint import SHIPPED_MODEL, load_model, shipped_checkpoint
from streamtrack.client import Subscriber
from streamtrack.live.pipeline import Pipeline, PipelineConfig
from streamtrack.live.synthetic import SyntheticSource
from streamtrack.live.wire import FrameMessage
from streamtrack.tracker import Prompt, Tracker, TrackerConfig


class TimedTracker(Tracker):
    """A tracker that records how long each ``track`` call took, in ms."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.track_ms: list[float] = []

    def track(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        start = time.perf_counter()
        out = super().track(*args, **kwargs)
        self.track_ms.append((time.perf_counter() - start) * 1e3)
        return out


def on_own_thread(tracker: Tracker, source: Callable, prompts: dict, frames: int) -> tuple[list[float], int]:
    """``Pipeline.start``, with the subscriber on this thread: capture-to-subscriber ms, stale drops."""
    config = PipelineConfig(pub_addr="tcp://127.0.0.1:*", control_addr="tcp://127.0.0.1:*", max_frames=frames,
                            reconnect=False)
    pipeline = Pipeline(tracker, source, config, prompts)
    received = []
    pipeline.start()
    try:
        with Subscriber(pipeline.pub_addr, topics=("frame",)) as sub:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                msg = sub.recv(timeout=0.5)
                if isinstance(msg, FrameMessage) and msg.frame_index >= bm.WARMUP:
                    received.append((time.time_ns() - msg.t_capture_wall_ns) / 1e6)
                elif msg is None and pipeline.wait(0):
                    break
    finally:
        pipeline.stop()
    return received, pipeline.counters.dropped_stale


def on_calling_thread(tracker: Tracker, source: Callable, prompts: dict, frames: int) -> tuple[list[float], int]:
    """``Pipeline.run`` (through ``benchmark.pipeline_latency``)."""
    live = bm.pipeline_latency(tracker, source, prompts, frames)
    return live.received_ms, live.dropped_stale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="runs of each way, alternating (default %(default)s)")
    ap.add_argument("--frames", type=int, default=150, help="frames tracked per run (default %(default)s)")
    ap.add_argument("--fps", type=float, default=30.0, help="the replaying camera's rate (default %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = ap.parse_args()
    if args.frames <= bm.WARMUP:
        ap.error(f"--frames must exceed the {bm.WARMUP} warm-up frames")

    model = load_model(SHIPPED_MODEL, shipped_checkpoint())
    clip = SyntheticSource(width=640, height=480, num_objects=3, seed=0, live=False, num_frames=61)
    clip.open()
    obj_id, box = next(iter(clip.first_frame_boxes().items()))
    prompts = {0: [Prompt(obj_id, box=tuple(map(float, box)))]}
    rgb = [clip.read().rgb for _ in range(61)]
    ways = {"Pipeline.start (own thread)": on_own_thread, "Pipeline.run (calling thread)": on_calling_thread}
    runs = []
    for r in range(args.rounds):
        for name, way in ways.items():
            tracker = TimedTracker(model, TrackerConfig(max_objects=1))
            received, stale = way(tracker, lambda: bm.ReplayCamera(rgb, args.fps), prompts, args.frames)
            run = {"round": r, "way": name, "track_ms_median": float(np.median(tracker.track_ms[bm.WARMUP:])),
                   "capture_to_subscriber_ms": bm.Series(received).summary(), "dropped_stale": stale,
                   "tracked": len(tracker.track_ms)}
            runs.append(run)
            lat = run["capture_to_subscriber_ms"]
            print(f"round {r} {name:30s} track {run['track_ms_median']:5.1f} ms median; capture to subscriber "
                  f"p50 {lat['median']:4.0f}, p95 {lat['p95']:4.0f} ms; {stale} stale", flush=True)
    for name in ways:
        mine = [x["track_ms_median"] for x in runs if x["way"] == name]
        print(f"{name:30s} track median of medians {np.median(mine):5.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch_threads": torch.get_num_threads(), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
