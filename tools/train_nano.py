"""Train the nano model (configs/nano.yaml) on procedural video, on the CPU.

    python tools/train_nano.py --out runs/nano [--steps N | --minutes M] [--seed S] [--threads 2]

Every step's clips, prompts and clicks come from a generator keyed by (seed, step), and weights
start from torch.manual_seed(seed). With --threads 1 a run repeats bit for bit (the tests check it);
with 2, two runs of one command on one machine have parted in the 4th decimal by step 20 and end
with different weights (docs/nano-model.md, "Averaged weights").
Each step's clips are drawn one step ahead in a worker process (streamtrack/training/batches.py).
With --minutes the step count is chosen from the timed warm-up; nano.json records it. Resumes
from OUT/last.pt when it exists. When done it writes OUT/nano.pt (an official-format checkpoint,
{"model": state_dict}; with --average-from, the mean of the weights over the run's last steps) and
OUT/nano.json (command, seed, steps, time, final losses).

With --prompt-stage it trains only the prompt decoder of --init's model, on boxes and clicks over
cached image features (streamtrack/training/prompt_stage.py); the shipped weights end with this
stage. Runs that do not train the prompt decoder save it as a copy of the shared decoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from streamtrack.config import load_config
from streamtrack.model import build_sam2
from streamtrack.progress import Progress
from streamtrack.training import prompt_stage
from streamtrack.training.averaging import TailAverage
from streamtrack.training.batches import Prefetcher, batch_drawer
from streamtrack.training.decoder_stage import decoder_loss, record_frames, trainable
from streamtrack.training.probes import MemoryProbes
from streamtrack.training.unroll import unroll


LOGGED = ("mask", "track", "iou", "score", "embed", "probe_mem", "probe_cond", "image", "correction")
"""Loss parts printed every 10 steps and recorded in nano.json."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="nano", help="model config name or path (default: nano)")
    ap.add_argument("--image-size", type=int, default=None, help="train at this input size (default: the config's)")
    ap.add_argument("--out", type=Path, required=True, help="run directory (resumes from OUT/last.pt)")
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps (default: 3000)")
    ap.add_argument("--batch", type=int, default=4, help="clips per step (default: 4)")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (default: 8)")
    ap.add_argument("--objects", type=int, default=3, help="objects tracked side by side per clip, at most (default: 3)")
    ap.add_argument("--gap-share", type=float, default=0.0,
                    help="share of clips chosen so that a tracked object vanishes on a later frame "
                         "(default: 0; 0.5 was tried, docs/nano-model.md)")
    ap.add_argument("--return-share", type=float, default=0.0, metavar="P",
                    help="share of clips chosen so that a tracked object vanishes and comes back within "
                         "the clip, which random clips almost never show (default: 0; takes precedence "
                         "over --gap-share for a clip drawn for both)")
    ap.add_argument("--prompt-lag", type=int, default=0, metavar="MAX",
                    help="per step, skip 0..MAX frames (uniformly) between the prompted frame 0 and the "
                         "tracked frames, so that the prompt is as stale as deep into a stream (default: 0; 40 was "
                         "tried, docs/nano-model.md)")
    ap.add_argument("--lag-share", type=float, default=1.0, metavar="P",
                    help="share of steps that draw a --prompt-lag; the rest track from the prompt on, so the "
                         "frames just after a prompt stay trained (default: 1, every step; a lag on every "
                         "step cost frames 1-7 much of their accuracy, docs/nano-model.md)")
    ap.add_argument("--mask-share", type=float, default=0.3, metavar="P",
                    help="share of steps whose clips are prompted with the objects' true masks on frame 0; the "
                         "rest are split evenly between boxes and clicks (default: 0.3)")
    ap.add_argument("--true-prompt-memory", action="store_true",
                    help="on steps prompted with boxes or clicks, score frame 0's decode of them but write the "
                         "objects' true masks into memory, as a mask prompt does, so tracking never learns from a "
                         "wrong prompt memory (docs/nano-model.md)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (an earlier stage's nano.pt, or its last.pt, which also "
                         "holds the read-outs' weights) instead of random ones")
    ap.add_argument("--absent-score-weight", type=float, default=1.0,
                    help="weight of the object-score loss on frames where the object is gone (default: 1)")
    ap.add_argument("--image-weight", type=float, default=0.0,
                    help="weight of a memory-free loss that segments every visible object on every frame from "
                         "a box or clicks, training the image path on more prompts (default: 0, off; 1 was tried, "
                         "docs/nano-model.md)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="a stage that trains only the prompt encoder and mask decoder, on the tracked frames' "
                         "memory-conditioned features and on memory-free box and click prompts weighted by "
                         "--image-weight, with the rest of --init's model fixed (streamtrack/training/"
                         "decoder_stage.py); needs --init and an --image-weight above 0")
    ap.add_argument("--freeze-image-encoder", action="store_true",
                    help="keep --init's image encoder (Hiera trunk and neck) fixed and train the rest: no "
                         "backward pass through the encoder, so steps are about 20%% cheaper; a second stage "
                         "with it tracked far worse than one without (docs/nano-model.md)")
    ap.add_argument("--decoder-updates", type=int, default=1, metavar="K",
                    help="with --decoder-only, optimiser updates per unroll: each reuses the unroll's features "
                         "with fresh prompts, as the unroll costs most of a step (default: 1)")
    ap.add_argument("--prompt-stage", action="store_true",
                    help="train only the model's prompt decoder (configs with prompt_decoder: true), on boxes, "
                         "clicks and correction clicks over the fixed image features of --init's model; see "
                         "--prompt-clips, --prompt-batch")
    ap.add_argument("--prompt-clips", type=int, default=600, metavar="N",
                    help="with --prompt-stage: training clips whose features are cached, 2 frames each (default: 600)")
    ap.add_argument("--prompt-batch", type=int, default=32, metavar="N",
                    help="with --prompt-stage: prompted objects per step (default: 32)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it; default: 2)")
    ap.add_argument("--save-every", type=int, default=50, help="steps between resumable checkpoints")
    ap.add_argument("--no-probes", action="store_true",
                    help="train without the memory read-out losses (streamtrack/training/probes.py)")
    ap.add_argument("--no-prefetch", action="store_true",
                    help="draw each step's clips in this process, not one step ahead in a worker process "
                         "(the clips are the same either way)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="fit the run into this much training time: at the end of the warm-up, lower --steps to "
                         "what the measured step time allows, and lower it again at a checkpoint if the steps "
                         "have slowed; nano.json records the steps chosen, and --steps with that number (plus "
                         "--replans, if there were any) replays the run exactly")
    ap.add_argument("--replans", type=_replans, default={}, metavar="STEP:STEPS,...",
                    help="at these steps, set --steps to these totals (how a run that re-planned is replayed; "
                         "nano.json records them)")
    ap.add_argument("--average-from", type=int, default=None, metavar="STEP",
                    help="write nano.pt as the mean of the weights after each step from STEP on (counting from 0), "
                         "instead of the last step's weights; last.pt keeps both (default: the last step's)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop early (resumably) after this wall time; the run is then not finished")
    args = ap.parse_args(argv)
    if args.minutes is not None and (args.minutes < 0 or args.warmup < 1):
        ap.error("--minutes needs a non-negative budget and --warmup of at least 1 (its steps are timed)")
    if not args.absent_score_weight >= 0:
        ap.error(f"--absent-score-weight must be at least 0, got {args.absent_score_weight}")
    if not args.image_weight >= 0:
        ap.error(f"--image-weight must be at least 0, got {args.image_weight}")
    if args.decoder_updates < 1 or (args.decoder_updates > 1 and not args.decoder_only):
        ap.error("--decoder-updates must be at least 1, and above 1 only with --decoder-only")
    if args.freeze_image_encoder and (args.init is None or args.decoder_only):
        ap.error("--freeze-image-encoder needs --init (the encoder to keep) and is implied by --decoder-only")
    if args.decoder_only and (args.init is None or not args.image_weight > 0):
        ap.error("--decoder-only needs --init (the model to fine-tune) and an --image-weight above 0")
    if args.prompt_stage and (args.init is None or args.decoder_only or args.freeze_image_encoder):
        ap.error("--prompt-stage needs --init (the model whose prompt decoder it trains) and cannot be combined "
                 "with --decoder-only or --freeze-image-encoder")
    if args.prompt_clips < 1 or args.prompt_batch < 1:
        ap.error("--prompt-clips and --prompt-batch must be at least 1")
    if args.prompt_lag < 0:
        ap.error(f"--prompt-lag must be at least 0, got {args.prompt_lag}")
    if not 0.0 <= args.lag_share <= 1.0:
        ap.error(f"--lag-share must be between 0 and 1, got {args.lag_share}")
    if not 0.0 <= args.mask_share <= 1.0:
        ap.error(f"--mask-share must be between 0 and 1, got {args.mask_share}")
    if not 0.0 <= args.gap_share <= 1.0:
        ap.error(f"--gap-share must be between 0 and 1, got {args.gap_share}")
    if not 0.0 <= args.return_share <= 1.0:
        ap.error(f"--return-share must be between 0 and 1, got {args.return_share}")
    if args.average_from is not None and args.average_from < 0:
        ap.error(f"--average-from must be at least 0, got {args.average_from}")
    return args


