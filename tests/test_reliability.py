"""Reliability promises of the live pipeline (docs/reliability.md lists them with their figures).

A stub tracker stands in for the model so that these tests measure the pipeline itself: it
returns fixed full-resolution masks at once, and records when each frame reached it. Sources,
sockets, subscriber processes and signals are real; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from streamtrack.client import Subscriber
from streamtrack.live.pipeline import Pipeline, PipelineConfig
from streamtrack.live.sources import Source
from streamtrack.live.synthetic import SyntheticSource
from streamtrack.live.types import RawFrame
from streamtrack.live.wire import FrameMessage
from streamtrack.tracker import FrameResult, ObjectResult
from streamtrack.video_file import SourceError

RANDOM = "tcp://127.0.0.1:*"
FPS = 30.0


class StubTracker:
    """Answers every frame with the same masks of three objects, in well under a frame period.

    ``calls`` holds (time.monotonic(), frame tag) per tracked frame, unless ``record`` is False
    (the soak: the list would grow with it); the tag is the number a :class:`TaggedCamera`
    wrote into the frame's first pixels (-1 for other sources).
    """

    def __init__(self, height: int, width: int, record: bool = True) -> None:
        self.record = record
        self.objects = []
        for k in range(3):
            mask = np.zeros((height, width), np.uint8)
            cv2.ellipse(mask, (width * (k + 1) // 4, height // 2), (width // 10, height // 5), 15.0 * k, 0, 360, 1, -1)
            m = mask.astype(bool)
            ys, xs = np.nonzero(m)
            self.objects.append(ObjectResult(k + 1, m, 5.0, True, 0.9, (int(xs.min()), int(ys.min()), int(xs.max()),
                                                                          int(ys.max())), int(m.sum())))
        self.calls: list[tuple[float, int]] = []
        self.frame_index: int | None = None

    @property
    def object_ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    def track(self, rgb: np.ndarray, times=None) -> FrameResult:  # noqa: ANN001 - StageTimes, unused
        if self.record:
            self.calls.append((time.monotonic(), read_tag(rgb)))
        self.frame_index = 0 if self.frame_index is None else self.frame_index + 1
        return FrameResult(self.frame_index, list(self.objects))

    def add_prompt(self, prompt):  # noqa: ANN001, ANN201
        return FrameResult(self.frame_index or 0, list(self.objects))

    def remove_object(self, obj_id: int) -> None:
        pass

    def reset(self) -> None:
        self.frame_index = None


def write_tag(rgb: np.ndarray, n: int) -> None:
    rgb[0, :4, 0] = np.frombuffer(int(n).to_bytes(4, "little"), np.uint8)


def read_tag(rgb: np.ndarray) -> int:
    if rgb.shape[1] < 4 or rgb[0, 4:8, 1].any() or not rgb[0, 4:8, 2].all():
        return -1
    return int.from_bytes(rgb[0, :4, 0].tobytes(), "little")


class TaggedCamera(Source):
    """A live camera at ``fps`` whose frames carry their number (see :func:`write_tag`).

    ``fail_at``: read() raises (as a camera unplugged) once it has produced that many frames;
    ``block_at``: read() blocks at that frame until close(). ``produced`` collects the numbers
    of frames actually returned, across every instance sharing the list.
    """

    live = True

    def __init__(self, height: int, width: int, produced: list[int], fail_at: int | None = None,
                 block_at: int | None = None, fps: float = FPS) -> None:
        self.fps = fps
        self._rgb = np.full((height, width, 3), 90, np.uint8)
        self._rgb[0, 4:8, 1:] = (0, 255)  # marks a tagged frame
        self._produced, self._fail_at, self._block_at = produced, fail_at, block_at
        self._count = 0
        self._closed = threading.Event()
        self._t0 = 0.0

    def open(self) -> None:
        self._t0 = time.monotonic()

    def read(self) -> RawFrame | None:
        if self._fail_at is not None and self._count >= self._fail_at:
            raise SourceError("fake camera: device unplugged")
        if self._block_at is not None and self._count >= self._block_at:
            self._closed.wait()  # a driver stuck inside its read; only close() frees it
            return None
        due = self._t0 + self._count / self.fps
        if self._closed.wait(max(0.0, due - time.monotonic())):
            return None
        n = len(self._produced)
        rgb = self._rgb.copy()
        write_tag(rgb, n)
        self._produced.append(n)
        self._count += 1
        return RawFrame(rgb, float(n))

    def close(self) -> None:
        self._closed.set()

    def describe(self) -> str:
        return "tagged fake camera"


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process (this one by default), MiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def periods_ms(calls: list[tuple[float, int]], since: float, until: float) -> np.ndarray:
    t = np.array([c[0] for c in calls if since <= c[0] <= until])
    return np.diff(t) * 1e3


SUBSCRIBER = """
import sys, time
from streamtrack.client import Subscriber
sub = Subscriber(sys.argv[1], topics=("frame",))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
got, seqs = 0, []
while time.monotonic() < end and not (sub.missed and len(sys.argv) > 4):
    if (msg := sub.recv(timeout=0.5)) is not None:
        got += 1
        seqs.append(msg.seq)
        time.sleep(float(sys.argv[2]))
