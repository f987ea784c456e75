"""Side by side, in one run: streamtrack's tracker and the official SAM2VideoPredictor.

Same frames, same random-weight checkpoint, same box prompt on frame 0, frame by frame
interleaved. Reports the steady-state per-frame latency (median, p95) of both and their
ratio; streamtrack's per-stage time, work (GFLOP) and achieved rate against this machine's
fp32 matmul ceiling; and the live pipeline's capture-to-subscriber latency (a camera
replaying the same frames at --fps) with drops by cause.
Writes JSON and a PNG plot. Needs the test environment (the official ``sam2`` package):

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

from streamtrack import benchmark as bm  # noqa: E402
from streamtrack.checkpoint import load_model  # noqa: E402
from streamtrack.live.synthetic import SyntheticSource  # noqa: E402
from streamtrack.preprocess import image_to_input  # noqa: E402
from streamtrack.tracker import Prompt, Tracker, TrackerConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=bm.WARMUP)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline-frames", type=int, default=40, help="0 skips the live pipeline")
    ap.add_argument("--fps", type=float, default=30.0, help="the live source's frame rate")
    ap.add_argument("--out", default="out/bench")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    clip = SyntheticSource(width=640, height=480, num_objects=3, seed=0, live=False, num_frames=args.frames + 1)
    clip.open()
    frames = [clip.read().rgb for _ in range(args.frames + 1)]
    box = tuple(map(float, clip.first_frame_boxes()[1]))
    images = torch.cat([image_to_input(f, args.image_size) for f in frames[: args.frames]])

    with tempfile.TemporaryDirectory() as tmp:
        official = build_official(args.config, args.image_size, seed=0, video=True)
        ckpt = save_official_checkpoint(official, Path(tmp) / "ckpt.pt")
        model = load_model(args.config, ckpt, image_size=args.image_size)

        def tracker() -> Tracker:
            return Tracker(model, TrackerConfig(max_objects=1, fill_hole_area=0, stream_length=args.frames))

        # Frame by frame, interleaved (ours, then the official predictor's next frame), so that
        # both see the same machine: a shared machine's load drifts over minutes.
        state = official_video_state(official, frames[: args.frames], images, Path(tmp) / "jpg")
        official.add_new_points_or_box(state, 0, 1, box=np.array(box, np.float32))
        official_frames = official.propagate_in_video(state)
        official_ms = []

        def official_next(i: int, ms: float) -> None:
            t = time.perf_counter()
            next(official_frames)
            official_ms.append((time.perf_counter() - t) * 1e3)
            print(f"frame {i + 1}/{args.frames}: streamtrack {ms:.0f} ms, official {official_ms[-1]:.0f} ms",
                  file=sys.stderr)

        ours = tracker()
        with torch.inference_mode():
            timing = bm.time_tracker(ours, frames[: args.frames], Prompt(1, box=box), args.warmup, official_next)
        gflop = bm.stage_gflop(ours, frames[args.frames])
        ceiling = bm.matmul_ceiling_gflops()
        live = None
        if args.pipeline_frames:
            live = bm.pipeline_latency(Tracker(model, TrackerConfig(max_objects=1)),
                                       lambda: bm.ReplayCamera(frames, args.fps),
                                       {0: [Prompt(1, box=box)]}, args.pipeline_frames, args.warmup)

    w = args.warmup
    o, m = bm.Series(official_ms[w:]).summary(), timing.steady.summary()
    stage_ms = timing.stage_median()
    rate = {s: gflop[s] / (stage_ms[s] / 1e3) for s in bm.STAGES[1:]}
    report = {
        "config": args.config, "image_size": args.image_size, "frames": args.frames, "warmup": w,
        "threads": args.threads, "objects": 1,
        "official_ms": o, "streamtrack_ms": m, "speedup_median": o["median"] / m["median"],
        "streamtrack_stage_ms_median": stage_ms, "streamtrack_stage_gflop": gflop,
        "streamtrack_stage_gflops_per_s": rate, "matmul_ceiling_gflops_per_s": ceiling,
        "streamtrack_stage_fraction_of_ceiling": {s: r / ceiling for s, r in rate.items()},
        "pipeline": live.report() if live else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.config}_{args.image_size}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    series = {"official ms/frame": official_ms, "streamtrack ms/frame": timing.frame_ms}
    if live:
        series["pipeline capture->receipt ms (frames 16+)"] = live.received_ms
    bm.plot_png(str(out / f"{name}.png"), f"{args.config} at {args.image_size} px, {args.threads} threads: "
                f"{report['speedup_median']:.2f}x the official predictor", series, {**rate, "matmul ceiling": ceiling}, "GFLOP/s")
    print(json.dumps(report, indent=2))
    print(f"speedup (official / streamtrack, median per frame): {report['speedup_median']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
