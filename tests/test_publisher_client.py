"""Publisher, Subscriber, ControlClient and `echo` over real loopback sockets.

Every socket is bound to a random 127.0.0.1 port and closed by its fixture; every test
runs under a deadline so that a hang fails fast.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from streamtrack.cli import echo
from streamtrack.client import ControlClient, ControlError, ControlTimeout, Subscriber
from streamtrack.live import rle
from streamtrack.live.control import ControlServer
from streamtrack.live.publisher import BindError, CurveServer, Publisher, is_loopback
from streamtrack.live.types import Counters, StageTimes
from test_wire import captured_frame, frame_result, sample_masks

ANY_PORT = "tcp://127.0.0.1:*"
REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 60


@pytest.fixture(autouse=True)
def deadline():
    """Fail a test that runs longer than DEADLINE_S (SIGALRM interrupts blocking ZeroMQ calls)."""
    def expire(signum, frame):
        raise TimeoutError(f"test exceeded {DEADLINE_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def closing():
    """Register publishers, subscribers, clients and raw sockets to close after the test."""
    things = []
    yield things.append
    for thing in reversed(things):
        if isinstance(thing, zmq.Socket):
            thing.close(linger=0)
        else:
            thing.close()


def raw_sub(addr: str, rcvhwm: int = 1, topics=(b"frame", b"status")) -> zmq.Socket:
    """A SUB socket with tiny buffers, for subscribers that never read."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    sock.rcvbuf = 4096
    for t in topics:
        sock.subscribe(t)
    sock.connect(addr)
    return sock


def await_subscription(pub: Publisher, recv, timeout: float = 10.0) -> None:
    """Send status until ``recv(timeout)`` gets one (a SUB only hears messages sent after it
    joined), then discard the extra status messages that were in flight."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pub.send_status("starting", "sync")
        if recv(0.05) is not None:
            while recv(0.1) is not None:
                pass
            return
    raise AssertionError("the subscriber never joined")


def sub_recv(sub: Subscriber):
    return lambda timeout: sub.recv(timeout)


def raw_recv(sock: zmq.Socket):
    return lambda timeout: sock.recv_multipart() if sock.poll(int(timeout * 1000)) else None


def publish(pub: Publisher, seq: int, masks: dict[int, np.ndarray] | None = None, height: int = 48, width: int = 64) -> tuple[bool, float]:
    """Publish one frame; returns (sent, seconds the call took)."""
    masks = sample_masks(height, width) if masks is None else masks
    captured, result = captured_frame(seq, height, width), frame_result(masks, seq)
    times = StageTimes(capture=time.monotonic_ns())
    t0 = time.perf_counter()
    ok = pub.publish(captured, result, times)
    return ok, time.perf_counter() - t0


# ------------------------------------------------------------------- publisher + subscriber


def test_frames_round_trip_to_a_subscriber_and_gaps_are_counted(closing):
    pub = Publisher(ANY_PORT, stream_id="cam0")
    closing(pub)
    sub = Subscriber(pub.addr, rcvhwm=100)
    closing(sub)
    await_subscription(pub, sub_recv(sub))
    before = time.monotonic_ns()
    for seq in (10, 11, 15):
        assert publish(pub, seq)[0]
    received = [sub.recv(2.0) for _ in range(3)]
    assert [m.seq for m in received] == [10, 11, 15] and sub.missed == 3
    msg = received[0]
    assert msg.stream == "cam0" and (msg.width, msg.height) == (64, 48)
    assert before <= msg.stages_ns["publish"] <= time.monotonic_ns()
    for obj_id, mask in sample_masks().items():
        np.testing.assert_array_equal(msg.masks[obj_id], mask)
    assert pub.last_seq == 15 and pub.sent == 3 and pub.dropped == 0


def test_subscriber_that_never_reads_neither_blocks_publisher_nor_starves_others(closing):
    """A stuck subscriber's copies are dropped at its own queue; the tracker and others go on."""
    pub = Publisher(ANY_PORT, mask_encoding="bits", sndhwm=4)
    closing(pub)
    stuck = raw_sub(pub.addr)
    closing(stuck)
    fast = Subscriber(pub.addr, topics=("frame",), rcvhwm=1000)
    closing(fast)
    await_subscription(pub, raw_recv(stuck))
    masks = {1: np.ones((720, 1280), bool)}  # 115 KB per message: the stuck peer's buffers fill fast
    n, durations, seen = 150, [], []
    for seq in range(n):
        ok, took = publish(pub, seq, masks, 720, 1280)
        assert ok
        durations.append(took)
        msg = fast.recv(5.0)
        seen.append(msg.seq)
    stuck_got = 0
    while stuck.poll(200):
        stuck_got += stuck.recv_multipart()[0] == b"frame"
    assert seen == list(range(n)), "the fast subscriber must get every frame"
    assert stuck_got < n // 2, f"the stuck subscriber's queue should have overflowed, it got {stuck_got}/{n}"
    assert max(durations) < 0.25 and sum(durations) < 2.0, (max(durations), sum(durations))


