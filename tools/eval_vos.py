"""Evaluate the tracker on semi-supervised video object segmentation (DAVIS-style J, F, J&F).

Each object is prompted with its ground-truth mask on the first frame where it appears, then
tracked; every other annotated frame is scored (see ``streamtrack.vos``). Scores are also
pooled by how many frames ago each object was prompted, which shows drift. Clips come from the
held-out synthetic benchmark (default), from synthetic validation clips for choosing settings
(``--split validation``), or from a DAVIS-style folder (``--folder``).

    python tools/eval_vos.py --config nano --clips 8 --json out.json
    python tools/eval_vos.py --config sam2.1_hiera_t --checkpoint sam2.1_hiera_tiny.pt \\
        --folder DAVIS --sequences bear,dog --image-size 512

Exit status: 0 on success, 2 for bad input (config, checkpoint, folder, options).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROG = "eval_vos"


class UsageError(ValueError):
    """Bad command-line input; reported as one message, exit status 2."""


@dataclass
class Clip:
    """One clip to evaluate: frames ``uint8[H, W, 3]`` RGB (possibly read lazily) and the
    ground truth (``streamtrack.vos.GroundTruth``)."""

    name: str
    frames: Iterable[np.ndarray]
    gts: object
    length: int
    categories: list[dict[int, str]] | None = None
    """Synthetic clips: per frame, each object's condition (``procgen.CATEGORIES``)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Semi-supervised VOS evaluation: prompt each object with its ground-truth mask where it "
            "first appears, track, and report DAVIS region similarity J, boundary F-measure F and "
            "J&F per clip and overall (mean over all objects), with per-frame latency; also by frames since "
            "each object's prompt (drift) and, on the synthetic benchmark, by the object's condition."
        ),
    )
    p.add_argument("--config", default="nano",
                   help="model config name from configs/ or a YAML path (default %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint (.pt); default: the shipped weights for --config nano (required otherwise)")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="model input size (default from the config)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's choice)")
    p.add_argument("--folder", metavar="DIR",
                   help="DAVIS-style data: DIR/JPEGImages/<seq>/ + DIR/Annotations/<seq>/, or DIR/frames/ + DIR/masks/ "
                        "(default: the held-out synthetic benchmark)")
    p.add_argument("--sequences", metavar="A,B|FILE",
                   help="with --folder: only these sequences (comma-separated, or a text file with one per line)")
    p.add_argument("--split", choices=("benchmark", "validation"), default="benchmark",
                   help="synthetic clips: the held-out benchmark (seeds 9,000,000+), or validation clips like it "
                        "(seeds 8,000,000+) for choosing settings without looking at the benchmark "
                        "(default %(default)s)")
    p.add_argument("--clips", type=int, default=None, metavar="N", help="evaluate only the first N clips")
    p.add_argument("--frames", type=int, default=None, metavar="N", help="use only the first N frames of each clip")
    p.add_argument("--prompt", choices=("mask", "box", "point"), default="mask",
                   help="how each object is prompted from its first ground-truth mask (default %(default)s)")
    p.add_argument("--json", metavar="OUT", help="write per-clip scores, the summary, latency and run details as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    from streamtrack.checkpoint import CheckpointError
    from streamtrack.config import ConfigError
    from streamtrack.vos import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, ConfigError, CheckpointError, DatasetError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    import torch

    from streamtrack.checkpoint import load_model, resolve_checkpoint
    from streamtrack.config import load_config
    from streamtrack.progress import Progress
    from streamtrack.tracker import Tracker, TrackerConfig
    from streamtrack.vos import (age_groups, count_objects, frames_since_prompt, run_tracker_on_clip, score_by_category,
                                 score_clip, summarize)

    for opt in ("clips", "frames", "threads"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            raise UsageError(f"--{opt} must be at least 1, got {value}")
    if args.sequences and not args.folder:
        raise UsageError("--sequences needs --folder")
    if args.folder and args.split != "benchmark":
        raise UsageError("--split chooses synthetic clips; it does not apply to --folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.image_size)  # fail fast on a bad config or size
    clips, total_frames = open_clips(args)
    args.checkpoint = resolve_checkpoint(args.config, args.checkpoint)
    model = load_model(args.config, args.checkpoint, args.image_size, args.device)

    scores, rows, all_latency = [], [], []
    pooled: dict[str, tuple[float, float, int]] = {}
    pooled_age: dict[str, tuple[float, float, int]] = {}
    with Progress("evaluating", total_frames) as bar:
        for clip in clips:
            n_obj = count_objects(clip.gts)
            if n_obj == 0:
                print(f"{PROG}: note: {clip.name}: no object in the ground truth, skipped", file=sys.stderr)
                continue
            tracker = Tracker(model, TrackerConfig(max_objects=n_obj, stream_length=clip.length))
            preds, latency, prompt_frames = run_tracker_on_clip(
                tracker, clip.frames, clip.gts, args.prompt, on_frame=lambda _i: bar.update())
            score = score_clip(preds, clip.gts, prompt_frames, name=clip.name)
            if clip.categories is not None:
                _pool(pooled, score_by_category(preds, clip.gts, clip.categories, prompt_frames))
            ages = frames_since_prompt(clip.gts, len(preds))
            _pool(pooled_age, score_by_category(preds, clip.gts, ages, prompt_frames))
            scores.append(score)
            all_latency += latency
            rows.append({
                "name": clip.name, "J": score.j, "F": score.f, "J&F": score.jf, "frames_scored": score.frames,
                "frames": len(latency), "objects": {str(k): {"J": score.j_per_object[k], "F": score.f_per_object[k]}
                                                    for k in score.j_per_object},
                "prompt_frames": sorted(prompt_frames),
                "latency_ms_p50": float(np.percentile(latency, 50)) if latency else math.nan,
            })
    if not scores:
        raise UsageError("no clip had an object to track")
    summary = summarize(scores)
    lat = np.asarray(all_latency)
    timing = {
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "latency_ms_mean": float(lat.mean()),
        "frames_per_second": float(len(lat) / (lat.sum() / 1000.0)) if lat.sum() > 0 else math.nan,
        "frames": int(len(lat)),
    }
    by_category = _means(pooled, sorted(pooled))
    by_age = _means(pooled_age, [g for g in age_groups() if g in pooled_age])
    print_report(rows, summary, timing)
    if by_category:
        print("by condition of the object on the frame (J, F averaged over object-frames; absent: an empty mask scores 1):")
        _print_groups(by_category)
    if by_age:
        print("by frames since the object's prompt (J, F averaged over object-frames):")
        _print_groups(by_age)
    if summary["frames"] == 0:
        print(f"{PROG}: note: no annotated frame besides the prompt frames; nothing was scored "
              "(test sets with first-frame annotations only give latency, not accuracy)", file=sys.stderr)
    if args.json:
        report = {
            "config": cfg.name,
            "config_arg": str(args.config),
            "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
            "image_size": int(model.image_size),
            "device": str(args.device),
            "prompt": args.prompt,
            "source": ({"kind": "folder", "path": str(args.folder)} if args.folder
                       else {"kind": "synthetic", "split": args.split}),
            "clips": rows,
            "summary": summary,
            "by_category": by_category,
            "by_frames_since_prompt": by_age,
            **timing,
            "machine": machine_info(),
        }
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        except OSError as e:
            raise UsageError(f"cannot write {out}: {e}") from None
        print(f"wrote {out}")
    return 0


def _pool(into: dict[str, tuple[float, float, int]], sums: dict[str, tuple[float, float, int]]) -> None:
    """Add one clip's :func:`streamtrack.vos.score_by_category` sums into ``into``."""
    for key, (j, f, n) in sums.items():
        pj, pf, pn = into.get(key, (0.0, 0.0, 0))
        into[key] = (pj + j, pf + f, pn + n)


def _means(pooled: dict[str, tuple[float, float, int]], order: list[str]) -> dict[str, dict]:
    """Mean J, F and J&F of each group in ``order``, from pooled sums."""
    out = {}
    for k in order:
        j, f, n = pooled[k]
        out[k] = {"J": j / n, "F": f / n, "J&F": (j + f) / (2 * n), "object_frames": n}
    return out


def _print_groups(groups: dict[str, dict]) -> None:
    for name, v in groups.items():
        print(f"  {name:<11} J {_fmt(v['J'])}  F {_fmt(v['F'])}  J&F {_fmt(v['J&F'])}  "
              f"({v['object_frames']} object-frames)")


def open_clips(args: argparse.Namespace) -> tuple[Iterator[Clip], int | None]:
    """The clips to evaluate (lazily) and their total frame count when known."""
    if args.folder:
        return _folder_clips(args)
    return _synthetic_clips(args)


def _folder_clips(args: argparse.Namespace) -> tuple[Iterator[Clip], int]:
    from streamtrack.vos import load_mask_folder

    names = _sequence_names(args.sequences) if args.sequences else None
    seqs = load_mask_folder(args.folder, names)
    annotated = [s for s in seqs if s.masks]
    if not annotated:
        raise UsageError(f"{args.folder}: none of its {len(seqs)} sequence(s) has an annotation")
    for s in seqs:
        if not s.masks:
            print(f"{PROG}: note: {s.name}: no annotation, skipped", file=sys.stderr)
    annotated = annotated[: args.clips] if args.clips else annotated
    limit = args.frames

    def clips() -> Iterator[Clip]:
        for s in annotated:
            n = len(s.frames) if limit is None else min(limit, len(s.frames))
            gts = {i: m for i, m in s.read_annotations().items() if i < n}
            yield Clip(s.name, (s.read_frame(i) for i in range(n)), gts, n)

    total = sum(len(s.frames) if limit is None else min(limit, len(s.frames)) for s in annotated)
    return clips(), total


def _synthetic_clips(args: argparse.Namespace) -> tuple[Iterator[Clip], int]:
    try:
        from streamtrack import procgen
        benchmark_clips = procgen.benchmark_clips
    except (ImportError, AttributeError) as e:
        raise UsageError(f"the synthetic benchmark is not available ({e}); use --folder") from None
    count = args.clips
    seeds = procgen.VALIDATION_SEEDS if args.split == "validation" else procgen.BENCHMARK_SEEDS
    n_clips = count if count is not None else len(seeds)
    n_frames = args.frames if args.frames is not None else procgen.BENCHMARK_FRAMES
    total = n_clips * n_frames
    try:
        source = benchmark_clips(count, args.frames, seeds)
        first = next(source, None)  # surfaces argument errors before any model work
    except ValueError as e:
        raise UsageError(f"synthetic {args.split} clips: {e}") from None

    def clips() -> Iterator[Clip]:
        item, index = first, 0
        while item is not None:
            name, frames, gts = item
            cats = procgen.frame_categories(procgen.benchmark_scene(index, seeds), gts)
            yield Clip(name, frames, gts, len(frames), cats)
            item, index = next(source, None), index + 1

    return clips(), total


def _sequence_names(text: str) -> list[str]:
    path = Path(text)
    if path.is_file():
        raw = path.read_text().split()
    else:
        raw = text.split(",")
    names = [n.strip() for n in raw if n.strip()]
    if not names:
        raise UsageError(f"--sequences {text!r}: no sequence names")
    return names


def print_report(rows: list[dict], summary: dict, timing: dict) -> None:
    width = max([len("clip")] + [len(r["name"]) for r in rows])
    print(f"{'clip':<{width}}  {'J':>6}  {'F':>6}  {'J&F':>6}  {'scored/frames':>13}  {'ms/frame p50':>12}")
    for r in rows:
        print(f"{r['name']:<{width}}  {_fmt(r['J'])}  {_fmt(r['F'])}  {_fmt(r['J&F'])}  "
              f"{str(r['frames_scored']) + '/' + str(r['frames']):>13}  {r['latency_ms_p50']:>12.1f}")
    print(
        f"mean over {summary['objects']} object(s) in {summary['clips']} clip(s), {summary['frames']} scored frames: "
        f"J {_fmt(summary['J']).strip()}  F {_fmt(summary['F']).strip()}  J&F {_fmt(summary['J&F']).strip()}  |  "
        f"latency p50 {timing['latency_ms_p50']:.1f} ms, p95 {timing['latency_ms_p95']:.1f} ms, "
        f"{timing['frames_per_second']:.1f} frames/s"
    )


def machine_info() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def _fmt(v: float) -> str:
    return f"{'-':>6}" if v is None or math.isnan(v) else f"{v:6.3f}"


def _json_safe(obj):
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


if __name__ == "__main__":
    sys.exit(main())
