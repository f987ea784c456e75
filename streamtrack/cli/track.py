"""``streamtrack track``: track objects through a video file or a folder of frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from streamtrack.cli import UsageError, add_model_args, apply_threads, parse_floats

HELP = "track objects through a video file or a folder of frames, writing per-frame masks"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help=HELP,
        description=(
            "Track objects through a video (decoded with PyAV) or a folder of images, frame by frame "
            "with bounded memory. Prompts come from --prompts PROMPTS.json (any frame, any object; a "
            "prompt for an object already tracked on that frame is a correction), or from --box / "
            "--point for one object (id 1) on frame 0. Writes DIR/<frame:06d>/<obj_id>.png (0/255 at "
            "the source size, all zero when the object is not visible) and DIR/results.jsonl."
        ),
    )
    add_model_args(p)
    p.add_argument("--source", required=True, help="video file, or a folder of frames (sorted by number)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompts", metavar="PROMPTS.json", help="list of {frame, obj_id, box|points|mask}")
    group.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box of object 1 on frame 0")
    group.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                       help="click on object 1 on frame 0 (LABEL 1 = foreground, default; 0 = background); repeatable")
    p.add_argument("--save-masks", required=True, metavar="DIR", help="output directory")
    p.add_argument("--max-objects", type=int, default=None, help="object slots (default: the number of objects prompted)")
    p.add_argument("--max-cond-frames", type=int, default=4, help="conditioning frames kept per object (default 4)")
    p.add_argument("--corrections-as-cond", action=argparse.BooleanOptionalAction, default=True,
                   help="corrections on tracked frames become conditioning frames (default: yes)")
    p.add_argument("--fill-hole-area", type=int, default=8, help="fill mask holes up to this many low-res pixels (0 = off; default 8)")
    p.add_argument("--non-overlap", action="store_true", help="give each pixel to at most one object")
    p.set_defaults(run=run)


def cli_prompts(args: argparse.Namespace):
    """The prompts of this run, keyed by frame."""
    from streamtrack.prompt_file import load_prompts
    from streamtrack.tracker import Prompt

    if args.prompts:
        return load_prompts(args.prompts)
    if args.box:
        x0, y0, x1, y1 = parse_floats(args.box, (4,), "--box")
        return {0: [Prompt(1, box=(x0, y0, x1, y1))]}
    points, labels = [], []
    for text in args.point:
        v = parse_floats(text, (2, 3), "--point")
        points.append((v[0], v[1]))
        labels.append(int(v[2]) if len(v) == 3 else 1)
    return {0: [Prompt(1, points=tuple(points), labels=tuple(labels))]}


def run(args: argparse.Namespace) -> int:
    from streamtrack.checkpoint import load_model, resolve_checkpoint
    from streamtrack.progress import Progress
    from streamtrack.tracker import PromptError, Tracker, TrackerConfig
    from streamtrack.video_file import FrameSource, SourceError

    try:
        prompts = cli_prompts(args)
        source = FrameSource(args.source)
    except (PromptError, SourceError) as e:
        raise UsageError(str(e)) from None
    last_prompt = max(prompts)
    if source.length is not None and last_prompt >= source.length:
        raise UsageError(f"a prompt is on frame {last_prompt}, but {args.source} has {source.length} frames")
    n_objects = len({p.obj_id for ps in prompts.values() for p in ps})
    try:
        config = TrackerConfig(
            max_objects=args.max_objects or n_objects, max_cond_frames=args.max_cond_frames,
            corrections_as_cond=args.corrections_as_cond, fill_hole_area=args.fill_hole_area,
            non_overlap=args.non_overlap, stream_length=source.length,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    apply_threads(args)
    checkpoint = resolve_checkpoint(args.config, args.checkpoint)
    tracker = Tracker(load_model(args.config, checkpoint, args.image_size, args.device), config)

    out = Path(args.save_masks)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out / "results.jsonl", "w") as log, Progress("tracking", source.length) as bar:
        try:
            for frame in source:
                result = tracker.track(frame.rgb)
                for prompt in prompts.get(frame.index, []):
                    try:
                        result = tracker.add_prompt(prompt)
                    except PromptError as e:
                        raise UsageError(f"frame {frame.index}: {e}") from None
                write_frame(out, frame.index, frame.timestamp, result, log)
                n += 1
                bar.update()
        except SourceError as e:
            raise UsageError(f"{e} (after {n} frames; outputs so far are in {out})") from None
    if last_prompt >= n:
        raise UsageError(f"a prompt is on frame {last_prompt}, but {args.source} had only {n} frames")
    print(f"tracked {n_objects} object(s) through {n} frames; masks and results.jsonl in {out}")
    return 0


def write_frame(out: Path, index: int, timestamp: float | None, result, log) -> None:
    """Write one frame's masks and its results.jsonl line."""
    if result.objects:
        folder = out / f"{index:06d}"
        folder.mkdir(exist_ok=True)
        for o in result.objects:
            if not cv2.imwrite(str(folder / f"{o.obj_id}.png"), o.mask.astype(np.uint8) * 255):
                raise UsageError(f"cannot write {folder / f'{o.obj_id}.png'}")
    line = {
        "frame": index,
        "timestamp": timestamp,
        "objects": [
            {"obj_id": o.obj_id, "object_score": round(o.object_score, 5), "visible": o.visible,
             "iou": round(o.iou, 5), "bbox": list(o.bbox) if o.bbox else None, "area": o.area}
            for o in result.objects
        ],
    }
    log.write(json.dumps(line) + "\n")
