"""Synthetic test videos and comparison helpers for tracker tests."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from conftest import random_image

H, W = 180, 240


def moving_shapes(n: int, h: int = H, w: int = W, seed: int = 3) -> list[np.ndarray]:
    """``n`` RGB frames: a textured background with a disc, a box and an ellipse moving across it."""
    bg = random_image(h, w, seed=seed)
    frames = []
    for t in range(n):
        f = bg.copy()
        cv2.circle(f, (int(40 + 3 * t) % w, 90), 26, (250, 40, 40), -1)
        cv2.rectangle(f, (150, 30 + t % 60), (200, 80 + t % 60), (40, 250, 40), -1)
        cv2.ellipse(f, (190 - t % 80, 150), (28, 14), 15, 0, 360, (40, 40, 250), -1)
        frames.append(f)
    return frames


def disc_mask(h: int = H, w: int = W) -> np.ndarray:
    """A mask prompt for the disc on frame 0."""
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (40, 90), 26, 1, -1)
    return m.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def write_bar_clip(path: Path, fps: int, frames: int, w: int, h: int, step: int, bar: int, gop: int = 10) -> None:
    """H.264 (no B-frames, a keyframe every ``gop`` frames and only then) of ``frames`` dark
    frames; frame i has a bright bar ``bar`` pixels wide at x = step * i."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "bf": "0"}
        for i in range(frames):
            rgb = np.full((h, w, 3), 40, np.uint8)
            rgb[:, step * i:step * i + bar] = 230
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
