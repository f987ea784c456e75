"""Measurements shared by ``streamtrack bench`` and ``benchmarks/``: per-frame and per-stage
tracker latency, each stage's work (GFLOP) and achieved rate against this machine's matmul
ceiling, the live pipeline's capture-to-subscriber latency with drops by cause, and a PNG
plot of it all (drawn with OpenCV, a run-time dependency already).

Steady state: frames after ``warmup`` (by frame 16 the memory ring and every pointer slot
are full, so each later frame costs the same).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from streamtrack.live.sources import Source
from streamtrack.live.types import RawFrame
from streamtrack.timing import StageTimes

STAGES = ("preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder")
WARMUP = 16

_MODULE_STAGE = {"ImageEncoder": "image_encoder", "MemoryAttention": "memory_attention",
                 "PromptEncoder": "decoder", "MaskDecoder": "decoder", "MemoryEncoder": "memory_encoder"}
"""Top-level modules of the model -> the stage that runs them (anything else counts as 'other')."""


@dataclass
class Series:
    """Latency samples in ms, with the summary a user reads."""

    ms: list[float]

    def summary(self) -> dict[str, float]:
        a = np.asarray(self.ms)
        if a.size == 0:
            return {}
        return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
                "p99": float(np.percentile(a, 99)), "max": float(a.max())}


@dataclass
class TrackerTiming:
    frame_ms: list[float]
    """Every frame, warm-up included."""
    stage_ms: dict[str, list[float]]
    warmup: int

    @property
    def steady(self) -> Series:
        return Series(self.frame_ms[self.warmup :])

    def stage_median(self) -> dict[str, float]:
        return {s: float(np.nanmedian(v[self.warmup :])) for s, v in self.stage_ms.items()}


def time_tracker(tracker, frames: list[np.ndarray], prompt, warmup: int = WARMUP,  # noqa: ANN001
                 on_frame: Callable[[int, float], None] | None = None) -> TrackerTiming:
    """Track ``frames`` (uint8[H, W, 3]) with ``prompt`` (a Prompt, or a list) added on frame 0;
    time each frame (prompting excluded) and its stages."""
    prompts = prompt if isinstance(prompt, list) else [prompt]
    frame_ms, stage_ms = [], {s: [] for s in STAGES}
    for i, frame in enumerate(frames):
        times = StageTimes()
        times.mark("capture")
        start = time.perf_counter()
        tracker.track(frame, times)
        frame_ms.append((time.perf_counter() - start) * 1e3)
        if i == 0:
            for p in prompts:
                tracker.add_prompt(p)
        latencies = times.latencies_ms()
        for s in STAGES:
            stage_ms[s].append(latencies.get(s, float("nan")))
        if on_frame is not None:
            on_frame(i, frame_ms[-1])
    return TrackerTiming(frame_ms, stage_ms, warmup)


# --------------------------------------------------------------------------- work and rate


def _attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """Multiply-adds of softmax(Q K^T) V, counted as 2 FLOPs each: ``q: [..., Nq, D]``, ``v: [..., Nk, Dv]``."""
    batch = int(np.prod(q_shape[:-2]))
    n_q, d = q_shape[-2:]
    n_k, dv = v_shape[-2:]
    return 2 * batch * n_q * n_k * (d + dv)


def _attention_ops() -> dict:
    ops = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    try:
        ops[torch.ops.streamtrack.rope_attention] = _attention_flops
    except (AttributeError, RuntimeError):  # the kernel package not imported: nothing runs it
        pass
    return ops


def stage_gflop(tracker, frame: np.ndarray) -> dict[str, float]:  # noqa: ANN001
    """GFLOP of each stage for one tracked frame (matmuls, convolutions and attention)."""
    counter = FlopCounterMode(display=False, depth=1, custom_mapping=_attention_ops())
    with counter:
        tracker.track(frame)
    out = dict.fromkeys(STAGES[1:], 0.0)
    counts = counter.get_flop_counts()
    total = sum(counts.get("Global", {}).values())
    for name, ops in counts.items():
        if name in _MODULE_STAGE:
            out[_MODULE_STAGE[name]] += sum(ops.values()) / 1e9
    out["other"] = max(0.0, total / 1e9 - sum(out.values()))
    return out


def matmul_ceiling_gflops(n: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """The fp32 matmul rate of ``device`` (GFLOP/s, best of ``repeats``; on the CPU with torch's
    current threads)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if a.device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- live pipeline


@dataclass
class PipelineLatency:
    """Capture to subscriber receipt, per received frame, and every way a frame was lost."""

    received_ms: list[float] = field(default_factory=list)
    tracked: int = 0
    captured: int = 0
    dropped_stale: int = 0
    """Captured but replaced by a newer frame before the tracker was free (tracker slower than the source)."""
    dropped_publish: int = 0
    """Not sent: the publisher's queue was full."""
    missed_by_subscriber: int = 0
    """Tracked after the subscriber's first frame but never received: gaps in the tracker's frame
    index (a frame dropped at the publisher is one too). Gaps in ``seq`` would also count stale drops."""

    def report(self) -> dict:
        d = asdict(self)
        d.pop("received_ms")
        d["capture_to_receipt_ms"] = Series(self.received_ms).summary()
        d["received"] = len(self.received_ms)
        return d


