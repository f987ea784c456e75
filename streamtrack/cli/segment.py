"""``streamtrack segment``: segment objects in one image from clicks and boxes."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

from streamtrack.cli import UsageError, add_model_args, apply_threads, parse_floats

HELP = "segment objects in one image from points and boxes"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help=HELP,
        description=(
            "Segment objects in one image. Each --box is one object; --point prompts refine the "
            "single box, or, without a box, together describe one object. Writes one PNG per "
            "mask (0/255 at the image's size) and result.json to --out. The default nano model "
            "was trained on synthetic frames only (there, IoU 0.72 from a box and 0.67 from one click, "
            "docs/nano-model.md); use an official checkpoint for real work."
        ),
    )
    add_model_args(p)
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    p.add_argument(
        "--point", action="append", default=[], metavar="X,Y[,LABEL]",
        help="a click in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable",
    )
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="a box in image pixels; one object per box; repeatable")
    p.add_argument("--multimask", action="store_true", help="write three candidate masks per object instead of one")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.set_defaults(run=run)


def parse_prompts(point_args: list[str], box_args: list[str]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """CLI prompt strings -> (points [1, N, 2] | None, labels [1, N] | None, boxes [B, 4] | None)."""
    if not point_args and not box_args:
        raise UsageError("give at least one --point or --box")
    points, labels = [], []
    for text in point_args:
        v = parse_floats(text, (2, 3), "--point")
        label = v[2] if len(v) == 3 else 1.0
        if label not in (0.0, 1.0):
            raise UsageError(f"--point {text!r}: LABEL must be 1 (foreground) or 0 (background)")
        points.append(v[:2])
        labels.append(int(label))
    boxes = []
    for text in box_args:
        x0, y0, x1, y1 = parse_floats(text, (4,), "--box")
        if x1 < x0 or y1 < y0:
            raise UsageError(f"--box {text!r}: expected X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1")
        boxes.append([x0, y0, x1, y1])
    if points and len(boxes) > 1:
        raise UsageError("--point can be combined with at most one --box (points refine that box's object)")
    for v in points + boxes:
        if not all(math.isfinite(c) for c in v):
            raise UsageError("coordinates must be finite numbers")
    return (
        np.array([points], np.float32) if points else None,
        np.array([labels], np.int32) if points else None,
        np.array(boxes, np.float32) if boxes else None,
    )


def read_rgb(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise UsageError(f"--image {path}: no such file")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError(f"--image {path}: cannot be decoded as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> int:
    from streamtrack.checkpoint import load_model, resolve_checkpoint
    from streamtrack.segmenter import ImageSegmenter

    points, labels, boxes = parse_prompts(args.point, args.box)
    image = read_rgb(args.image)
    h, w = image.shape[:2]
    for arr in (points, boxes):
        if arr is not None and (arr[..., 0::2].max() > w or arr[..., 1::2].max() > h or arr.min() < 0):
            print(f"streamtrack segment: warning: a prompt lies outside the {w}x{h} image")
    apply_threads(args)
    checkpoint = resolve_checkpoint(args.config, args.checkpoint)
    model = load_model(args.config, checkpoint, args.image_size, args.device)
    segmenter = ImageSegmenter(model)
    segmenter.set_image(image)
    result = segmenter.predict(points=points, labels=labels, boxes=boxes, multimask=args.multimask)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for obj in range(result.masks.shape[0]):
        prompt: dict = {}
        if boxes is not None:
            prompt["box"] = boxes[obj].tolist()
        if points is not None:
            prompt["points"] = [[*xy, int(lab)] for xy, lab in zip(points[0].tolist(), labels[0])]
        for k in range(result.masks.shape[1]):
            name = f"object{obj}_mask{k}.png"
            if not cv2.imwrite(str(out / name), result.masks[obj, k].astype(np.uint8) * 255):
                raise UsageError(f"cannot write {out / name}")
            records.append({
                "file": name, "object": obj, "candidate": k,
                "predicted_iou": float(result.iou[obj, k]),
                "area": int(result.masks[obj, k].sum()),
                "prompt": prompt,
            })
    summary = {
        "image": str(args.image), "image_hw": [h, w], "config": model.cfg.name,
        "image_size": model.image_size, "checkpoint": str(checkpoint), "masks": records,
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in records:
        print(f"{out / r['file']}: predicted IoU {r['predicted_iou']:.3f}, {r['area']} px")
    return 0