print(got, sub.missed, seqs[0] if seqs else -1, seqs[-1] if seqs else -1, flush=True)
"""


def subscriber_process(addr: str, sleep_s: float, run_s: float, until_gap: bool = False) -> subprocess.Popen:
    """A subscriber taking ``sleep_s`` per message for ``run_s`` seconds (or, with ``until_gap``,
    until it first misses a message), then printing: received, missed, first seq, last seq."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    extra = ["until-gap"] if until_gap else []
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, addr, str(sleep_s), str(run_s), *extra],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def running():
    made: list[Pipeline] = []

    def make(tracker, source_factory, **config) -> Pipeline:
        p = Pipeline(tracker, source_factory, PipelineConfig(pub_addr=RANDOM, control_addr=RANDOM, **config))
        made.append(p)
        p.start()
        return p

    yield make
    for p in made:
        p.stop()


# --- 1. a slow or stopped subscriber never blocks the pipeline ---------------------------------


def test_slow_and_stopped_subscribers_leave_the_loop_period_unchanged(running):
    """The period without subscribers is measured before and after the loaded phase, so that the
    machine's own drift between phases (it is shared and noisy) is not read as blocking; a
    loaded phase over the bound is measured once more before the test fails."""
    h, w = 1080, 1920
    tracker = StubTracker(h, w)
    produced: list[int] = []
    p = running(tracker, lambda: TaggedCamera(h, w, produced))
    phase = 6.0

    def window() -> np.ndarray:
        t0 = time.monotonic()
        time.sleep(phase)
        return periods_ms(tracker.calls, t0, time.monotonic())

    def loaded_window() -> tuple[np.ndarray, list[float], float, tuple[int, ...]]:
        # It lags 20 frames a second; once the small socket buffers are full, it misses frames.
        slow = subscriber_process(p.pub_addr, 0.1, phase + 30, until_gap=True)
        stopped = subscriber_process(p.pub_addr, 0.0, phase + 30)
        try:
            os.kill(stopped.pid, signal.SIGSTOP)
            time.sleep(0.5)
            rss_before, rss = rss_mib(), []
            t1 = time.monotonic()
            while time.monotonic() < t1 + phase:
                time.sleep(0.25)
                rss.append(rss_mib())
            loaded = periods_ms(tracker.calls, t1, time.monotonic())
            counts = tuple(map(int, slow.stdout.readline().split()))
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
            for proc in (slow, stopped):
                proc.kill()
                proc.wait()
        return loaded, rss, rss_before, counts

    time.sleep(1.0)  # warm up
    for attempt in (1, 2):
        before = window()
        loaded, rss, rss_before, (got, missed, first_seq, last_seq) = loaded_window()
        time.sleep(0.5)
        after = window()
        p99_alone = max(np.percentile(before, 99), np.percentile(after, 99))
        p99_loaded = np.percentile(loaded, 99)
        print(f"attempt {attempt}: loop period p50/p99 alone {np.median(before):.2f}/{np.percentile(before, 99):.2f} "
              f"then {np.median(after):.2f}/{np.percentile(after, 99):.2f} ms, with a slow and a stopped subscriber "
              f"{np.median(loaded):.2f}/{p99_loaded:.2f} ms; RSS {rss_before:.1f} -> max {max(rss):.1f} MiB; "
              f"slow subscriber got {got}, missed {missed} (seq {first_seq}..{last_seq})")
        if p99_loaded <= p99_alone + 2.0:
            break
    assert abs(np.median(loaded) - 1e3 / FPS) < 2.0, "the loop keeps the camera's rate"
    assert p99_loaded <= p99_alone + 2.0
    assert max(rss) - rss_before < 32, "publisher memory stays flat while subscribers lag"
    assert missed > 0 and got > 0, "the slow subscriber's drops are counted as gaps in seq"


# --- 2. subscribers get fresh data ---------------------------------------------------------------