class ReplayCamera(Source):
    """A live camera looping over ``frames`` (uint8[H, W, 3]) rendered beforehand, at ``fps``.
    It costs the pipeline a copy per frame, so the latency measured is the pipeline's and the
    tracker's, not a renderer's."""

    live = True

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.fps = fps
        self._frames = frames
        self._closed = threading.Event()
        self._t0, self._count = 0.0, 0

    def open(self) -> None:
        self._t0 = time.monotonic()

    def read(self) -> RawFrame | None:
        due = self._t0 + self._count / self.fps
        if self._closed.wait(max(0.0, due - time.monotonic())):
            return None
        rgb = self._frames[self._count % len(self._frames)].copy()
        self._count += 1
        return RawFrame(rgb, self._count / self.fps)

    def close(self) -> None:
        self._closed.set()

    def describe(self) -> str:
        return f"{len(self._frames)} frames replayed at {self.fps:g} frames/s"


def pipeline_latency(tracker, source_factory, prompts, frames: int, warmup: int = WARMUP,  # noqa: ANN001
                     timeout_s: float = 600.0) -> PipelineLatency:
    """Run the live pipeline (source thread, tracker, ZeroMQ publisher on 127.0.0.1) for ``frames``
    tracked frames, and time each received frame from the tracker's frame ``warmup`` on.

    It tracks on the calling thread, as ``streamtrack run`` does (``Pipeline.run``), while a
    subscriber thread in this process receives; after ``timeout_s`` the subscriber stops it."""
    from streamtrack.client import Subscriber
    from streamtrack.live.pipeline import Pipeline, PipelineConfig
    from streamtrack.live.wire import FrameMessage

    config = PipelineConfig(pub_addr="tcp://127.0.0.1:*", control_addr="tcp://127.0.0.1:*", max_frames=frames,
                            reconnect=False)
    pipeline = Pipeline(tracker, source_factory, config, prompts)
    result = PipelineLatency()
    tracking_done = threading.Event()
    failures: list[BaseException] = []

    def receive() -> None:
        try:
            with Subscriber(pipeline.pub_addr, topics=("frame",)) as sub:
                deadline = time.monotonic() + timeout_s
                last = None
                while time.monotonic() < deadline:
                    msg = sub.recv(timeout=0.5)
                    if isinstance(msg, FrameMessage):
                        if last is not None:
                            result.missed_by_subscriber += max(0, msg.frame_index - last - 1)
                        last = msg.frame_index
                        if msg.frame_index >= warmup:
                            result.received_ms.append((time.time_ns() - msg.t_capture_wall_ns) / 1e6)
                    elif msg is None and tracking_done.is_set():
                        return
        except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
            failures.append(e)
        pipeline.request_stop()  # timed out or failed: end tracking too

    receiver = threading.Thread(target=receive, name="streamtrack-bench-subscriber", daemon=True)
    try:
        pipeline.run(on_ready=receiver.start)
    finally:
        tracking_done.set()
        if receiver.ident is not None:
            receiver.join(timeout=10.0)
    if failures:
        raise failures[0]
    c = pipeline.counters
    result.tracked, result.captured = c.tracked, c.captured
    result.dropped_stale, result.dropped_publish = c.dropped_stale, c.dropped_publish
    return result


# --------------------------------------------------------------------------- plot

_COLOURS = [(200, 90, 30), (40, 40, 200), (40, 150, 40), (150, 40, 150), (30, 150, 200), (90, 90, 90)]


def plot_png(path: str, title: str, series: dict[str, list[float]], bars: dict[str, float], bar_unit: str) -> None:
    """A two-panel PNG: ``series`` (name -> ms per frame) as lines over the frame index, and
    ``bars`` (name -> value in ``bar_unit``) as horizontal bars."""
    w, h, pad = 960, 640, 60
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (pad, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    top, bottom = 50, 360
    values = [v for s in series.values() for v in s if np.isfinite(v)]
    vmax = max(values) * 1.1 if values else 1.0
    n = max((len(s) for s in series.values()), default=1)
    cv2.rectangle(img, (pad, top), (w - pad, bottom), (0, 0, 0), 1)
    for frac in (0.0, 0.5, 1.0):
        y = int(bottom - frac * (bottom - top))
        cv2.putText(img, f"{frac * vmax:.0f} ms", (2, y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, s) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = [(int(pad + i / max(n - 1, 1) * (w - 2 * pad)), int(bottom - v / vmax * (bottom - top)))
               for i, v in enumerate(s) if np.isfinite(v)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (pad + 300 * k, bottom + 40), font, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, "frame (each series from its first sample)", (w // 2 - 150, bottom + 18), font, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    bmax = max(bars.values(), default=1.0) or 1.0
    for k, (name, v) in enumerate(bars.items()):
        y = 420 + 28 * k
        cv2.putText(img, name, (pad, y + 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x1 = int(260 + v / bmax * (w - 2 * pad - 320))
        cv2.rectangle(img, (260, y), (x1, y + 18), _COLOURS[k % len(_COLOURS)], -1)
        cv2.putText(img, f"{v:.1f} {bar_unit}", (x1 + 6, y + 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(path, img):
        raise OSError(f"could not write {path}")
