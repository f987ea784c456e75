"""The live pipeline with real sockets on loopback and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq

from streamtrack.checkpoint import load_model
from streamtrack.client import ControlClient, Subscriber
from streamtrack.live.pipeline import Pipeline, PipelineConfig
from streamtrack.live.sources import Source
from streamtrack.live.synthetic import SyntheticSource
from streamtrack.live.wire import FrameMessage, StatusMessage
from streamtrack.tracker import Prompt, Tracker, TrackerConfig
from streamtrack.video_file import SourceError

RANDOM = "tcp://127.0.0.1:*"


def free_addr() -> str:
    """A loopback address with a port free right now (for subprocesses that must be told one)."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "streamtrack", *args]


def both_finish(client: subprocess.Popen, run: subprocess.Popen) -> tuple[str, str]:
    """Waits for a subscriber process, then for `run`; both must exit 0. Kills whichever is left.
    -> the subscriber's (stdout, stderr)."""
    try:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert run.wait(timeout=60) == 0, run.stderr.read()
    finally:
        for p in (client, run):
            p.kill() if p.poll() is None else None
    return out, err


@pytest.fixture
def small_tracker(small_model_files):
    cfg, ckpt = small_model_files
    return Tracker(load_model(cfg, ckpt), TrackerConfig(max_objects=4))


def synthetic(live: bool = False, num_frames: int | None = None):
    return lambda: SyntheticSource(width=160, height=120, num_objects=3, fps=30.0, seed=1, live=live, num_frames=num_frames)


def gt_prompts() -> dict[int, list[Prompt]]:
    boxes = SyntheticSource(width=160, height=120, num_objects=3, seed=1).first_frame_boxes()
    return {0: [Prompt(i, box=tuple(map(float, b))) for i, b in boxes.items()]}


