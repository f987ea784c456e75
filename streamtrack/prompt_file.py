"""PROMPTS.json: prompts for an offline run, keyed by frame.

The file is a list of entries, each with ``frame`` and ``obj_id`` and exactly one of

- ``"box": [x0, y0, x1, y1]`` (optionally with ``"points"`` to refine it),
- ``"points": [[x, y, label], ...]`` (label 1 foreground, 0 background),
- ``"mask": "path.png"`` (nonzero = object; relative to the JSON file).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from streamtrack.tracker import Prompt, PromptError

ENTRY_KEYS = {"frame", "obj_id", "box", "points", "mask"}


def load_prompts(path: str | Path) -> dict[int, list[Prompt]]:
    """Parse and validate a prompts file; errors name the file and the entry."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PromptError(f"prompts {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"prompts {path}: not valid JSON ({e})") from None
    if not isinstance(data, list) or not data:
        raise PromptError(f"prompts {path}: expected a non-empty JSON list of prompt entries")
    by_frame: dict[int, list[Prompt]] = {}
    for i, entry in enumerate(data):
        where = f"prompts {path}, entry {i}"
        try:
            frame, prompt = _parse_entry(entry, path.parent)
        except PromptError as e:
            raise PromptError(f"{where}: {e}") from None
        by_frame.setdefault(frame, []).append(prompt)
    return by_frame


def _parse_entry(entry, base: Path) -> tuple[int, Prompt]:
    if not isinstance(entry, dict):
        raise PromptError("expected an object like {\"frame\": 0, \"obj_id\": 1, \"box\": [x0, y0, x1, y1]}")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise PromptError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(ENTRY_KEYS)}")
    for key in ("frame", "obj_id"):
        if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
            raise PromptError(f"'{key}' must be an integer")
    if entry["frame"] < 0:
        raise PromptError("'frame' must be >= 0")
    kwargs: dict = {}
    if "box" in entry:
        box = entry["box"]
        if not isinstance(box, list) or len(box) != 4:
            raise PromptError("'box' must be [x0, y0, x1, y1]")
        kwargs["box"] = tuple(box)
    if "points" in entry:
        pts = entry["points"]
        if not isinstance(pts, list) or not pts or not all(isinstance(p, list) and len(p) in (2, 3) for p in pts):
            raise PromptError("'points' must be a list of [x, y] or [x, y, label]")
        kwargs["points"] = tuple((p[0], p[1]) for p in pts)
        kwargs["labels"] = tuple(p[2] if len(p) == 3 else 1 for p in pts)
    if "mask" in entry:
        if not isinstance(entry["mask"], str):
            raise PromptError("'mask' must be a path to an image")
        mask_path = base / entry["mask"]
        img = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise PromptError(f"mask {mask_path} cannot be read as an image")
        kwargs["mask"] = img > 0
    return entry["frame"], Prompt(entry["obj_id"], **kwargs)