def test_lockstep_publisher_counts_drops_when_a_subscriber_stops_reading(closing):
    pub = Publisher(ANY_PORT, mask_encoding="bits", sndhwm=2, lockstep=True)
    closing(pub)
    stuck = raw_sub(pub.addr)
    closing(stuck)
    await_subscription(pub, raw_recv(stuck))
    masks = {1: np.ones((720, 1280), bool)}
    results = [publish(pub, seq, masks, 720, 1280) for seq in range(150)]
    sent = [ok for ok, _ in results]
    assert not all(sent) and pub.dropped == sent.count(False) and pub.sent + pub.dropped == 150
    assert max(took for _, took in results) < 0.25


def test_drain_returns_only_the_newest_frame_and_keeps_status(closing):
    pub = Publisher(ANY_PORT, sndhwm=100)
    closing(pub)
    sub = Subscriber(pub.addr, drain=True, rcvhwm=100)
    closing(sub)
    await_subscription(pub, sub_recv(sub))
    for seq in range(10):
        publish(pub, seq)
    pub.send_status("running", "", Counters(published=10))
    time.sleep(0.5)  # let everything reach the subscriber's queue: it is a slow consumer
    first, second = sub.recv(2.0), sub.recv(2.0)
    assert first.kind == "frame" and first.seq == 9
    assert second.kind == "status" and second.counters.published == 10
    assert sub.recv(0.1) is None
    assert sub.skipped == 9 and sub.missed == 0


def test_status_ticks_once_a_second_and_at_once_on_a_state_change(closing):
    pub = Publisher(ANY_PORT, stream_id="cam0")
    closing(pub)
    sub = Subscriber(pub.addr, topics=("status",), rcvhwm=100)
    closing(sub)
    await_subscription(pub, sub_recv(sub))
    start = time.monotonic()
    ticks = []
    while time.monotonic() - start < 2.5:
        now = time.monotonic()
        if pub.tick("running", "", Counters(captured=len(ticks)), [{"id": 1}]):
            ticks.append(now)
        time.sleep(0.01)
    gaps = np.diff(ticks)
    assert len(ticks) == 3 and np.all((gaps > 0.99) & (gaps < 1.2)), gaps
    assert pub.tick("stalled", "no frame for 2 s")
    assert not pub.tick("stalled", "no frame for 2 s")
    states = [sub.recv(2.0) for _ in range(4)]
    assert [(s.state, s.counters.captured) for s in states] == [("running", 0), ("running", 1), ("running", 2), ("stalled", 0)]
    assert states[-1].reason == "no frame for 2 s" and states[0].objects == [{"id": 1}]


def test_final_status_sent_just_before_close_is_delivered(closing):
    pub = Publisher(ANY_PORT, stream_id="cam0")
    sub = Subscriber(pub.addr, topics=("status",))
    closing(sub)
    try:
        await_subscription(pub, sub_recv(sub))
        pub.send_status("stopped", "source ended")
    finally:
        pub.close()
    msg = sub.recv(2.0)
    assert msg is not None and (msg.state, msg.reason) == ("stopped", "source ended")


@pytest.mark.parametrize("addr, loopback", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.0.0.2:*", True), ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True), ("ipc:///tmp/streamtrack.sock", True), ("inproc://x", True),
    ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False), ("tcp://192.168.1.5:5555", False),
    ("tcp://eth0:5555", False), ("tcp://example.com:5555", False), ("ws://127.0.0.1:5555", False),
])
def test_loopback_addresses_are_recognised(addr, loopback):
    assert is_loopback(addr) is loopback


def test_binding_beyond_loopback_requires_curve_or_an_explicit_insecure_flag(caplog):
    with pytest.raises(BindError, match="without CURVE.*--insecure-bind"):
        Publisher("tcp://0.0.0.0:*")
    with pytest.raises(BindError, match="without CURVE"):
        ControlServer("tcp://0.0.0.0:*")
    # Explicitly insecure: it binds (all interfaces; nothing is sent) and says so.
    with caplog.at_level(logging.WARNING):
        pub = Publisher("tcp://0.0.0.0:*", insecure=True)
        pub.close()
        ctl = ControlServer("tcp://0.0.0.0:*", insecure=True)
        ctl.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("without authentication" in w for w in warnings)
    with pytest.raises(BindError, match="malformed"):
        Publisher("127.0.0.1:5555")


