"""Drawing masks over frames, and writing the result as MP4 (PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)],
    dtype=np.uint8,
)


def color_of(obj_id: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[obj_id % len(PALETTE)])


def draw(
    rgb: np.ndarray, masks: dict[int, np.ndarray], boxes: dict[int, tuple[int, int, int, int] | None], alpha: float = 0.5
) -> np.ndarray:
    """``uint8[H, W, 3]`` frame + bool[H, W] masks by id -> a new frame with tinted masks, boxes and ids."""
    out = rgb.astype(np.float32)
    for obj_id, m in masks.items():
        out[m] = out[m] * (1 - alpha) + np.array(color_of(obj_id), np.float32) * alpha
    out = out.astype(np.uint8)
    for obj_id, box in boxes.items():
        if box is None:
            continue
        x0, y0, x1, y1 = box
        cv2.rectangle(out, (x0, y0), (x1, y1), color_of(obj_id), 2)
        cv2.putText(out, str(obj_id), (x0 + 3, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color_of(obj_id), 1,
                    cv2.LINE_AA)
    return out


class VideoWriter:
    """Frames of one size into an H.264 MP4 (MPEG-4 part 2 if the FFmpeg build lacks H.264).

    The encoder runs on one thread with x264's ``veryfast`` preset: a viewer writes its video
    beside a live tracker, often on the same cores, and x264's defaults (preset ``medium``, a
    thread per core) took about 4 times the CPU time a frame (docs/speed.md, "The viewer")."""

    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self._container = None
        self._stream = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        rgb = rgb[: h - h % 2, : w - w % 2]  # yuv420p needs even sizes
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w")
            try:
                self._stream = self._container.add_stream("libx264", rate=round(self.fps),
                                                          options={"preset": "veryfast"})
            except av.FFmpegError:
                self._stream = self._container.add_stream("mpeg4", rate=round(self.fps))
            self._stream.thread_count = 1
            self._stream.width, self._stream.height = rgb.shape[1], rgb.shape[0]
            self._stream.pix_fmt = "yuv420p"
        if (rgb.shape[1], rgb.shape[0]) != (self._stream.width, self._stream.height):
            rgb = cv2.resize(rgb, (self._stream.width, self._stream.height))
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
