"""Calibrate when a trained model calls an object gone: shift its object-score logit.

The tracker calls an object visible on a frame when the decoder's object-score logit is above 0;
below, the mask is emptied, the object pointer becomes the learned no-object pointer and the
memory is marked "no object". A model trained briefly can be badly calibrated there: too quick or
too slow to say "gone". This tool lowers the logit by an offset, baked into the bias of the score
head's last layer, so the same tracker and checkpoint format carry it. It tries each offset on the
synthetic validation clips (``eval_vos --split validation``; never the benchmark), keeps the one
with the best J&F (ties go to the smallest shift) and writes that checkpoint.

    python tools/calibrate_score.py --checkpoint runs/nano6/nano.pt --out runs/nano6/calibrated.pt \\
        --offsets 0,0.5,1,1.5,2 --clips 30 --threads 2 --json runs/nano6/calibration.json

Exit status: 0 on success, 2 for bad input (checkpoint, offsets, options).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

import eval_vos
from streamtrack.checkpoint import CheckpointError, read_state_dict

PROG = "calibrate_score"
SCORE_HEAD = "sam_mask_decoder.pred_obj_score_head"
"""Prefix of the object-score head's parameters in an official-format checkpoint."""


class UsageError(ValueError):
    """Bad command-line input; reported as one message, exit status 2."""


def score_bias_key(state: dict[str, torch.Tensor]) -> str:
    """Name of the bias of the score head's last layer: a linear head, or the last layer of its MLP."""
    if f"{SCORE_HEAD}.bias" in state:
        return f"{SCORE_HEAD}.bias"
    layers = [k for k in state if k.startswith(f"{SCORE_HEAD}.layers.") and k.endswith(".bias")]
    if not layers:
        raise UsageError(f"the checkpoint has no object-score head ({SCORE_HEAD}.*)")
    return max(layers, key=lambda k: int(k.split(".")[-2]))


def shift_object_score(state: dict[str, torch.Tensor], offset: float) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose object-score logit is ``offset`` lower on every input."""
    key = score_bias_key(state)
    out = dict(state)
    out[key] = state[key] - offset
    return out


def parse_offsets(text: str) -> list[float]:
    try:
        offsets = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--offsets {text!r}: expected numbers separated by commas") from None
    if not offsets or any(o != o or abs(o) == float("inf") for o in offsets):
        raise UsageError(f"--offsets {text!r}: expected finite numbers separated by commas")
    return offsets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Lower a checkpoint's object-score logit by the offset that gives the best J&F on the "
                    "synthetic validation clips, and write the result as a new checkpoint.")
    p.add_argument("--checkpoint", required=True, help="official-format checkpoint to calibrate (.pt)")
    p.add_argument("--out", required=True, help="where to write the calibrated checkpoint (.pt)")
    p.add_argument("--config", default="nano", help="model config (default %(default)s)")
    p.add_argument("--offsets", default="0,0.5,1,1.5,2,2.5",
                   help="offsets to try, comma-separated; 0 keeps the model as it is (default %(default)s)")
    p.add_argument("--clips", type=int, default=30, metavar="N", help="validation clips to score (default %(default)s)")
    p.add_argument("--frames", type=int, default=None, metavar="N", help="use only the first N frames of each clip")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--json", metavar="OUT", help="also write the record (offsets tried, their J&F, the choice)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str]) -> int:
    offsets = parse_offsets(args.offsets)
    try:
        state = read_state_dict(args.checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    score_bias_key(state)  # fails before any evaluation when there is no score head
    scores: dict[float, dict] = {}
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        for offset in offsets:
            ckpt, report = Path(tmp) / "shifted.pt", Path(tmp) / "report.json"
            torch.save({"model": shift_object_score(state, offset)}, ckpt)
            eval_args = ["--config", args.config, "--checkpoint", str(ckpt), "--split", "validation",
                         "--clips", str(args.clips), "--json", str(report)]
            eval_args += [] if args.frames is None else ["--frames", str(args.frames)]
            eval_args += [] if args.threads is None else ["--threads", str(args.threads)]
            print(f"{PROG}: offset {offset:g}", file=sys.stderr, flush=True)
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                status = eval_vos.main(eval_args)
            if status != 0:
                raise UsageError(f"evaluating offset {offset:g} failed (eval_vos exit status {status})")
            result = json.loads(report.read_text())
            scores[offset] = {"J&F": result["summary"]["J&F"],
                              "by_category": {k: v["J&F"] for k, v in result["by_category"].items()}}
            print(f"{PROG}: offset {offset:g}: validation J&F {scores[offset]['J&F']:.4f}", file=sys.stderr)
    best = max(offsets, key=lambda o: (round(scores[o]["J&F"], 6), -abs(o)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": shift_object_score(state, best)}, out)
    record = {
        "command": "python tools/calibrate_score.py " + " ".join(argv),
        "checkpoint": str(args.checkpoint), "config": args.config, "split": "validation", "clips": args.clips,
        "frames": args.frames, "threads": args.threads, "offset": best,
        "validation": {f"{o:g}": s for o, s in scores.items()},
    }
    text = json.dumps(record, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
