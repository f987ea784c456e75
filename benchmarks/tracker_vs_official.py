"""Side by side, in one run: streamtrack's tracker and the official SAM2VideoPredictor.

Same frames, same random-weight checkpoint, same box prompt on frame 0. Reports the
steady-state per-frame latency (median, p95) of both, their ratio, and streamtrack's
per-stage breakdown. Needs the test environment (the official ``sam2`` package):

    .venv-test/bin/python benchmarks/tracker_vs_official.py --image-size 512 --frames 24 --out out/bench

Steady state: frames after ``--warmup`` (by frame 16 the memory ring and all pointer
slots are full). Speed is compared as a ratio measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oracle import build_official, official_video_state, save_official_checkpoint  # noqa: E402

from streamtrack.checkpoint import load_model  # noqa: E402
from streamtrack.live.synthetic import SyntheticSource  # noqa: E402
from streamtrack.preprocess import image_to_input  # noqa: E402
from streamtrack.timing import StageTimes  # noqa: E402
from streamtrack.tracker import Prompt, Tracker, TrackerConfig  # noqa: E402

STAGES = ("preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/bench")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    source = SyntheticSource(width=640, height=480, num_objects=3, seed=0, live=False, num_frames=args.frames)
    source.open()
    frames = [source.read().rgb for _ in range(args.frames)]
    box = tuple(map(float, source.first_frame_boxes()[1]))
    images = torch.cat([image_to_input(f, args.image_size) for f in frames])

    with tempfile.TemporaryDirectory() as tmp:
        official = build_official(args.config, args.image_size, seed=0, video=True)
        ckpt = save_official_checkpoint(official, Path(tmp) / "ckpt.pt")
        ours = Tracker(load_model(args.config, ckpt, image_size=args.image_size),
                       TrackerConfig(max_objects=1, fill_hole_area=0, stream_length=args.frames))

        # Interleave nothing: run each over the whole clip, official first, then ours.
        state = official_video_state(official, frames, images, Path(tmp) / "jpg")
        official.add_new_points_or_box(state, 0, 1, box=np.array(box, np.float32))
        official_ms = []
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in official.propagate_in_video(state):
                now = time.perf_counter()
                official_ms.append((now - t) * 1e3)
                t = now

        ours_ms, stage_ms = [], {s: [] for s in STAGES}
        for i, frame in enumerate(frames):
            times = StageTimes()
            times.mark("capture")
            t = time.perf_counter()
            ours.track(frame, times)
            if i == 0:
                ours.add_prompt(Prompt(1, box=box))
            ours_ms.append((time.perf_counter() - t) * 1e3)
            latencies = times.latencies_ms()
            for s in STAGES:
                stage_ms[s].append(latencies.get(s, float("nan")))

    w = args.warmup
    o, m = np.array(official_ms[w:]), np.array(ours_ms[w:])
    report = {
        "config": args.config, "image_size": args.image_size, "frames": args.frames, "warmup": w,
        "threads": args.threads, "objects": 1,
        "official_ms": {"median": float(np.median(o)), "p95": float(np.percentile(o, 95))},
        "streamtrack_ms": {"median": float(np.median(m)), "p95": float(np.percentile(m, 95))},
        "speedup_median": float(np.median(o) / np.median(m)),
        "streamtrack_stage_ms_median": {s: float(np.nanmedian(v[w:])) for s, v in stage_ms.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.config}_{args.image_size}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"speedup (official / streamtrack, median per frame): {report['speedup_median']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
