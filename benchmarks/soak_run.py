"""A long soak of `streamtrack run` with the shipped nano model: does its memory stay flat?

`tests/test_reliability.py` soaks the pipeline for 90 s with a stub tracker. This runs the real
thing for as long as you like: `streamtrack run --source synthetic --gt-prompts mask` in a
process of its own, a draining subscriber, and every ``--churn`` seconds one change over the
control socket, in turn: add a new object from a box, correct the first object with a click,
remove the newest (and a `list` request each second, to count the objects).
The run process's RSS is sampled every second into a CSV. The verdict reads the floor of RSS
(the minimum of each ``--window`` seconds), which allocator swings do not move but a leak raises.

    .venv-test/bin/python benchmarks/soak_run.py --minutes 75 --csv soak.csv

Exit status: 0 when the run process survived to the end and stopped cleanly on SIGINT, else 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import numpy as np

from streamtrack.client import ControlClient, ControlError, Subscriber
from streamtrack.live.wire import FrameMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_reliability import rss_floor, rss_mib  # noqa: E402  (the soak test's RSS reading and floor)

ADDRESSES = re.compile(r"publishing on (\S+), control on (\S+)")


@dataclass
class Sample:
    t: float
    """seconds since the soak began"""
    rss_mib: float
    received: int
    """frame messages the subscriber kept so far (it drains: older queued frames are skipped)"""
    objects: int


def start_run(extra: list[str]) -> tuple[subprocess.Popen, str, str, deque]:
    """``streamtrack run`` on random loopback ports: (process, pub address, control address, the
    last lines of its stderr). A thread reads its stderr throughout, so that the pipe never fills."""
    cmd = [sys.executable, "-m", "streamtrack", "run", "--source", "synthetic", "--gt-prompts", "mask",
           "--pub", "tcp://127.0.0.1:*", "--control", "tcp://127.0.0.1:*", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    tail: deque = deque(maxlen=40)
    found: list[re.Match] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            tail.append(line)
            if not found and (m := ADDRESSES.search(line)):
                found.append(m)
                ready.set()
        ready.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or not found:
        proc.kill()
        raise RuntimeError("streamtrack run did not start:\n" + "".join(tail))
    return proc, found[0][1], found[0][2], tail


def churn(client: ControlClient, step: int, seq: int) -> None:
    """One change, in turn by ``step``: add an object, correct the first one, remove the newest."""
    ids = [o["id"] for o in client.list_objects()["objects"]]
    if step % 3 == 0:
        x, y = 40 + (step * 37) % 400, 40 + (step * 53) % 300
        new = max(ids, default=0) + 1
        client.add_object(new, box=(x, y, x + 120, y + 100), seq=seq)
    elif step % 3 == 1 and ids:
        client.correct(ids[0], points=[(320, 240)], labels=[1], seq=seq)
    elif step % 3 == 2 and ids:
        client.remove(max(ids))


def summary(samples: list[Sample], window: float) -> dict:
    t = np.array([s.t for s in samples])
    rss = np.array([s.rss_mib for s in samples])
    starts, low = rss_floor(t, rss, since=0.0, window=window)
    late = starts >= 0.25 * t[-1]
    slope = float(np.polyfit(starts[late], low[late], 1)[0]) * 1024 if late.sum() >= 3 else None
    return {"seconds": float(t[-1]), "rss_min_mib": float(rss.min()), "rss_max_mib": float(rss.max()),
            "floor_mib": [round(float(v), 1) for v in low], "window_s": window,
            "floor_slope_after_first_quarter_kib_s": slope}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="how long to soak (default %(default)s)")
    p.add_argument("--churn", type=float, default=20.0, help="seconds between changes: add, correct, remove (default %(default)s)")
    p.add_argument("--window", type=float, default=300.0, help="seconds per RSS floor window (default %(default)s)")
    p.add_argument("--csv", default="soak.csv", help="per-second samples (default %(default)s)")
    p.add_argument("--json", help="also write the summary here")
    p.add_argument("run_args", nargs="*", help="extra `streamtrack run` arguments, after --")
    args = p.parse_args(argv)
    if args.minutes * 60 < 3 * args.window:
        p.error("--minutes must cover at least three --window lengths")

    proc, pub, ctl, stderr_tail = start_run(args.run_args)
    print(f"soak: streamtrack run (pid {proc.pid}) on {pub}, control {ctl}, for {args.minutes:g} min", file=sys.stderr)
    samples: list[Sample] = []
    received = seq = 0
    steps = count()
    with Subscriber(pub, topics=("frame",), drain=True) as sub, ControlClient(ctl, timeout=30) as client, \
            open(args.csv, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t", "rss_mib", "received", "objects"])
        t0 = time.monotonic()
        next_sample, next_churn = t0 + 1, t0 + args.churn
        while time.monotonic() < t0 + 60 * args.minutes and proc.poll() is None:
            msg = sub.recv(timeout=0.2)
            if isinstance(msg, FrameMessage):
                received, seq = received + 1, msg.seq
            now = time.monotonic()
            try:
                if now >= next_churn:
                    next_churn += args.churn
                    churn(client, next(steps), seq)
                if now >= next_sample:
                    next_sample += 1
                    s = Sample(round(now - t0, 1), rss_mib(proc.pid), received, len(client.list_objects()["objects"]))
                    samples.append(s)
                    out.writerow([s.t, s.rss_mib, s.received, s.objects])
                    if len(samples) % 300 == 0:
                        f.flush()
                        print(f"soak: {s.t / 60:.0f} min, RSS {s.rss_mib:.1f} MiB, {received} frames received",
                              file=sys.stderr)
            except (ControlError, OSError) as e:  # OSError: /proc of a process that just ended
                if proc.poll() is not None:
                    break
                print(f"soak: control request failed: {e}", file=sys.stderr)
        try:
            stats = client.stats()["counters"]
        except ControlError:
            stats = {}
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    if not alive or code != 0:
        print("".join(stderr_tail), file=sys.stderr, end="")
    if not samples or samples[-1].t < args.window:
        print("soak: streamtrack run ended before the first window", file=sys.stderr)
        return 1
    result = summary(samples, args.window) | {"received": received, "counters": stats, "exit_status": code,
                                              "survived": alive}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if alive and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
