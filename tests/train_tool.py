"""Test helper: tools/train_nano.py as a module, and the arguments of a tiny, fast training run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = ["--image-size", "128", "--batch", "2", "--frames", "3", "--warmup", "2", "--lr", "2e-3", "--threads", "1",
        "--no-prefetch"]  # a worker process per run costs seconds; test_nano.py has the one test that runs one


def train_module():
    spec = importlib.util.spec_from_file_location("train_nano", ROOT / "tools" / "train_nano.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