def test_drain_mode_gives_a_slow_consumer_fresh_masks(running):
    h, w = 480, 640
    p = running(StubTracker(h, w), lambda: TaggedCamera(h, w, []))
    ages = []
    with Subscriber(p.pub_addr, topics=("frame",), drain=True) as sub:
        deadline = time.monotonic() + 30
        while len(ages) < 40 and time.monotonic() < deadline:
            msg = sub.recv(timeout=1.0)
            if isinstance(msg, FrameMessage):
                ages.append((time.time_ns() - msg.t_capture_wall_ns) / 1e6)
                assert len(msg.masks) == 3  # a consumer that decodes, then takes 100 ms over each frame
                time.sleep(0.1)
        skipped = sub.skipped
    period = 1e3 / FPS
    print(f"received mask age p50 {np.median(ages):.1f} ms, max {max(ages):.1f} ms "
          f"(frame period {period:.1f} ms); {skipped} older frames skipped")
    assert len(ages) == 40
    assert np.median(ages) < 2 * period
    assert skipped > 0


# --- 3. memory stays bounded ---------------------------------------------------------------------

SOAK_SECONDS = float(os.environ.get("STREAMTRACK_SOAK_SECONDS", "90"))
FLOOR_WINDOW_S = 10.0
FLOOR_SLOPE_MAX = 0.05
"""MiB/s: the most the RSS floor may rise after warm-up."""
FLOOR_GROWTH_MAX = 8.0
"""MiB: the most the RSS floor may rise from the first third of the soak to the last."""
"""RSS swings by tens of MiB from second to second as the allocator takes and returns large
blocks (a 300 s soak measured 288..328 MiB around a flat floor), so a straight line through the
raw samples reads that noise as a slope. A leak raises the floor: the minimum of each 10 s window."""


def rss_floor(t: np.ndarray, rss: np.ndarray, since: float, window: float = FLOOR_WINDOW_S
              ) -> tuple[np.ndarray, np.ndarray]:
    """(window start, minimum RSS) of each whole ``window`` seconds from ``since`` on."""
    starts = np.arange(since, t[-1] - window + 1e-9, window)
    return starts, np.array([rss[(t >= a) & (t < a + window)].min() for a in starts])


SOAK_SCRIPT = """
import json, os, signal, sys, time
sys.path.insert(0, sys.argv[2])
from test_reliability import FPS, StubTracker, rss_mib, subscriber_process
from streamtrack.live.pipeline import Pipeline, PipelineConfig
from streamtrack.live.synthetic import SyntheticSource
seconds = float(sys.argv[1])
p = Pipeline(StubTracker(480, 640, record=False), lambda: SyntheticSource(640, 480, num_objects=3, fps=FPS, seed=2, live=True,
             num_frames=90), PipelineConfig(pub_addr="tcp://127.0.0.1:*", control_addr="tcp://127.0.0.1:*"))
p.start()
stalled = subscriber_process(p.pub_addr, 0.0, seconds + 5)
slow = subscriber_process(p.pub_addr, 0.2, seconds + 5)
os.kill(stalled.pid, signal.SIGSTOP)
samples, depth = [], 0
t0 = time.monotonic()
while time.monotonic() < t0 + seconds:
    time.sleep(1.0)
    samples.append((time.monotonic() - t0, rss_mib()))
    depth = max(depth, int(p.capture._slot._frame is not None))
os.kill(stalled.pid, signal.SIGCONT)
for proc in (stalled, slow):
    proc.kill()
    proc.wait()
p.stop()
print(json.dumps({"samples": samples, "depth": depth, "tracked": p.counters.tracked,
                  "reconnects": p.counters.reconnects}))
"""


