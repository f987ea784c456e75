"""``streamtrack bench``: how fast the tracker runs on this machine, per stage, to choose a model and size."""

from __future__ import annotations

import argparse
import json
import sys

from streamtrack.cli import UsageError, add_threads_arg, apply_threads

HELP = "time the tracker on this machine (per-frame and per-stage latency) to choose a model size and resolution"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help=HELP,
        description=(
            HELP + ". Tracks objects on the built-in synthetic source and reports the steady state: "
            "frames after the memory is full (16 frames). Per stage it reports the time, the work "
            "(GFLOP) and the achieved rate against this machine's measured fp32 matmul rate. Then it "
            "runs the live pipeline (capture thread replaying the same frames as a live camera, tracker, "
            "ZeroMQ publisher and a subscriber on 127.0.0.1) and reports capture-to-subscriber latency and dropped frames by cause. "
            "Speed does not depend on the weights, so without --checkpoint an official config runs on "
            "random weights (nano on its shipped ones)."
        ),
    )
    p.add_argument("--config", default="sam2.1_hiera_t", help="model config name or YAML path (default %(default)s)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to load (optional: timing does not depend on it)")
    p.add_argument("--image-size", type=int, default=None, metavar="N", help="model input size (default from the config)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_threads_arg(p)
    p.add_argument("--objects", type=int, default=1, help="objects tracked at once (default 1)")
    p.add_argument("--frames", type=int, default=24, help="frames in all, the first 16 being warm-up (default 24)")
    p.add_argument("--pipeline-frames", type=int, default=40, metavar="N",
                   help="frames through the live pipeline, the first 16 being warm-up; 0 skips it (default 40)")
    p.add_argument("--fps", type=float, default=30.0, help="the live source's frame rate (default 30)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw per-frame latency and per-stage rates as a PNG")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamtrack import benchmark as bm
    from streamtrack.checkpoint import SHIPPED_MODEL, load_model, shipped_checkpoint
    from streamtrack.live.synthetic import SyntheticSource
    from streamtrack.tracker import Prompt, Tracker, TrackerConfig

    if args.frames <= bm.WARMUP:
        raise UsageError(f"--frames must exceed the {bm.WARMUP} warm-up frames")
    if args.pipeline_frames and args.pipeline_frames <= bm.WARMUP:
        raise UsageError(f"--pipeline-frames must be 0 or exceed the {bm.WARMUP} warm-up frames")
    if not 1 <= args.objects <= 3:
        raise UsageError("--objects must be 1, 2 or 3 (the synthetic scene has 3)")
    if args.fps <= 0:
        raise UsageError("--fps must be positive")
    apply_threads(args)
    checkpoint = args.checkpoint
    if checkpoint is None and args.config == SHIPPED_MODEL:
        checkpoint = shipped_checkpoint()
    model = load_model(args.config, checkpoint, args.image_size, args.device)

    clip = SyntheticSource(width=640, height=480, num_objects=3, seed=0, live=False, num_frames=args.frames + 1)
    clip.open()
    boxes = clip.first_frame_boxes()
    prompts = [Prompt(i, box=tuple(map(float, boxes[i]))) for i in list(boxes)[: args.objects]]
    frames = [clip.read().rgb for _ in range(args.frames + 1)]

    def tracker() -> Tracker:
        return Tracker(model, TrackerConfig(max_objects=args.objects))

    def progress(i: int, ms: float) -> None:
        print(f"frame {i + 1}/{args.frames}: {ms:.0f} ms", file=sys.stderr)

    ours = tracker()
    timing = bm.time_tracker(ours, frames[: args.frames], prompts, on_frame=progress)
    gflop = bm.stage_gflop(ours, frames[args.frames])
    ceiling = bm.matmul_ceiling_gflops(device=args.device)
    stage_ms = timing.stage_median()
    steady = timing.steady.summary()
    rate = {s: gflop[s] / (stage_ms[s] / 1e3) if stage_ms.get(s, 0) > 0 else float("nan") for s in gflop if s in stage_ms}
    report = {
        "config": model.cfg.name, "image_size": model.image_size, "device": args.device, "objects": args.objects,
        "threads": torch_threads(), "steady_frames": len(timing.steady.ms), "frame_ms": steady,
        "frame_ms_median": steady["median"], "frame_ms_p95": steady["p95"], "fps": 1e3 / steady["median"],
        "stage_ms_median": stage_ms, "stage_gflop": gflop, "stage_gflops_per_s": rate,
        "matmul_ceiling_gflops_per_s": ceiling,
    }
    print(f"{report['config']} at {report['image_size']} px, {args.objects} object(s) on {args.device} "
          f"({report['threads']} threads): {steady['median']:.0f} ms/frame median, p95 {steady['p95']:.0f} ms, "
          f"{report['fps']:.2f} frames/s (tracker only)")
    print(f"  {'stage':<17} {'ms':>8} {'GFLOP':>8} {'GFLOP/s':>8}  of the {ceiling:.0f} GFLOP/s matmul ceiling")
    for s in bm.STAGES:
        g = gflop.get(s)
        line = f"  {s:<17} {stage_ms[s]:8.1f}"
        if g is not None:
            line += f" {g:8.2f} {rate[s]:8.1f}  {100 * rate[s] / ceiling:5.1f}%"
        print(line)
    print(f"  {'other (untimed)':<17} {'':8} {gflop['other']:8.2f}")

    if args.pipeline_frames:
        live = bm.pipeline_latency(tracker(), lambda: bm.ReplayCamera(frames, args.fps), {0: prompts},
                                   args.pipeline_frames)
        report["pipeline"] = live.report()
        lat = report["pipeline"]["capture_to_receipt_ms"]
        print(f"live pipeline at {args.fps:g} frames/s, {live.tracked} frames tracked: capture to subscriber "
              + (f"p50 {lat['median']:.0f}, p95 {lat['p95']:.0f}, p99 {lat['p99']:.0f}, max {lat['max']:.0f} ms"
                 if lat else "no frame received"))
        print(f"  dropped: {live.dropped_stale} stale (the tracker was busy with an earlier frame), "
              f"{live.dropped_publish} at the publisher (queue full), {live.missed_by_subscriber} missed by the subscriber")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        bm.plot_png(args.plot, f"streamtrack bench: {report['config']} at {report['image_size']} px, {args.device}",
                    {"tracker ms/frame": timing.frame_ms, **({"pipeline capture->receipt ms (frames 16+)": live.received_ms}
                                                           if args.pipeline_frames else {})},
                    {**{s: rate[s] for s in bm.STAGES[1:]}, "matmul ceiling": ceiling}, "GFLOP/s")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