def _replans(text: str) -> dict[int, int]:
    """"350:700,400:690" -> {350: 700, 400: 690}."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        out = {int(a): int(b) for a, b in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEP:STEPS pairs separated by commas, got {text!r}") from None
    if any(total <= at for at, total in out.items()):
        raise argparse.ArgumentTypeError(f"each new total must be above its step, got {text!r}")
    return out


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


CACHE_STREAM = 1
"""--prompt-stage draws its cached clips from the generator keyed (seed, 0, CACHE_STREAM), apart from
every step's (seed, step)."""

BUDGET_MARGIN = 0.95
"""Share of the remaining --minutes planned for steps; the rest absorbs a noisy machine."""


def steps_in_budget(step: int, elapsed: float, step_seconds: float, minutes: float, cap: int) -> int:
    """How many steps in all fit into ``minutes`` of training, ``elapsed`` seconds having gone by at
    ``step`` and steps taking ``step_seconds``; at least ``step`` and at most ``cap``."""
    remaining = BUDGET_MARGIN * (60 * minutes - elapsed)
    more = int(remaining // step_seconds) if remaining > 0 and step_seconds > 0 else 0
    return max(step, min(cap, step + more))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.image_size)
    model = build_sam2(cfg, stability=False).train()
    if args.prompt_stage and model.prompt_decoder is None:
        print(f"train_nano: error: --prompt-stage: config {cfg.name} has no prompt decoder (prompt_decoder: true)",
              file=sys.stderr)
        return 2
    init = None if args.init is None else torch.load(args.init, weights_only=True)
    if init is not None:
        # Weights from before the config had a prompt decoder lack its keys; it starts as a random one.
        missing, unexpected = model.load_state_dict(init["model"], strict=False)
        if unexpected or any(not k.startswith("prompt_decoder.") for k in missing):
            model.load_state_dict(init["model"])  # raises, naming the keys
    if args.prompt_stage:
        model.load_state_dict(prompt_stage.with_shared_prompt_decoder(model.state_dict()))
    probes = None if args.no_probes or args.decoder_only or args.prompt_stage \
        else MemoryProbes(cfg.mem_dim, cfg.hidden_dim).train()
    if probes is not None and init is not None and init.get("probes") is not None:
        probes.load_state_dict(init["probes"])
    if args.freeze_image_encoder:
        model.image_encoder.requires_grad_(False)
    if args.decoder_only:
        params = trainable(model)
    elif args.prompt_stage:
        params = prompt_stage.trainable(model)
    else:
        params = [p for p in model.parameters() if p.requires_grad] + ([] if probes is None else list(probes.parameters()))
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    last = args.out / "last.pt"
    step, elapsed, history = 0, 0.0, []
    step_times: list[float] = []  # seconds per step until the end of the warm-up, for --minutes
    paces: list[float] = []  # seconds per step since the last checkpoint (this invocation), to re-plan
    replans: dict[int, int] = dict(args.replans)  # step -> new --steps total, chosen at a checkpoint or given
    average = TailAverage()  # of the weights after each step from --average-from on
    if last.exists():
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        if probes is not None:
            probes.load_state_dict(state["probes"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        if args.minutes is not None and step >= args.warmup:
            args.steps = int(state["steps"])  # chosen by the budget before the stop
        history = json.loads(state["history"])
        step_times = list(state.get("step_times", []))
        replans = {int(k): int(v) for k, v in json.loads(state.get("replans", "{}")).items()} | replans
        if state.get("average") is not None:
            average.load_state_dict(state["average"])
        print(f"resuming from {last} at step {step}", file=sys.stderr)
    if past := [k for k in replans if k <= step]:
        args.steps = replans[max(past)]  # a replayed run resumed after one of its re-plans
    started = time.monotonic()

    def update(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not args.prompt_stage:  # unclipped, as the runs were that learned to read prompts (docs/nano-model.md)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def save() -> None:
        tmp = last.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "steps": args.steps,
                    "probes": None if probes is None else probes.state_dict(),
                    "elapsed": elapsed + time.monotonic() - started, "history": json.dumps(history),
                    "step_times": step_times, "replans": json.dumps(replans),
                    "average": average.state_dict() if average.count else None}, tmp)
        tmp.replace(last)

    cache = None
    if args.prompt_stage:
        model.eval()  # the fixed image encoder, as it runs when tracking
        with Progress("caching frames", args.prompt_clips) as bar:
            cache = prompt_stage.cache_frames(model, np.random.default_rng((args.seed, 0, CACHE_STREAM)),
                                              args.prompt_clips, on_clip=bar.update)
        model.train()
        print(f"--prompt-stage: {len(cache.embed)} frames, {len(cache.masks)} objects cached", file=sys.stderr)
    draw = batch_drawer(cfg.image_size, args.batch, args.frames, args.objects, gap_share=args.gap_share,
                        prompt_lag=args.prompt_lag, lag_share=args.lag_share, mask_share=args.mask_share,
                        return_share=args.return_share)
    with Prefetcher(draw, args.seed, 0 if args.no_prefetch or args.prompt_stage else 1) as prefetch, \
            Progress("training", args.steps, done=step) as bar:
        while step < args.steps:
            if args.minutes is not None and step == args.warmup:
                # The learning rate so far did not depend on --steps, so choosing it now keeps the run
                # identical to one started with the chosen number.
                timed = step_times[2:] or step_times or [0.0]
                args.steps = bar.total = steps_in_budget(step, elapsed + time.monotonic() - started,
                                                         float(np.median(timed)), args.minutes, args.steps)
                print(f"--minutes {args.minutes}: {np.median(timed):.2f} s/step, running {args.steps} steps",
                      file=sys.stderr, flush=True)
                if step >= args.steps:
                    break
            if step in replans:
                args.steps = bar.total = replans[step]
            tick = time.monotonic()
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, args)
            if args.prompt_stage:
                loss, parts = prompt_stage.prompt_loss(model, cache, np.random.default_rng((args.seed, step)),
                                                       args.prompt_batch)
                update(loss)
            else:
                (images, masks, row_clip, plan), rng = prefetch.get(step)
                if step + 1 < args.steps:
                    prefetch.start(step + 1)
                plan = dataclasses.replace(plan, true_memory=args.true_prompt_memory)
                if args.decoder_only:
                    frames = record_frames(model, images, masks, row_clip, plan, rng)
                    for _ in range(args.decoder_updates):
                        loss, parts = decoder_loss(model, frames, masks, rng, args.absent_score_weight,
                                                   args.image_weight)
                        update(loss)
                else:
                    loss, parts = unroll(model, images, masks, row_clip, plan, rng, probes, args.absent_score_weight,
                                         args.image_weight)
                    update(loss)
            if step < args.warmup:
                step_times.append(time.monotonic() - tick)
            else:
                paces.append(time.monotonic() - tick)
            history.append({"step": step, "loss": loss.item(), **parts})
            if args.average_from is not None and step >= args.average_from:
                average.add(model.state_dict())
            step += 1
            bar.update()
            if step % 10 == 0:
                recent = history[-10:]
                print(f"step {step} loss {np.mean([h['loss'] for h in recent]):.4f} "
                      + " ".join(f"{k} {np.mean([h[k] for h in recent if k in h]):.4f}" for k in LOGGED if any(k in h for h in recent)),
                      file=sys.stderr, flush=True)
            if step % args.save_every == 0 or step == args.steps or step == args.warmup:
                if args.minutes is not None and step > args.warmup and step < args.steps and len(paces) >= 3:
                    # Steps slow down on a shared machine: re-plan the rest at the recent pace, never
                    # raising the total. The learning rate then anneals over the new total.
                    fits = steps_in_budget(step, elapsed + time.monotonic() - started, float(np.median(paces)),
                                           args.minutes, args.steps)
                    if fits < args.steps:
                        replans[step] = args.steps = bar.total = max(fits, step + 1)
                        print(f"--minutes {args.minutes}: {np.median(paces):.2f} s/step lately, now running "
                              f"{args.steps} steps", file=sys.stderr, flush=True)
                    paces.clear()
                save()
            if args.max_minutes is not None and time.monotonic() - started > 60 * args.max_minutes:
                save()
                print(f"stopped after {args.max_minutes} min at step {step}; run again to resume", file=sys.stderr)
                return 3
    total = elapsed + time.monotonic() - started
    model.eval()
    weights = model.state_dict()
    if args.average_from is not None:
        if average.count == 0:
            print(f"--average-from {args.average_from}: the run ended at step {args.steps}, before it; "
                  "nano.pt holds the last step's weights", file=sys.stderr)
        else:
            weights = average.weights(weights)
    if model.prompt_decoder is not None and not args.prompt_stage:
        weights = prompt_stage.with_shared_prompt_decoder(weights)  # untrained here: answer as the shared one
    torch.save({"model": prompt_stage.stored(weights)}, args.out / "nano.pt")
    tail = history[-100:]
    record = {
        "command": "python tools/train_nano.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": cfg.name, "image_size": cfg.image_size, "init": None if args.init is None else str(args.init), "seed": args.seed,
        "steps": args.steps, "batch": args.batch, "frames": args.frames, "objects": args.objects,
        "replans": {str(k): v for k, v in sorted(replans.items())}, "gap_share": args.gap_share, "return_share": args.return_share, "prompt_lag": args.prompt_lag, "lag_share": args.lag_share, "mask_share": args.mask_share, "true_prompt_memory": args.true_prompt_memory, "image_weight": args.image_weight, "decoder_only": args.decoder_only, "freeze_image_encoder": args.freeze_image_encoder, "decoder_updates": args.decoder_updates, "prompt_stage": args.prompt_stage, "prompt_clips": args.prompt_clips if args.prompt_stage else None, "prompt_batch": args.prompt_batch if args.prompt_stage else None, "absent_score_weight": args.absent_score_weight, "budget_minutes": args.minutes, "average_from": args.average_from, "averaged_steps": average.count, "lr": args.lr, "probes": probes is not None, "threads": args.threads, "train_minutes": round(total / 60, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "first_100_steps_loss": round(float(np.mean([h["loss"] for h in history[:100]])), 4),
        "final_100_steps": {k: round(float(np.mean([h[k] for h in tail if k in h])), 4) for k in ("loss",) + LOGGED if any(k in h for h in tail)},
    }
    (args.out / "nano.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