def floor_growth(floor: np.ndarray) -> float:
    """MiB the floor rose from the first third of its windows to the last third: the lowest
    floor of each third, so that the allocator holding a block for one or two windows near the
    end (a fresh-clone CI once read 292.7 -> 307.8 MiB from the last window alone, with the
    slope at 14 KiB/s and RSS back at 300.6 MiB a few seconds later) is not read as growth,
    while a rise that stays for a third of the soak still is."""
    k = max(1, len(floor) // 3)
    return float(floor[-k:].min() - floor[:k].min())


def floor_grows(slope: float, floor: np.ndarray) -> bool:
    """Whether an RSS floor (and its fitted slope) is over either bound."""
    return slope >= FLOOR_SLOPE_MAX or floor_growth(floor) >= FLOOR_GROWTH_MAX


def soak(seconds: float) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Run the soak script for ``seconds``: (report, t, rss, floor window starts, floor, slope)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", SOAK_SCRIPT, str(seconds), here], capture_output=True,
                          text=True, env=env, timeout=seconds + 120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    t, rss = np.array(report["samples"]).T
    starts, floor = rss_floor(t, rss, since=0.25 * seconds)
    slope = np.polyfit(starts, floor, 1)[0]
    print(f"soak {seconds:.0f} s: RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB (range {rss.min():.1f}..{rss.max():.1f}); "
          f"floor of {FLOOR_WINDOW_S:.0f} s windows after warm-up {floor[0]:.1f} -> {floor[-1]:.1f} MiB, "
          f"slope {slope * 1024:.1f} KiB/s; tracked {report['tracked']}, reconnects {report['reconnects']}")
    return report, t, rss, starts, floor, slope


def test_soak_memory_and_queues_stay_bounded():
    """A looping synthetic source, 3 objects, a stalled and a slow consumer, in a process of its
    own (so that RSS is the pipeline's). The long soak:
    ``STREAMTRACK_SOAK_SECONDS=600 pytest tests/test_reliability.py -k soak -s``.

    Over a 90 s soak the floor's slope comes from about six windows, and the floor still rises
    by a few MiB in the first minutes before it levels off (600 s: 21 KiB/s overall), so a slope
    over the bound is measured again on a soak twice as long, as a leak would persist."""
    seconds = SOAK_SECONDS
    report, t, rss, starts, floor, slope = soak(seconds)
    if floor_grows(slope, floor):
        seconds = 2 * SOAK_SECONDS
        report, t, rss, starts, floor, slope = soak(seconds)
    assert report["reconnects"] >= 1, "the source loops: it ends every 3 s and is reopened"
    assert report["tracked"] > 0.8 * FPS * seconds
    assert report["depth"] <= 1
    assert len(floor) >= 5
    assert slope < FLOOR_SLOPE_MAX, f"the RSS floor grows {slope:.3f} MiB/s after warm-up"
    assert floor_growth(floor) < FLOOR_GROWTH_MAX, f"the RSS floor rose {floor_growth(floor):.1f} MiB"
    assert rss[t >= 0.25 * seconds].max() < floor.min() + 96, "peaks stay bounded above the floor"


def test_the_rss_floor_sees_a_leak_through_allocator_noise():
    """The statistic above, on synthetic samples: a flat floor with 40 MiB swings passes, and
    the same swings over a 0.1 MiB/s leak fail. A 10 MiB block held through the last 20 s
    passes; the same block held from a third of the way in to the end fails."""
    rng = np.random.default_rng(0)
    seconds = 2 * SOAK_SECONDS
    t = np.arange(1.0, seconds + 1)
    noise = 290 + 40 * (rng.random(t.size) < 0.4) * rng.random(t.size)
    cases = [(0.1 * t, True), (0.0 * t, False), (10.0 * (t > seconds - 20), False),
             (10.0 * (t > seconds / 3), True)]
    for extra, grows in cases:
        starts, floor = rss_floor(t, noise + extra, since=0.25 * seconds)
        slope = np.polyfit(starts, floor, 1)[0]
        assert floor_grows(slope, floor) == grows


# --- 6. camera failure ---------------------------------------------------------------------------


def published_tags(sub: Subscriber, seconds: float) -> list[int]:
    tags, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        msg = sub.recv(timeout=0.2)
        if isinstance(msg, FrameMessage):
            tags.append(int(msg.source_ts))
    return tags


def test_a_camera_that_fails_is_reopened_and_nothing_uncaptured_is_published(running):
    h, w = 120, 160
    produced: list[int] = []
    tracker = StubTracker(h, w)
    p = running(tracker, lambda: TaggedCamera(h, w, produced, fail_at=20))
    with Subscriber(p.pub_addr, topics=("frame",)) as sub:
        tags = published_tags(sub, 4.0)
    assert p.counters.reconnects >= 2, "a camera failing every 20 frames is reopened each time"
    assert tags and set(tags) <= set(produced), "every published frame is one the camera produced"
    assert all(tag >= 0 for _, tag in tracker.calls)
    assert tags == sorted(tags) and len(set(tags)) == len(tags)
    t0 = time.monotonic()
    p.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_a_camera_blocked_inside_read_does_not_hold_up_stop(running):
    h, w = 120, 160
    produced: list[int] = []
    p = running(StubTracker(h, w), lambda: TaggedCamera(h, w, produced, block_at=10))
    with Subscriber(p.pub_addr, topics=("frame",)) as sub:
        tags = published_tags(sub, 1.5)
    assert set(tags) <= set(range(10)) and len(produced) == 10
    t0 = time.monotonic()
    p.stop(timeout=1.0)
    stopped_in = time.monotonic() - t0
    print(f"stop with the camera blocked in read: {stopped_in * 1e3:.0f} ms")
    assert stopped_in < 1.0
