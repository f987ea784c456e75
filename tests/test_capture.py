"""The capture thread and its frame slot: live sources drop stale frames and never block, files
lose nothing, errors reach the consumer, live sources reconnect, and stop() is prompt."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamtrack.live.capture import Capture, FrameSlot
from streamtrack.live.sources import Source, WebcamSource
from streamtrack.live.synthetic import SyntheticSource
from streamtrack.live.types import CapturedFrame, RawFrame
from streamtrack.video_file import SourceError


def captured(seq: int) -> CapturedFrame:
    return CapturedFrame(seq, "s", RawFrame(np.zeros((2, 2, 3), np.uint8)), time.monotonic_ns(), time.time_ns())


@dataclass
class Script:
    """What a ScriptedSource does: ``frames`` frames, then ``then``."""

    frames: int = 3
    live: bool = True
    then: str = "end"
    """"end" (read gives None), "raise" (``error``), "block" (until close), "hang" (``hang_s``, deaf to close)."""
    error: BaseException | None = None
    open_error: BaseException | None = None
    hang_s: float = 3.0
    frame_s: float = 0.01
    """Time each frame takes to arrive."""


class ScriptedSource(Source):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.live = script.live
        self.read_count = 0
        self.closed = threading.Event()

    def describe(self) -> str:
        return "scripted"

    def open(self) -> None:
        if self.script.open_error is not None:
            raise self.script.open_error

    def read(self) -> RawFrame | None:
        if self.closed.is_set():
            return None
        self.read_count += 1
        if self.read_count <= self.script.frames:
            time.sleep(self.script.frame_s)
            return RawFrame(np.full((4, 4, 3), self.read_count, np.uint8), self.read_count / 10)
        if self.script.then == "raise":
            raise self.script.error
        if self.script.then == "block":
            self.closed.wait()
        elif self.script.then == "hang":
            time.sleep(self.script.hang_s)
            return RawFrame(np.zeros((4, 4, 3), np.uint8))
        return None

    def close(self) -> None:
        self.closed.set()


def drain(capture: Capture, deadline_s: float = 10.0, delay_s: float = 0.0) -> list[CapturedFrame]:
    """Every frame until the capture is done (bounded in time)."""
    frames, end = [], time.monotonic() + deadline_s
    while not capture.finished and time.monotonic() < end:
        f = capture.get(timeout=0.1)
        if f is not None:
            frames.append(f)
            time.sleep(delay_s)
    assert capture.finished, "the capture finished in time"
    return frames


class Statuses(list):
    def __call__(self, state: str, detail: str) -> None:
        self.append((state, detail))


# --- the slot ---------------------------------------------------------------------------------


def test_live_slot_replaces_untaken_frames_counts_them_and_never_blocks():
    slot = FrameSlot(live=True)
    t0 = time.monotonic()
    assert all(slot.put(captured(i)) for i in range(100))
    assert time.monotonic() - t0 < 0.5
    assert slot.get(timeout=0).seq == 99
    assert slot.dropped_stale == 99
    assert slot.get(timeout=0.05) is None and not slot.finished, "no frame yet, but not finished"
    slot.end()
    assert slot.get(timeout=0) is None and slot.finished, "finished"


def test_file_slot_put_waits_until_the_frame_was_taken():
    slot = FrameSlot(live=False)
    slot.put(captured(0))
    second_put = threading.Event()
    threading.Thread(target=lambda: (slot.put(captured(1)), second_put.set()), daemon=True).start()
    assert not second_put.wait(0.2), "put blocks while the previous frame is waiting"
    assert slot.get(timeout=0).seq == 0
    assert second_put.wait(2.0)
    assert slot.get(timeout=0).seq == 1
    assert slot.dropped_stale == 0


def test_file_slot_put_wakes_up_on_close():
    slot = FrameSlot(live=False)
    slot.put(captured(0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(slot.put(captured(1))), daemon=True)
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(1.0)
    assert result == [False]


def test_slot_gives_the_last_frame_then_the_producers_error():
    slot = FrameSlot(live=False)
    slot.put(captured(7))
    slot.end(RuntimeError("decoder exploded"))
    assert slot.get(timeout=0).seq == 7
    with pytest.raises(RuntimeError, match="decoder exploded"):
        slot.get(timeout=0)
    assert slot.finished


# --- the capture thread -----------------------------------------------------------------------


def test_file_capture_delivers_every_frame_in_order_to_a_slow_consumer():
    statuses = Statuses()
    cap = Capture(lambda: SyntheticSource(64, 48, fps=30, live=False, num_frames=30), on_status=statuses).start()
    try:
        t0_wall = time.time_ns()
        frames = drain(cap, delay_s=0.005)
    finally:
        cap.stop()
    assert [f.seq for f in frames] == list(range(30))
    assert [f.frame.source_ts for f in frames] == pytest.approx([i / 30 for i in range(30)])
    assert len({f.session for f in frames}) == 1 and len(frames[0].session) == 32
    assert all(a.t_capture_ns < b.t_capture_ns for a, b in zip(frames, frames[1:]))
    assert t0_wall - 10**9 < frames[0].t_capture_wall_ns < time.time_ns()
    assert all(f.frame.gt_masks for f in frames)
    counters = cap.counters
    assert (counters.captured, counters.dropped_stale, counters.reconnects) == (30, 0, 0)
    assert [s for s, _ in statuses] == ["running"]


def test_live_capture_gives_a_slow_consumer_only_the_newest_frame():
    cap = Capture(lambda: SyntheticSource(64, 48, fps=200, live=True)).start()
    received, ages_ms = [], []
    try:
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            f = cap.get(timeout=1.0)
            ages_ms.append((time.monotonic_ns() - f.t_capture_ns) / 1e6)
            received.append(f)
            time.sleep(0.05)  # a tracker at 20 fps behind a 200 fps source
    finally:
        cap.stop()
    counters = cap.counters
    seqs = [f.seq for f in received]
    assert seqs == sorted(set(seqs)) and seqs[-1] - seqs[0] > 2 * len(seqs), "frames in between were skipped"
    assert counters.dropped_stale > len(received)
    assert counters.captured >= 50, "capture kept its own pace: a slow consumer does not block it"
    assert counters.captured - 1 <= counters.dropped_stale + len(received) <= counters.captured
    assert np.median(ages_ms) < 40, f"frames are fresh, not queued: ages {ages_ms}"


def test_paced_file_plays_at_its_native_rate_like_a_live_source():
    n, fps = 16, 40.0
    cap = Capture(lambda: SyntheticSource(64, 48, fps=fps, live=False, num_frames=n), pace=True).start()
    try:
        frames = drain(cap)
    finally:
        cap.stop()
    span_s = (frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9
    assert span_s >= (n - 1) / fps * 0.9, f"{n} frames at {fps} fps span {(n - 1) / fps} s, not {span_s:.3f}"
    assert frames[-1].frame.source_ts == pytest.approx((n - 1) / fps)

    slow = Capture(lambda: SyntheticSource(64, 48, fps=fps, live=False, num_frames=n), pace=True).start()
    try:
        frames = drain(slow, delay_s=0.1)
    finally:
        slow.stop()
    assert slow.counters.dropped_stale > 0 and len(frames) < n, "a paced file drops frames a slow consumer missed"


@pytest.mark.parametrize("script", [
    Script(frames=2, live=False, then="raise", error=SourceError("clip.mp4: decoding failed")),
    Script(frames=2, live=True, then="raise", error=RuntimeError("a bug in a source")),
], ids=["file-source-error", "live-bug"])
def test_capture_error_reaches_the_consumer(script):
    statuses = Statuses()
    cap = Capture(lambda: ScriptedSource(script), on_status=statuses, backoff=(0.01, 0.01)).start()
    got = []
    try:
        with pytest.raises(type(script.error), match=str(script.error)):
            for _ in range(10):
                got.append(cap.get(timeout=2.0).seq)
    finally:
        cap.stop()
    assert got == [0, 1] or (script.live and got[-1] == 1), "frames first (a live one may be skipped), then the error"
    assert cap.finished and cap.counters.state == "ended"
    assert "reconnecting" not in [s for s, _ in statuses], "failures that are not disconnects are not retried"


def test_first_open_failure_reaches_the_consumer():
    index = next(i for i in range(90, 200) if not Path(f"/dev/video{i}").exists())
    statuses = Statuses()
    cap = Capture(lambda: WebcamSource(index), on_status=statuses).start()
    try:
        with pytest.raises(SourceError, match=f"camera {index} could not be opened"):
            cap.get(timeout=5.0)
    finally:
        cap.stop()
    assert statuses == []


@pytest.mark.parametrize("first", [
    Script(frames=3, then="end"),
    Script(frames=3, then="raise", error=SourceError("rtsp://cam/live: stalled, no data for 5.0 s")),
], ids=["end-of-stream", "stall"])
def test_live_source_reconnects_with_capped_backoff_and_a_new_session(first):
    refused = Script(open_error=SourceError("rtsp://cam/live: cannot be opened (Connection refused)"))
    scripts = iter([first, refused, refused, refused, Script(frames=3, then="block")])
    statuses = Statuses()
    cap = Capture(lambda: ScriptedSource(next(scripts)), backoff=(0.1, 0.25), on_status=statuses).start()
    frames = []
    try:
        t0 = time.monotonic()
        while (not frames or frames[-1].seq < 5) and time.monotonic() - t0 < 10:
            if (f := cap.get(timeout=0.1)) is not None:
                frames.append(f)
        elapsed = time.monotonic() - t0
    finally:
        assert cap.stop()
    counters = cap.counters
    assert (counters.reconnects, counters.captured) == (1, 6)
    seqs = [f.seq for f in frames]
    assert seqs[-1] == 5 and seqs == sorted(set(seqs)), "sequence numbers run on across the reconnect"
    sessions = {f.session for f in frames if f.seq >= 3}
    assert len(sessions) == 1 and sessions != {f.session for f in frames if f.seq < 3}
    assert counters.session in sessions
    states = [s for s, _ in statuses]
    assert states == ["running"] + ["reconnecting"] * 4 + ["running"]
    details = [d for _, d in statuses]
    assert [d.split(":")[0] for d in details[1:5]] == [
        "attempt 1 in 0.1 s", "attempt 2 in 0.2 s", "attempt 3 in 0.25 s", "attempt 4 in 0.25 s"]
    assert ("end of stream" if first.then == "end" else "stalled") in details[1]
    assert all("Connection refused" in d for d in details[2:5])
    assert counters.session in details[5]
    assert elapsed >= 0.1 + 0.2 + 0.25 + 0.25


class DamagedSource(ScriptedSource):
    """A live source that skips one undecodable packet before every second frame it returns."""

    def read(self) -> RawFrame | None:
        raw = super().read()
        if raw is not None and self.read_count % 2 == 0:
            self.damaged_packets += 1
        return raw


def test_damaged_packets_are_counted_across_reconnects():
    sources: list[DamagedSource] = []

    def factory() -> DamagedSource:
        sources.append(DamagedSource(Script(frames=5 if not sources else 4, then="end" if not sources else "block")))
        return sources[-1]

    cap = Capture(factory, backoff=(0.05, 0.05)).start()
    try:
        end = time.monotonic() + 10
        while cap.counters.captured < 9 and time.monotonic() < end:
            cap.get(timeout=0.1)
    finally:
        assert cap.stop()
    counters = cap.counters
    assert (counters.captured, counters.reconnects) == (9, 1)
    assert [s.damaged_packets for s in sources] == [2, 2]
    assert counters.damaged_packets == 4, "the first session's count is kept after the reconnect"


def test_status_and_logs_never_show_credentials(caplog):
    leak = Script(frames=1, then="raise", error=SourceError("lost rtsp://admin:hunter2@cam/live"))
    scripts = iter([leak, Script(frames=1, then="block")])
    statuses = Statuses()
    with caplog.at_level(logging.DEBUG, logger="streamtrack"):
        cap = Capture(lambda: ScriptedSource(next(scripts)), backoff=(0.01, 0.01), on_status=statuses).start()
        try:
            assert [cap.get(timeout=5.0).seq for _ in range(2)] == [0, 1]
        finally:
            cap.stop()
    text = repr(statuses) + caplog.text
    assert "rtsp://***@cam/live" in text and "hunter2" not in text


def test_stop_is_prompt_while_a_read_is_blocked():
    source = ScriptedSource(Script(frames=1, then="block"))
    cap = Capture(lambda: source).start()
    assert cap.get(timeout=2.0).seq == 0
    time.sleep(0.1)  # now blocked inside read()
    t0 = time.monotonic()
    assert cap.stop() is True, "closing the source from the stopping thread unblocked the read"
    assert time.monotonic() - t0 < 2.0
    assert cap.finished and cap.get(timeout=0) is None


def test_stop_returns_within_2s_even_when_the_source_ignores_close():
    source = ScriptedSource(Script(frames=1, then="hang", hang_s=3.0))
    cap = Capture(lambda: source).start()
    assert cap.get(timeout=2.0).seq == 0
    time.sleep(0.1)
    t0 = time.monotonic()
    assert cap.stop(timeout=2.0) is False, "the thread is detached, not joined"
    assert time.monotonic() - t0 < 2.3
    assert cap.finished
    cap._thread.join(5.0)  # the hung read returns after 3 s: its frame must not be delivered
    assert not cap._thread.is_alive()
    assert cap.get(timeout=0) is None and cap.counters.captured == 1
    assert source.closed.is_set()


def test_stop_wakes_a_file_capture_waiting_for_its_consumer():
    cap = Capture(lambda: SyntheticSource(64, 48, live=False)).start()
    time.sleep(0.2)  # the slot is full and the capture thread waits in put()
    t0 = time.monotonic()
    assert cap.stop() is True
    assert time.monotonic() - t0 < 2.0
    assert cap.counters.captured == 2, "one frame waiting in the slot, one waiting to be put"
