"""A real RTSP server on loopback (aio-rtsp-toolkit, pure Python, in a subprocess) serves a short
H.264 clip in a loop; the capture reads it through PyAV and must survive the server being killed
and restarted, or frozen, by reconnecting with a new session."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamtrack.live.capture import Capture
from streamtrack.live.sources import AVSource
from streamtrack.live.types import CapturedFrame
from video import write_bar_clip

pytest.importorskip("aio_rtsp_toolkit.server", reason="the RTSP test server needs `pip install aio-rtsp-toolkit`")

SERVE = ("import asyncio, sys; import aio_rtsp_toolkit.server as s; "
         "asyncio.run(s.serve(sys.argv[1], '127.0.0.1', int(sys.argv[2])))")
W, H, FPS = 160, 120, 25


def write_clip(path: Path, n: int = 50) -> None:
    """n frames of a bar sweeping across, a keyframe every 10 frames so a new session starts fast."""
    write_bar_clip(path, FPS, n, W, H, step=3, bar=12)


class RtspServer:
    """aio-rtsp-toolkit's file server on 127.0.0.1:port, as a process we can kill, freeze and restart."""

    def __init__(self, root: Path, port: int, log: Path) -> None:
        self.root, self.port, self.log = root, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVE, str(self.root), str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"RTSP server exited:\n{self.log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"RTSP server did not listen within 15 s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@pytest.fixture
def server(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    write_clip(media / "clip.mp4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = RtspServer(media, port, tmp_path / "server.log")
    srv.start()
    yield srv
    srv.kill()


class Recorder:
    """Statuses as (monotonic s, state, detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def __call__(self, state: str, detail: str) -> None:
        self.events.append((time.monotonic(), state, detail))

    @property
    def states(self) -> list[str]:
        return [s for _, s, _ in self.events]


AGES_MS: dict[int, float] = {}
"""seq -> how old each frame was when the consumer took it (ms)."""


def frames_until(cap: Capture, done, limit_s: float, frames: list[CapturedFrame]) -> None:
    """Append captured frames until ``done(frames)`` (bounded in time)."""
    deadline = time.monotonic() + limit_s
    while not done(frames):
        assert time.monotonic() < deadline, f"waited {limit_s} s; got {len(frames)} frames"
        if (f := cap.get(timeout=0.2)) is not None:
            AGES_MS[f.seq] = (time.monotonic_ns() - f.t_capture_ns) / 1e6
            frames.append(f)


def session_frames(frames: list[CapturedFrame], session: str) -> list[CapturedFrame]:
    return [f for f in frames if f.session == session]


def url_of(server: RtspServer) -> str:
    # The server ignores credentials; they are here to prove none leaks into a status message.
    return f"rtsp://viewer:s3cret@127.0.0.1:{server.port}/clip.mp4?play_count=0"


def test_capture_reconnects_after_the_rtsp_server_is_killed_and_restarted(server):
    status = Recorder()
    cap = Capture(lambda: AVSource(url_of(server), open_timeout=5, read_timeout=2),
                  backoff=(0.2, 1.0), on_status=status).start()
    frames: list[CapturedFrame] = []
    try:
        frames_until(cap, lambda fs: len(fs) >= 10, 15, frames)
        first = frames[0].session
        server.kill()  # mid-stream: the clip loops forever
        time.sleep(0.5)  # down long enough for a reconnect attempt to be refused
        server.start()
        t_restarted = time.monotonic()
        frames_until(cap, lambda fs: len(fs) > 10 and len(session_frames(fs, fs[-1].session)) >= 10
                     and fs[-1].session != first, 20, frames)
    finally:
        assert cap.stop()
    second = frames[-1].session
    assert len(session_frames(frames, first)) >= 10 and len(session_frames(frames, second)) >= 10
    back_after = session_frames(frames, second)[0].t_capture_ns / 1e9 - t_restarted
    print(f"first frame {back_after:.2f} s after the restart (backoff cap 1 s + open)")
    assert back_after < 1.0 + 5.0, "within the backoff cap plus the open timeout"
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)), "sequence numbers keep rising across the reconnect"
    assert status.states[0] == "running" and status.states[-1] == "running"
    assert "reconnecting" in status.states[1:-1]
    assert second in status.events[-1][2]
    assert cap.counters.reconnects == 1
    new = session_frames(frames, second)
    assert all(f.frame.rgb.shape == (H, W, 3) for f in new)
    # The session's first frame comes from the packets FFmpeg read while opening, before it could time them.
    assert all(f.frame.source_ts is not None for f in new[1:])
    assert all(a.t_capture_ns < b.t_capture_ns for a, b in zip(new, new[1:]))
    assert "s3cret" not in repr(status.events)
    assert all("rtsp://***@127.0.0.1" in d for _, _, d in status.events if "rtsp" in d)


def test_frozen_rtsp_server_is_a_stall_and_the_capture_reconnects_when_it_thaws(server):
    status = Recorder()
    cap = Capture(lambda: AVSource(url_of(server), open_timeout=3, read_timeout=1),
                  backoff=(0.2, 0.5), on_status=status).start()
    frames: list[CapturedFrame] = []
    try:
        frames_until(cap, lambda fs: len(fs) >= 5, 15, frames)
        first = frames[0].session
        server.signal(signal.SIGSTOP)
        t_frozen = time.monotonic()
        deadline = t_frozen + 6
        while "reconnecting" not in status.states:
            assert time.monotonic() < deadline, "a frozen server is noticed within the read timeout"
            cap.get(timeout=0.1)
        t_noticed = next(t for t, s, _ in status.events if s == "reconnecting")
        while time.monotonic() < t_frozen + 10:  # frozen for 10 s in all
            cap.get(timeout=0.1)
        server.signal(signal.SIGCONT)
        frames_until(cap, lambda fs: len(session_frames(fs, fs[-1].session)) >= 5 and fs[-1].session != first,
                     20, frames)
    finally:
        assert cap.stop()
    reason = next(d for _, s, d in status.events if s == "reconnecting")
    assert "stalled" in reason, reason
    assert 0.8 <= t_noticed - t_frozen < 1.6, "noticed after the 1 s read timeout, not after two"
    assert status.states[-1] == "running" and cap.counters.reconnects >= 1
    after = [AGES_MS[f.seq] for f in session_frames(frames, frames[-1].session)]
    print(f"stall noticed after {t_noticed - t_frozen:.2f} s; frame age after the thaw: max {max(after):.0f} ms")
    assert max(after) < 500, "no burst of stale frames after the thaw"


def test_a_session_starts_with_the_keyframe_it_began_with_not_the_next_one(server):
    """With a keyframe only every 4 s, the first frame must still come right after the open: the
    packets FFmpeg read while analysing the stream hold the session's first keyframe."""
    gop = 4 * FPS
    write_bar_clip(server.root / "long_gop.mp4", FPS, gop + 20, W, H, step=1, bar=1, gop=gop)
    src = AVSource(f"rtsp://127.0.0.1:{server.port}/long_gop.mp4", open_timeout=5, read_timeout=5)
    t0 = time.monotonic()
    try:
        src.open()
        first = src.read()
        took = time.monotonic() - t0
    finally:
        src.close()
    assert first is not None
    print(f"first frame {took:.2f} s after the open began")
    assert int(np.argmax(first.rgb[H // 2, :, 0])) == 0, "the first frame is the session's first, its keyframe"
    assert took < 2.0, "not after the next keyframe, 4 s later"