def curve_keys(tmp_path: Path) -> tuple[CurveServer, bytes, tuple[bytes, bytes]]:
    """Server keys authorising one client, alice: (server config, server public key, alice's key pair)."""
    (tmp_path / "server").mkdir()
    (tmp_path / "clients").mkdir()
    server_pub, server_secret = zmq.auth.create_certificates(tmp_path / "server", "server")
    zmq.auth.create_certificates(tmp_path / "clients", "alice")
    alice = zmq.auth.load_certificate(tmp_path / "clients" / "alice.key_secret")
    server_key = zmq.auth.load_certificate(server_pub)[0]
    return CurveServer.from_certificate(server_secret, tmp_path / "clients"), server_key, alice


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq was built without CURVE")
def test_curve_publisher_serves_authorised_clients_only(closing, tmp_path):
    curve, server_key, alice = curve_keys(tmp_path)
    pub = Publisher(ANY_PORT, curve=curve)
    closing(pub)
    good = Subscriber(pub.addr, curve_server_key=server_key, curve_keypair=alice)
    closing(good)
    stranger = Subscriber(pub.addr, curve_server_key=server_key)  # a fresh key pair, not authorised
    closing(stranger)
    plain = Subscriber(pub.addr)
    closing(plain)
    await_subscription(pub, sub_recv(good))
    publish(pub, 1)
    assert good.recv(2.0).seq == 1
    assert stranger.recv(0.3) is None and plain.recv(0.1) is None


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq was built without CURVE")
def test_curve_control_channel_obeys_authorised_clients_only(tmp_path):
    curve, server_key, alice = curve_keys(tmp_path)
    server = ControlServer(ANY_PORT, curve=curve)
    handled: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.poll(lambda r: handled.append(r.cmd) or {"cmd": r.cmd})
            zmq.select([server.socket], [], [], 0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for client in (ControlClient(server.addr, timeout=1.0, curve_server_key=server_key),  # unknown key
                       ControlClient(server.addr, timeout=1.0)):  # no CURVE at all
            with client, pytest.raises(ControlTimeout):
                client.reset()
        assert handled == [], "an unauthorised client changes nothing"
        with ControlClient(server.addr, timeout=5.0, curve_server_key=server_key, curve_keypair=alice) as ok:
            assert ok.reset() == {"cmd": "reset"}
        assert handled == ["reset"]
    finally:
        stop.set()
        thread.join(2)
        server.close()


# -------------------------------------------------------------------------- control client


class FakeControlServer:
    """A ROUTER socket on its own thread that records requests and answers with ``reply(req)``
    (None: no answer)."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[dict] = []
        self._stop = threading.Event()
        self._addr: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.addr = self._addr.get(timeout=5)

    def _serve(self) -> None:
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.linger = 0
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        self._addr.put(f"tcp://127.0.0.1:{port}")
        try:
            while not self._stop.is_set():
                if not sock.poll(20):
                    continue
                identity, empty, body = sock.recv_multipart()
                req = json.loads(body)
                self.requests.append(req)
                answer = self.reply(req)
                if answer is not None:
                    sock.send_multipart([identity, empty, json.dumps(answer).encode()])
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def echo_result(req: dict) -> dict:
    return {"v": 1, "ok": True, "result": {"cmd": req["cmd"]}}


def test_control_client_sends_the_documented_requests(closing):
    server = FakeControlServer(echo_result)
    closing(server)
    ctl = ControlClient(server.addr, timeout=5.0)
    closing(ctl)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    assert ctl.add_object(1, box=(10, 20, 30, 40), seq=17) == {"cmd": "add"}
    ctl.add_object(2, points=[(5, 6), (7, 8)], labels=[1, 0])
    ctl.correct(2, points=[(1, 2, 0)])
    ctl.correct(1, mask=mask)
    ctl.remove(2)
    ctl.reset()
    ctl.list_objects()
    ctl.get_state()
    ctl.stats()
    assert ctl.request({"cmd": "state"}) == {"v": 1, "ok": True, "result": {"cmd": "state"}}
    counts = rle.encode(mask).decode()
    assert server.requests == [
        {"v": 1, "cmd": "add", "obj_id": 1, "box": [10.0, 20.0, 30.0, 40.0], "seq": 17},
        {"v": 1, "cmd": "add", "obj_id": 2, "points": [[5.0, 6.0, 1], [7.0, 8.0, 0]]},
        {"v": 1, "cmd": "correct", "obj_id": 2, "points": [[1.0, 2.0, 0]]},
        {"v": 1, "cmd": "correct", "obj_id": 1, "mask": {"size": [4, 6], "counts": counts}},
        {"v": 1, "cmd": "remove", "obj_id": 2},
        {"v": 1, "cmd": "reset"}, {"v": 1, "cmd": "list"}, {"v": 1, "cmd": "state"}, {"v": 1, "cmd": "stats"},
        {"v": 1, "cmd": "state"},
    ]
    np.testing.assert_array_equal(rle.decode(counts, 4, 6), mask)


def test_control_error_reply_raises_with_the_servers_message(closing):
    server = FakeControlServer(lambda req: {"v": 1, "ok": False, "error": "no object 9; tracked: [1]"})
    closing(server)
    ctl = ControlClient(server.addr, timeout=5.0)
    closing(ctl)
    with pytest.raises(ControlError, match=r"no object 9; tracked: \[1\]"):
        ctl.remove(9)


def test_control_malformed_reply_raises(closing):
    server = FakeControlServer(lambda req: {"v": 2, "ok": True, "result": {}})
    closing(server)
    ctl = ControlClient(server.addr, timeout=5.0)
    closing(ctl)
    with pytest.raises(ControlError, match="protocol version 2"):
        ctl.stats()


def test_control_timeout_raises_and_the_client_stays_usable(closing):
    server = FakeControlServer(lambda req: None if req["cmd"] == "stats" else echo_result(req))
    closing(server)
    ctl = ControlClient(server.addr, timeout=0.3)
    closing(ctl)
    t0 = time.monotonic()
    with pytest.raises(ControlTimeout, match="no reply"):
        ctl.stats()
    assert time.monotonic() - t0 < 2.0
    assert ctl.get_state() == {"cmd": "state"}


def test_control_timeout_without_a_server(closing):
    ctl = ControlClient("tcp://127.0.0.1:9", timeout=0.2)  # nothing listens on the discard port
    closing(ctl)
    with pytest.raises(TimeoutError):
        ctl.list_objects()


# -------------------------------------------------------------------------------------- echo


class BackgroundPublisher:
    """A Publisher on its own thread (which owns the socket), sending a frame every 20 ms."""

    def __init__(self, masks: dict[int, np.ndarray]):
        self.masks = masks
        self._stop = threading.Event()
        self._addr: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.addr = self._addr.get(timeout=5)

    def _run(self) -> None:
        with Publisher(ANY_PORT, stream_id="cam0") as pub:
            self._addr.put(pub.addr)
            seq = 0
            while not self._stop.wait(0.02):
                pub.tick("running")
                publish(pub, seq, self.masks)
                seq += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_echo_prints_one_line_per_frame_and_exits_after_count(closing, capsys):
    bg = BackgroundPublisher(sample_masks())
    closing(bg)
    assert echo.main(["--connect", bg.addr, "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    seqs = [int(line.split()[1]) for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert "obj 1 visible area 450 | obj 7 visible area" in lines[0] and "latency" in lines[0]


def test_echo_exits_with_status_1_when_no_frame_arrives(capsys):
    with Publisher(ANY_PORT) as pub:
        t0 = time.monotonic()
        assert echo.main(["--connect", pub.addr, "--timeout", "0.3"]) == 1
        assert time.monotonic() - t0 < 3.0
    assert "no frame" in capsys.readouterr().err


def test_the_client_sdk_does_not_import_torch():
    """Subscribers start and exit fast: a robot node that only reads masks never loads torch
    (with it, exiting on Ctrl-C took 0.65-0.97 s, and once more than 5 s on a loaded machine)."""
    code = "import sys, streamtrack.client, streamtrack.cli.echo; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_echo_json_in_a_subprocess_and_ctrl_c(closing):
    bg = BackgroundPublisher(sample_masks())
    closing(bg)
    # PYTHONFAULTHANDLER: if it ever fails to exit, SIGABRT makes it print where each thread is.
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="1")
    # A terminal's Ctrl-C reaches a program whose SIGINT is not ignored. A test run started in the
    # background by a shell ignores SIGINT, and children inherit that, so restore the default.
    proc = subprocess.Popen([sys.executable, "-m", "streamtrack.cli.echo", "--connect", bg.addr, "--json"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]  # bounded by the test deadline
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)  # it takes 0.05 s; a CI run once passed 5 s
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"echo did not exit within 15 s of Ctrl-C; where it was:\n{err[-4000:]}") from None
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err
    first = lines[0]
    assert first["v"] == 1 and first["stream"] == "cam0" and first["receipt_latency_ms"] >= 0
    areas = {o["id"]: o["mask_area"] for o in first["objects"]}
    assert areas == {i: int(m.sum()) for i, m in sample_masks().items()}
    assert [o["area"] for o in first["objects"]] == list(areas.values())
    assert [line["seq"] for line in lines] == sorted({line["seq"] for line in lines})