@pytest.fixture
def pipeline(small_tracker):
    made = []

    def make(source_factory=None, prompts=None, **config) -> Pipeline:
        p = Pipeline(small_tracker, source_factory or synthetic(), PipelineConfig(pub_addr=RANDOM, control_addr=RANDOM,
                                                                                   **config), prompts)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def test_end_to_end_with_a_subscriber_process(small_model_files):
    """`streamtrack run` on the synthetic source, `streamtrack echo --json` in another process."""
    cfg, ckpt = small_model_files
    pub, ctl = free_addr(), free_addr()
    echo = subprocess.Popen(cli("echo", "--connect", pub, "--count", "12", "--json", "--timeout", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = subprocess.Popen(cli("run", "--source", "synthetic:width=200,height=150,live=false", "--config", str(cfg),
                               "--checkpoint", str(ckpt), "--gt-prompts", "--max-frames", "60",
                               "--pub", pub, "--control", ctl), stderr=subprocess.PIPE, text=True)
    out, _ = both_finish(echo, run)
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == 12
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for f in frames:
        assert (f["width"], f["height"]) == (200, 150)
        assert sorted(o["id"] for o in f["objects"]) == [1, 2, 3]
        for o in f["objects"]:
            assert o["mask_area"] == o["area"]  # the mask decoded to the image size with the area the header says
        stamps = [v for v in f["stages_ns"].values() if v]
        # The first frame is tracked before its prompts exist: no memory attention, decoder or memory encoder.
        assert stamps == sorted(stamps) and len(stamps) == (8 if f["frame_index"] > 0 else 5)
        assert f["t_capture_wall_ns"] <= f["t_publish_wall_ns"]


def test_view_writes_every_frame_it_receives_until_the_pipeline_stops(small_model_files, tmp_path):
    """The demo's two commands: `run --send-frames` and `view --out`, each in its own process.
    The viewer leaves when the pipeline says it stopped, and its MP4 holds every frame it drew."""
    import av

    cfg, ckpt = small_model_files
    pub, ctl = free_addr(), free_addr()
    out = tmp_path / "overlay.mp4"
    view = subprocess.Popen(cli("view", "--connect", pub, "--out", str(out), "--timeout", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # the viewer subscribes before the first frame goes out
    run = subprocess.Popen(cli("run", "--source", "synthetic:width=200,height=150,live=false", "--config", str(cfg),
                               "--checkpoint", str(ckpt), "--gt-prompts", "mask", "--send-frames", "--threads", "1",
                               "--max-frames", "30", "--pub", pub, "--control", ctl), stderr=subprocess.PIPE, text=True)
    stdout, stderr = both_finish(view, run)
    assert "the pipeline stopped (tracked max_frames=30 frames)" in stderr
    written = int(stderr.split("wrote ")[1].split(" frames")[0])
    assert 1 <= written <= 30
    receipt = next(line for line in stdout.splitlines() if line.startswith("latency capture -> receipt"))
    assert f"over {written} frames" in receipt
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == written
    assert frames[0].shape == (150, 200, 3)
    assert frames[-1].std() > 10, "drawn over the pipeline's frames, not over black"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_pipeline_cleanly(small_model_files, sig):
    """With a live source and a SIGSTOPped subscriber connected, SIGINT or SIGTERM ends `run`
    within 3 s with exit code 0: every thread finished, no process left, both ports free."""
    cfg, ckpt = small_model_files
    pub, ctl = free_addr(), free_addr()
    run = subprocess.Popen(cli("run", "--source", "synthetic:width=160,height=120", "--config", str(cfg),
                               "--checkpoint", str(ckpt), "--gt-prompts", "--pub", pub, "--control", ctl),
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    frozen = subprocess.Popen([sys.executable, "-c", "import sys, time, zmq\n"
                               "s = zmq.Context().socket(zmq.SUB); s.subscribe(b''); s.connect(sys.argv[1])\n"
                               "print('ready', flush=True); time.sleep(120)\n", pub],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert frozen.stdout.readline().strip() == "ready"
        with Subscriber(pub, topics=("frame", "status")) as sub:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                msg = sub.recv(timeout=1.0)
                if isinstance(msg, FrameMessage):
                    break
            else:
                pytest.fail("no frame from the pipeline")
            os.kill(frozen.pid, signal.SIGSTOP)
            time.sleep(0.5)
            t0 = time.monotonic()
            run.send_signal(sig)
            code = run.wait(timeout=10)
            elapsed = time.monotonic() - t0
            last_status = None
            while (msg := sub.recv(timeout=0.5)) is not None:
                if isinstance(msg, StatusMessage):
                    last_status = msg
    finally:
        if run.poll() is None:
            run.kill()
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        frozen.wait()
    stderr = run.stderr.read()
    assert code == 0, stderr
    assert elapsed < 3.0, f"took {elapsed:.2f} s to stop"
    assert last_status is not None and last_status.state == "stopped"
    assert "Traceback" not in stderr and "threads still running" not in stderr
    assert not processes_in_group(run.pid), "no process of the run's session is left"
    for addr in (pub, ctl):  # both ports were closed: they can be bound again at once
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.bind(addr)
        sock.close(linger=0)


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry))
    return found


def tracked_in(p: Pipeline, seconds: float) -> int:
    start = p.counters.tracked
    time.sleep(seconds)
    return p.counters.tracked - start


def test_slow_and_stopped_subscribers_never_slow_the_tracker(pipeline):
    p = pipeline(synthetic(live=False), gt_prompts())
    p.start()
    assert tracked_in(p, 1.0) > 0  # warm up
    baseline = tracked_in(p, 3.0)

    code = ("import sys, time\nfrom streamtrack.client import Subscriber\n"
            "sub = Subscriber(sys.argv[1], topics=('frame',))\nprint('ready', flush=True)\n"
            "while True:\n    sub.recv(timeout=1.0)\n    time.sleep(float(sys.argv[2]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    slow = subprocess.Popen([sys.executable, "-c", code, p.pub_addr, "0.5"], stdout=subprocess.PIPE, text=True, env=env)
    stopped = subprocess.Popen([sys.executable, "-c", code, p.pub_addr, "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert slow.stdout.readline().strip() == "ready" and stopped.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        os.kill(stopped.pid, signal.SIGSTOP)
        with_subscribers = tracked_in(p, 3.0)
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
        for proc in (slow, stopped):
            proc.kill()
            proc.wait()
    print(f"frames tracked in 3 s: {baseline} alone, {with_subscribers} with a slow and a stopped subscriber")
    assert with_subscribers >= 0.6 * baseline


def test_late_joiner_learns_the_current_objects(pipeline):
    p = pipeline(synthetic(live=True))
    p.start()
    with ControlClient(p.control_addr, timeout=10) as ctl:
        deadline = time.monotonic() + 30
        while ctl.get_state()["seq"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        added = ctl.add_object(5, box=[20, 20, 80, 70])
        assert added["object"]["id"] == 5 and added["applied_to_seq"] >= 0
        ctl.add_object(6, points=[[100, 60, 1]])
        ctl.remove(6)
    with ControlClient(p.control_addr, timeout=10) as late:
        state = late.get_state()
        assert [o["id"] for o in state["objects"]] == [5]
        assert state["image"] == {"width": 160, "height": 120} and state["state"] == "running"
    with Subscriber(p.pub_addr, topics=("status", "frame")) as sub:
        got_status = got_frame = False
        deadline = time.monotonic() + 10
        while not (got_status and got_frame) and time.monotonic() < deadline:
            msg = sub.recv(timeout=0.5)
            if isinstance(msg, StatusMessage):
                assert [o["id"] for o in msg.objects] == [5]
                got_status = True
            elif isinstance(msg, FrameMessage):
                assert [o.id for o in msg.objects] == [5] and msg.masks[5].shape == (120, 160)
                got_frame = True
    assert got_status and got_frame


def test_bad_control_requests_get_errors_and_the_pipeline_keeps_running(pipeline):
    p = pipeline(synthetic(live=True), gt_prompts())
    p.start()
    with ControlClient(p.control_addr, timeout=10) as ctl:
        for bad in ({"v": 1, "cmd": "explode"}, {"v": 2, "cmd": "list"}, {"v": 1, "cmd": "remove", "obj_id": 99},
                    {"v": 1, "cmd": "correct", "obj_id": 42, "box": [1, 2, 3, 4]},
                    {"v": 1, "cmd": "add", "obj_id": 1, "box": [1, 2, 3, 4]}):
            reply = ctl.request(bad)
            assert reply["ok"] is False and reply["error"], bad
        raw = zmq.Context.instance().socket(zmq.REQ)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.RCVTIMEO, 10000)
        raw.connect(p.control_addr)
        for junk in (b"\x00\x01garbage", b"{" * 1000, json.dumps([1, 2, 3]).encode()):
            raw.send(junk)
            assert json.loads(raw.recv())["ok"] is False
        raw.close()
        before = p.counters.tracked
        time.sleep(1.0)
        assert p.counters.tracked > before, "the pipeline stopped tracking"
        assert sorted(o["id"] for o in ctl.list_objects()["objects"]) == [1, 2, 3]
        assert ctl.stats()["counters"]["control_errors"] >= 8


class BrokenSource(Source):
    live, fps = True, None

    def __init__(self) -> None:
        self.n = 0

    def open(self) -> None:
        pass

    def read(self):
        raise RuntimeError("sensor on fire")

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "broken"


def test_an_error_in_the_capture_thread_reaches_the_owner(pipeline):
    p = pipeline(BrokenSource, reconnect=False)
    p.start()
    with pytest.raises(RuntimeError, match="sensor on fire"):
        deadline = time.monotonic() + 10
        while not p.wait(0.1):
            assert time.monotonic() < deadline
    assert p.status()[0] == "stopped"


def test_a_file_source_is_tracked_frame_by_frame_to_the_end(pipeline):
    p = pipeline(synthetic(live=False, num_frames=15), gt_prompts())
    p.run()
    c = p.counters
    assert (c.captured, c.tracked, c.dropped_stale) == (15, 15, 0)
    assert p.status() == ("stopped", "the source ended")


class ThreadRecordingTracker:
    """Wraps a tracker; records the thread of each ``track`` call and can raise on one frame."""

    def __init__(self, tracker: Tracker, fail_on: int | None = None, error: BaseException | None = None) -> None:
        self.inner, self.fail_on, self.error = tracker, fail_on, error
        self.threads: list[int] = []

    def track(self, rgb, times=None):  # noqa: ANN001
        self.threads.append(threading.get_ident())
        if self.fail_on is not None and len(self.threads) > self.fail_on:
            raise self.error
        return self.inner.track(rgb, times)

    def __getattr__(self, name):  # noqa: ANN001, ANN204 - add_prompt, frame_index, object_ids ...
        return getattr(self.inner, name)


def capture_threads() -> set[threading.Thread]:
    """Capture threads alive now (compare with a set taken before: other tests' may linger)."""
    return {t for t in threading.enumerate() if t.name == "streamtrack-capture" and t.is_alive()}


def test_run_tracks_and_publishes_on_the_calling_thread(small_tracker):
    """``run`` binds, calls ``on_ready`` once (addresses set), then tracks every frame on the
    caller's thread; a subscriber started from ``on_ready`` receives them; capture is stopped after."""
    tracker = ThreadRecordingTracker(small_tracker)
    p = Pipeline(tracker, synthetic(live=False, num_frames=12),
                 PipelineConfig(pub_addr=RANDOM, control_addr=RANDOM), gt_prompts())
    ready, received = [], []

    def receive(addr: str) -> None:
        with Subscriber(addr, topics=("frame",)) as sub:
            for _ in range(200):  # bounded: about 20 s at most
                msg = sub.recv(timeout=0.1)
                if isinstance(msg, FrameMessage):
                    received.append(msg.frame_index)
                elif msg is None and p.status()[0] == "stopped":
                    return

    def on_ready() -> None:
        ready.append((len(tracker.threads), p.pub_addr, p.control_addr))
        receiver.start()

    receiver = threading.Thread(target=lambda: receive(p.pub_addr))
    before = capture_threads()
    p.run(on_ready=on_ready)
    receiver.join(timeout=30)
    assert len(ready) == 1 and ready[0][0] == 0 and ready[0][1].startswith("tcp://127.0.0.1:") and ready[0][2]
    assert tracker.threads == [threading.get_ident()] * 12
    assert p.status() == ("stopped", "the source ended") and p.counters.tracked == 12
    assert received and received == sorted(received) and received[-1] == 11
    assert not capture_threads() - before


def test_run_ends_when_asked_from_another_thread(small_tracker):
    p = Pipeline(small_tracker, synthetic(live=True), PipelineConfig(pub_addr=RANDOM, control_addr=RANDOM))

    def ask_once_tracking() -> None:
        for _ in range(300):  # bounded: 30 s
            if p.counters.tracked >= 3:
                break
            time.sleep(0.1)
        p.request_stop()

    asker = threading.Thread(target=ask_once_tracking)
    asker.start()
    before = capture_threads()
    p.run()
    asker.join(timeout=5)
    assert p.counters.tracked >= 3
    assert p.status() == ("stopped", "stopped by request")
    assert not capture_threads() - before


@pytest.mark.parametrize("error, raised", [(ValueError("bad frame"), RuntimeError), (KeyboardInterrupt(), KeyboardInterrupt)])
def test_run_reraises_what_ended_tracking_and_frees_its_ports(small_tracker, error, raised):
    """A tracker error comes back from ``run`` as RuntimeError, Ctrl-C as KeyboardInterrupt;
    either way capture has stopped and both ports can be bound again at once."""
    p = Pipeline(ThreadRecordingTracker(small_tracker, fail_on=2, error=error), synthetic(live=True),
                 PipelineConfig(pub_addr=RANDOM, control_addr=RANDOM))
    before = capture_threads()
    with pytest.raises(raised) as info:
        p.run()
    if raised is RuntimeError:
        assert "bad frame" in str(info.value)
    assert p.counters.tracked == 2
    assert not capture_threads() - before
    for addr in (p.pub_addr, p.control_addr):
        sock = zmq.Context.instance().socket(zmq.PUB)
        try:
            sock.bind(addr)
        finally:
            sock.close(linger=0)


def test_unknown_source_is_a_clear_error():
    from streamtrack.live.sources import open_source

    with pytest.raises(SourceError, match="nowhere"):
        open_source("nowhere/clip.mp4")


def test_run_on_a_file_ends_at_its_end_with_status_0_and_every_frame_tracked(small_model_files, tmp_path):
    from test_sources import write_mp4

    cfg, ckpt = small_model_files
    clip = write_mp4(tmp_path / "clip.mp4", 10)
    done = subprocess.run(cli("run", "--source", str(clip), "--config", str(cfg), "--checkpoint", str(ckpt),
                              "--box", "5,5,40,30", "--pub", free_addr(), "--control", free_addr()),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "the source ended" in done.stderr and "tracked 10," in done.stderr, done.stderr


@pytest.mark.parametrize("kind", [None, "box", "mask"])
def test_gt_prompts_give_true_boxes_by_default_or_true_masks(kind, tmp_path):
    """`run --gt-prompts [box|mask]` prompts each object visible on frame 0 with its true box
    (bare flag, or "box") or its true mask; a source other than the synthetic one is refused."""
    import cv2
    import numpy as np

    from streamtrack.cli import UsageError, build_parser
    from streamtrack.cli.run import initial_prompts

    spec = "synthetic:width=160,height=120,seed=3,live=false"
    argv = ["run", "--source", spec, "--gt-prompts"] + ([kind] if kind else [])
    prompts = initial_prompts(build_parser().parse_args(argv))[0]
    src = SyntheticSource(160, 120, seed=3, live=False)
    if kind == "mask":
        truth = src.first_frame_masks()
        assert {p.obj_id for p in prompts} == truth.keys()
        assert all(p.box is None and np.array_equal(p.mask, truth[p.obj_id]) for p in prompts)
    else:
        assert {p.obj_id: p.box for p in prompts} == src.first_frame_boxes()
        assert all(p.mask is None for p in prompts)
    cv2.imwrite(str(tmp_path / "000.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UsageError, match="synthetic"):
        initial_prompts(build_parser().parse_args(["run", "--source", str(tmp_path), "--gt-prompts", "mask"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--source", spec, "--gt-prompts", "points"])
