"""``streamtrack make-checkpoint``: write a seeded random-weight checkpoint in the official format.

Of the pretrained models, only nano ships with streamtrack. This lets the pipeline run an
official architecture (demos, smoke tests, timing) before a real checkpoint is downloaded; its
masks are meaningless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a random-weight checkpoint in the official format (for trying the pipeline; masks are meaningless)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-checkpoint", help=HELP, description=HELP)
    p.add_argument("--config", required=True, help="model config name from configs/ or a YAML path")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from streamtrack.config import load_config
    from streamtrack.model import build_sam2

    torch.manual_seed(args.seed)
    model = build_sam2(load_config(args.config))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, random weights, config {model.cfg.name})")
    return 0
