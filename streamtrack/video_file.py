"""Reading frames from a video file (PyAV) or a folder of images, with timestamps."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(ValueError):
    """A video source cannot be opened or decoded."""


@dataclass
class Frame:
    index: int
    """0-based position in the source."""
    rgb: np.ndarray
    """uint8[H, W, 3]."""
    timestamp: float | None
    """Presentation time in seconds (video files), or None (image folders)."""


class FrameSource:
    """Frames of a video file or an image folder, in order. ``len()`` is the frame count when known."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SourceError(f"source {self.path}: no such file or directory")
        if self.path.is_dir():
            self._images = _sorted_images(self.path)
            if not self._images:
                raise SourceError(f"source {self.path}: the folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self.length: int | None = len(self._images)
        else:
            self._images = None
            try:
                with av.open(str(self.path)) as container:
                    if not container.streams.video:
                        raise SourceError(f"source {self.path}: has no video stream")
                    self.length = container.streams.video[0].frames or None
            except av.FFmpegError as e:
                raise SourceError(f"source {self.path}: cannot be opened as a video ({e})") from None

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("frame count unknown")
        return self.length

    def __iter__(self) -> Iterator[Frame]:
        if self._images is not None:
            yield from self._iter_images()
        else:
            yield from self._iter_video()

    def _iter_images(self) -> Iterator[Frame]:
        size = None
        for i, p in enumerate(self._images):
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError(f"source {p}: cannot be decoded as an image")
            if size is not None and bgr.shape[:2] != size:
                raise SourceError(f"source {p}: size {bgr.shape[1]}x{bgr.shape[0]} differs from the first frame's")
            size = bgr.shape[:2]
            yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None)

    def _iter_video(self) -> Iterator[Frame]:
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, vf in enumerate(container.decode(stream)):
                    yield Frame(i, vf.to_ndarray(format="rgb24"), None if vf.time is None else float(vf.time))
        except av.FFmpegError as e:
            raise SourceError(f"source {self.path}: decoding failed ({e})") from None


def _sorted_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if files and all(re.fullmatch(r"\d+", p.stem) for p in files):
        return sorted(files, key=lambda p: int(p.stem))
    return sorted(files)
