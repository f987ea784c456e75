"""``streamtrack prompt``: send a control command to a running pipeline and print the reply."""

from __future__ import annotations

import argparse
import json
import sys

from streamtrack.cli import UsageError, parse_floats

HELP = "send a command to a running pipeline (add/correct/remove objects, reset, list, state, stats)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompt", help=HELP, description=HELP + ". Prints the JSON reply; exit status 1 if refused.")
    p.add_argument("--control", default="tcp://127.0.0.1:5556", help="control address (default %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")
    cmds = p.add_subparsers(dest="cmd", required=True, metavar="CMD")
    for name, text in (("add", "start tracking a new object"), ("correct", "correct a tracked object")):
        c = cmds.add_parser(name, help=text, description=text + " on the frame the pipeline tracked last.")
        c.add_argument("--obj", type=int, required=True, help="object id")
        c.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box in source pixels")
        c.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]", help="click; repeatable")
        c.add_argument("--mask", metavar="PNG", help="mask image (nonzero = object)")
        c.add_argument("--seq", type=int, help="sequence number of the frame the prompt was drawn on")
    c = cmds.add_parser("remove", help="stop tracking an object")
    c.add_argument("--obj", type=int, required=True, help="object id")
    for name, text in (("reset", "forget all objects"), ("list", "list tracked objects"),
                       ("state", "pipeline state, objects and image size"), ("stats", "counters")):
        cmds.add_parser(name, help=text)
    p.set_defaults(run=run)


def build_request(args: argparse.Namespace) -> dict:
    req: dict = {"v": 1, "cmd": args.cmd}
    if args.cmd in ("add", "correct", "remove"):
        req["obj_id"] = args.obj
    if args.cmd in ("add", "correct"):
        if args.box:
            req["box"] = parse_floats(args.box, (4,), "--box")
        if args.point:
            req["points"] = [_point(text) for text in args.point]
        if args.mask:
            req["mask"] = _mask(args.mask)
        if args.seq is not None:
            req["seq"] = args.seq
        if not (args.box or args.point or args.mask):
            raise UsageError("give --box, --point or --mask")
    return req


def _point(text: str) -> list[float]:
    v = parse_floats(text, (2, 3), "--point")
    return [v[0], v[1], int(v[2]) if len(v) == 3 else 1]


def _mask(path: str) -> dict:
    import cv2

    from streamtrack.live import rle

    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise UsageError(f"--mask {path}: cannot be read as an image")
    return {"size": list(img.shape), "counts": rle.encode(img > 0).decode()}


def run(args: argparse.Namespace) -> int:
    from streamtrack.client import ControlClient, ControlError

    request = build_request(args)
    client = ControlClient(args.control, timeout=args.timeout)
    try:
        reply = client.request(request)
    except TimeoutError:
        raise UsageError(f"no reply from {args.control} within {args.timeout} s; is `streamtrack run` running?") from None
    except ControlError as e:
        raise UsageError(f"bad reply from {args.control}: {e}") from None
    finally:
        client.close()
    print(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        print(f"streamtrack prompt: refused: {reply.get('error')}", file=sys.stderr)
        return 1
    return 0
