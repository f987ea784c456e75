"""``streamtrack bench``: how fast the tracker runs on this machine, per stage, to choose a model and size."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from streamtrack.cli import UsageError

HELP = "time the tracker on this machine (per-frame and per-stage latency) to choose a model size and resolution"
STAGES = ("preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help=HELP,
        description=(
            HELP + ". Tracks objects on the built-in synthetic source and reports the steady state: "
            "frames after the memory is full (16 frames). Speed does not depend on the weights, so "
            "without --checkpoint an official config runs on random weights (nano on its shipped ones)."
        ),
    )
    p.add_argument("--config", default="sam2.1_hiera_t", help="model config name or YAML path (default %(default)s)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to load (optional: timing does not depend on it)")
    p.add_argument("--image-size", type=int, default=None, metavar="N", help="model input size (default from the config)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--objects", type=int, default=1, help="objects tracked at once (default 1)")
    p.add_argument("--frames", type=int, default=24, help="frames in all, the first 16 being warm-up (default 24)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamtrack.checkpoint import SHIPPED_MODEL, load_model, shipped_checkpoint
    from streamtrack.live.synthetic import SyntheticSource
    from streamtrack.timing import StageTimes
    from streamtrack.tracker import Prompt, Tracker, TrackerConfig

    warmup = 16
    if args.frames <= warmup:
        raise UsageError(f"--frames must exceed the {warmup} warm-up frames")
    if not 1 <= args.objects <= 3:
        raise UsageError("--objects must be 1, 2 or 3 (the synthetic scene has 3)")
    checkpoint = args.checkpoint
    if checkpoint is None and args.config == SHIPPED_MODEL:
        checkpoint = shipped_checkpoint()
    model = load_model(args.config, checkpoint, args.image_size, args.device)
    tracker = Tracker(model, TrackerConfig(max_objects=args.objects))
    source = SyntheticSource(width=640, height=480, num_objects=3, seed=0, live=False, num_frames=args.frames)
    source.open()
    boxes = source.first_frame_boxes()
    total, stages = [], {s: [] for s in STAGES}
    for i in range(args.frames):
        frame = source.read().rgb
        times = StageTimes()
        times.mark("capture")
        start = time.perf_counter()
        tracker.track(frame, times)
        if i == 0:
            for obj_id in list(boxes)[: args.objects]:
                tracker.add_prompt(Prompt(obj_id, box=tuple(map(float, boxes[obj_id]))))
        total.append((time.perf_counter() - start) * 1e3)
        latencies = times.latencies_ms()
        for s in STAGES:
            stages[s].append(latencies.get(s, float("nan")))
        print(f"frame {i + 1}/{args.frames}: {total[-1]:.0f} ms", file=sys.stderr)
    steady = np.array(total[warmup:])
    report = {
        "config": model.cfg.name, "image_size": model.image_size, "device": args.device, "objects": args.objects,
        "steady_frames": len(steady), "frame_ms_median": float(np.median(steady)),
        "frame_ms_p95": float(np.percentile(steady, 95)), "fps": float(1e3 / np.median(steady)),
        "stage_ms_median": {s: float(np.nanmedian(v[warmup:])) for s, v in stages.items()},
    }
    print(f"{report['config']} at {report['image_size']} px, {args.objects} object(s) on {args.device}: "
          f"{report['frame_ms_median']:.0f} ms/frame median, p95 {report['frame_ms_p95']:.0f} ms, "
          f"{report['fps']:.2f} frames/s")
    for s, v in report["stage_ms_median"].items():
        print(f"  {s:<17} {v:8.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
