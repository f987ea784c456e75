"""How long an RTSP H.264 frame waits inside FFmpeg before `AVSource` hands it over.

A real RTSP server (aio-rtsp-toolkit, in a subprocess on 127.0.0.1) serves a clip whose frame i
shows a bar at x = 2i, so each delivered frame says which frame it is. The server logs when it
sends every RTP packet (CLOCK_MONOTONIC, shared with this process). For each frame read, the
script reports the time from the frame's own last packet, and from the next frame's first
packet, to the moment `AVSource.read` returned it.

    .venv-test/bin/python benchmarks/rtsp_holdback.py --fps 5

Needs the test extras (aio-rtsp-toolkit). The server spreads a frame's packets over the frame's
duration, so "own last packet" understates what a camera that sends each frame in one burst
would see; "next frame's first packet" shows what the delivery waits for.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from video import write_bar_clip  # noqa: E402

from streamtrack.live.sources import AVSource  # noqa: E402

SERVE = """
import asyncio, json, sys, time
import aio_rtsp_toolkit.server as server, aio_rtsp_toolkit.server_rtp as rtp
send = rtp.RtspRtpMixin._send_rtp_packet
log = open(sys.argv[3], "w", buffering=1)
async def logged(self, state, payload, timestamp, marker):
    await send(self, state, payload, timestamp, marker)
    if state.info.media_type == "video":
        log.write(json.dumps([time.monotonic(), timestamp, marker]) + "\\n")
rtp.RtspRtpMixin._send_rtp_packet = logged
asyncio.run(server.serve(sys.argv[1], "127.0.0.1", int(sys.argv[2])))
"""
W, H = 160, 120
RTP_CLOCK = 90_000


def frame_index(rgb: np.ndarray) -> int:
    return int(np.argmax(rgb[H // 2, :, 0])) // 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=int, default=5, help="frame rate of the served clip (default: 5)")
    ap.add_argument("--frames", type=int, default=20, help="frames to time after the first 5 (default: 20)")
    args = ap.parse_args(argv)
    total = min(W // 2, 5 * args.fps + args.frames + 10)  # the open reads ahead; stay within one loop of the clip
    with tempfile.TemporaryDirectory() as tmp:
        root, log = Path(tmp), Path(tmp) / "sent.jsonl"
        write_bar_clip(root / "clip.mp4", args.fps, total, W, H, step=2, bar=2)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(root), str(port), str(log)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the RTSP server did not start (is aio-rtsp-toolkit installed?)")
                    time.sleep(0.05)
            src = AVSource(f"rtsp://127.0.0.1:{port}/clip.mp4", read_timeout=3)
            src.open()
            got = []
            for _ in range(5 + args.frames):
                raw = src.read()
                if raw is None:
                    break
                got.append((time.monotonic(), frame_index(raw.rgb)))
            src.close()
        finally:
            proc.kill()
            proc.wait(5)
        sent = [json.loads(line) for line in log.read_text().splitlines()]
    ts0 = min(ts for _, ts, _ in sent)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for t, ts, _ in sent:
        i = round((ts - ts0) * args.fps / RTP_CLOCK)
        first.setdefault(i, t)
        last[i] = t
    own, nxt = [], []
    for t, i in got[5:]:  # the first frames come out of what the open read ahead
        own.append(1e3 * (t - last[i]))
        if i + 1 in first:
            nxt.append(1e3 * (t - first[i + 1]))
    print(f"{args.fps} frames/s ({1e3 / args.fps:.0f} ms apart), {len(own)} frames:")
    print(f"  delivered after the frame's own last packet: median {np.median(own):.0f} ms "
          f"(min {min(own):.0f}, max {max(own):.0f})")
    if nxt:
        early = sum(x < 0 for x in nxt)
        print(f"  delivered after the next frame's first packet: median {np.median(nxt):.0f} ms "
              f"(min {min(nxt):.0f}, max {max(nxt):.0f}); {early} frame(s) came before it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
