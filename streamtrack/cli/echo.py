"""``streamtrack echo``: print what a running pipeline publishes, one line per frame."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from streamtrack.cli import UsageError

HELP = "print the frames a running pipeline publishes, one line per frame"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "echo",
        help=HELP,
        description=(
            "Subscribe to a pipeline's publisher and print one line per frame: its sequence number, "
            "each object's visibility and area, and the latency from capture to receipt (wall clocks, "
            "so compare across machines only with synchronised clocks). Status messages go to stderr. "
            "With --json, each line is the frame's header plus, per object, the area counted from "
            "its decoded mask (mask_area)."
        ),
    )
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", metavar="ADDR",
                   help="publisher address (default: tcp://127.0.0.1:5555)")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N frames")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="exit with status 1 if no frame arrives for S seconds (default: wait forever)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamtrack.client import Subscriber, WireError

    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    frames = 0
    with Subscriber(args.connect) as sub:
        try:
            deadline = None if args.timeout is None else time.monotonic() + args.timeout
            while args.count is None or frames < args.count:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    msg = sub.recv(wait)
                except WireError as e:
                    print(f"streamtrack echo: skipped a malformed message: {e}", file=sys.stderr)
                    continue
                t_receipt = time.time_ns()
                if msg is None:
                    print(f"streamtrack echo: no frame from {args.connect} for {args.timeout:g} s", file=sys.stderr)
                    return 1
                if msg.kind == "status":
                    print(status_line(msg), file=sys.stderr, flush=True)
                    continue
                print(json_line(msg, t_receipt) if args.json else text_line(msg, t_receipt), flush=True)
                frames += 1
                deadline = None if args.timeout is None else time.monotonic() + args.timeout
        except KeyboardInterrupt:
            print(f"streamtrack echo: interrupted after {frames} frame(s)", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. piped into `head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def text_line(msg, t_receipt_wall_ns: int) -> str:
    """``seq 42  latency 12.3 ms  obj 1 visible area 5234 | obj 2 hidden area 0``."""
    latency = (t_receipt_wall_ns - msg.t_capture_wall_ns) / 1e6
    objects = " | ".join(
        f"obj {o.id} {'visible' if o.visible else 'hidden'} area {o.area}" for o in msg.objects
    ) or "no objects"
    return f"seq {msg.seq}  latency {latency:.1f} ms  {objects}"


def json_line(msg, t_receipt_wall_ns: int) -> str:
    """The header as received, plus mask_area per object and the receipt time and latency."""
    header = dict(msg.header)
    masks = msg.masks
    header["objects"] = [dict(o, mask_area=int(masks[o["id"]].sum())) for o in header["objects"]]
    header["t_receipt_wall_ns"] = t_receipt_wall_ns
    header["receipt_latency_ms"] = round((t_receipt_wall_ns - msg.t_capture_wall_ns) / 1e6, 3)
    return json.dumps(header, separators=(",", ":"))


def status_line(msg) -> str:
    c = msg.counters
    reason = f" ({msg.reason})" if msg.reason else ""
    return (
        f"status {msg.state}{reason}  captured {c.captured} published {c.published} "
        f"dropped stale {c.dropped_stale} / publish {c.dropped_publish}  objects {len(msg.objects)}"
        + (f"  damaged packets skipped {c.damaged_packets}" if c.damaged_packets else "")
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``echo`` alone (``python -m streamtrack.cli.echo ...``), before it is registered."""
    parser = argparse.ArgumentParser(prog="streamtrack")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["echo", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except UsageError as e:
        print(f"streamtrack echo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
