"""``streamtrack view``: subscribe, draw the masks, show them or write an MP4, report latency."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np

HELP = "watch a running pipeline: overlay window, or an MP4 of the overlays, plus latency percentiles"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help=HELP,
        description=(
            "Subscribe to a pipeline and draw every object's mask over the frame. Shows a window when "
            "a display exists and OpenCV has GUI support (opencv-python; the default "
            "opencv-python-headless has none); otherwise writes --out. Frames are drawn over the "
            "pipeline's images when it runs with --send-frames, else over black. On exit prints the "
            "capture-to-receipt latency percentiles (same host: both ends read the same wall clock). "
            "Exits when the pipeline stops, after --count frames, or on Ctrl-C."
        ),
    )
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="PUB address (default %(default)s)")
    p.add_argument("--out", default="overlay.mp4", help="MP4 to write when no window can open (default %(default)s)")
    p.add_argument("--count", type=int, default=None, help="exit after this many frames")
    p.add_argument("--timeout", type=float, default=None, help="exit when nothing arrives for this many seconds")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the written MP4 (default 10)")
    p.set_defaults(run=run)


def can_show_window() -> bool:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    import cv2

    try:
        cv2.namedWindow("streamtrack")
        return True
    except cv2.error:
        return False


def percentiles(values_ms: list[float]) -> str:
    if not values_ms:
        return "no frames received"
    v = np.array(values_ms)
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {v.max():.1f} ms over {len(v)} frames"


def run(args: argparse.Namespace) -> int:
    from streamtrack.client import Subscriber
    from streamtrack.live.wire import FrameMessage
    from streamtrack.overlay import VideoWriter, draw

    window = can_show_window()
    writer = None if window else VideoWriter(args.out, args.fps)
    latencies: list[float] = []
    pipeline_ms: list[float] = []
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    last = time.monotonic()
    with Subscriber(args.connect, topics=("frame", "status")) as sub:
        while not stop and (args.count is None or len(latencies) < args.count):
            msg = sub.recv(timeout=0.2)
            if msg is None:
                if args.timeout is not None and time.monotonic() - last > args.timeout:
                    print(f"streamtrack view: nothing for {args.timeout} s; stopping", file=sys.stderr)
                    break
                continue
            if not isinstance(msg, FrameMessage):
                if msg.state == "stopped":
                    print(f"streamtrack view: the pipeline stopped ({msg.reason})", file=sys.stderr)
                    break
                continue
            last = time.monotonic()
            latencies.append((time.time_ns() - msg.t_capture_wall_ns) / 1e6)
            if msg.header.get("pipeline_ms") is not None:
                pipeline_ms.append(msg.header["pipeline_ms"])
            frame = msg.image()
            if frame is None:
                frame = np.zeros((msg.height, msg.width, 3), np.uint8)
            overlay = draw(frame, msg.masks, {o.id: o.bbox for o in msg.objects})
            if window:
                import cv2

                cv2.imshow("streamtrack", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) in (27, ord("q")):
                    break
            else:
                writer.write(overlay)
        missed = sub.missed
    if writer is not None:
        writer.close()
        if writer.frames:
            print(f"streamtrack view: wrote {writer.frames} frames to {args.out}", file=sys.stderr)
    print(f"latency capture -> receipt: {percentiles(latencies)}")
    print(f"latency capture -> publish: {percentiles(pipeline_ms)}")
    print(f"sequence numbers skipped (stale frames the tracker never took, or lost on the way): {missed}")
    return 0
