"""``streamtrack run``: the live pipeline (source -> tracker -> ZeroMQ), until the source ends or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from streamtrack.cli import UsageError, add_model_args, apply_threads

HELP = "track a camera, stream, file or the synthetic source live and publish masks over ZeroMQ"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help=HELP,
        description=(
            "Run the live pipeline: a capture thread reads SRC (0 = first webcam, rtsp://..., a video "
            "file, a folder of frames, or 'synthetic'); the tracker follows every prompted object; "
            "results go out on a ZeroMQ PUB socket (--pub) and commands come in on --control "
            "(see docs/wire-format.md; `streamtrack prompt` sends them). Ctrl-C stops it."
        ),
    )
    p.add_argument("--source", required=True, metavar="SRC", help="0 | rtsp://... | file.mp4 | frames/ | synthetic")
    add_model_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prompts", metavar="PROMPTS.json", help="prompts by tracker frame index (see `track --help`)")
    group.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box of object 1 on the first frame")
    group.add_argument("--point", action="append", metavar="X,Y[,LABEL]", help="click on object 1 on the first frame")
    group.add_argument("--gt-prompts", nargs="?", const="box", choices=("box", "mask"), metavar="box|mask",
                       help="synthetic source only: prompt every object visible on the first frame with its true "
                            "box (the default) or its true mask; the bundled nano model tracks from masks better "
                            "than from boxes (J&F 0.69 against 0.66 on its benchmark, docs/nano-model.md)")
    p.add_argument("--pub", default="tcp://127.0.0.1:5555", help="PUB address for results (default %(default)s)")
    p.add_argument("--control", default="tcp://127.0.0.1:5556", help="ROUTER address for commands (default %(default)s)")
    p.add_argument("--stream-id", default="streamtrack", help="stream id carried in every message")
    p.add_argument("--mask-encoding", choices=("rle", "bits"), default="rle", help="COCO RLE (default) or packed bits")
    p.add_argument("--send-frames", action="store_true", help="also publish each frame as JPEG (for `streamtrack view`)")
    p.add_argument("--pace", action="store_true", help="play files and folders at their native rate (drop when behind)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--max-objects", type=int, default=8, help="object slots (default 8)")
    p.add_argument("--no-reconnect", action="store_true", help="stop instead of reconnecting when a live source drops")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="server certificate (.key_secret, from zmq.auth.create_certificates) enabling CURVE on both "
                        "sockets; needed to bind to a non-loopback address")
    p.add_argument("--curve-clients", metavar="DIR", default="*",
                   help="folder of authorised client public certificates (default: any client that knows the "
                        "server's public key)")
    p.add_argument("--insecure-bind", action="store_true",
                   help="allow --pub/--control on a non-loopback address without CURVE: anyone who can reach "
                        "them can read the stream and send commands (a warning is printed)")
    p.set_defaults(run=run)


def initial_prompts(args: argparse.Namespace):
    from streamtrack.cli.track import cli_prompts
    from streamtrack.tracker import Prompt

    if args.gt_prompts:
        from streamtrack.live.sources import open_source

        source = open_source(args.source)
        if not hasattr(source, "first_frame_boxes"):
            raise UsageError("--gt-prompts needs the synthetic source")
        if args.gt_prompts == "mask":
            return {0: [Prompt(obj_id, mask=mask) for obj_id, mask in source.first_frame_masks().items()]}
        return {0: [Prompt(obj_id, box=tuple(map(float, box))) for obj_id, box in source.first_frame_boxes().items()]}
    if args.prompts or args.box or args.point:
        return cli_prompts(args)
    return {}


def run(args: argparse.Namespace) -> int:
    from streamtrack.checkpoint import load_model, resolve_checkpoint
    from streamtrack.live.pipeline import Pipeline, PipelineConfig
    from streamtrack.live.sources import open_source
    from streamtrack.tracker import PromptError, Tracker, TrackerConfig
    from streamtrack.video_file import SourceError

    try:
        open_source(args.source)  # checks the spec (not the device) before the model loads
        prompts = initial_prompts(args)
        tracker_config = TrackerConfig(max_objects=args.max_objects)
    except (SourceError, PromptError, ValueError) as e:
        raise UsageError(str(e)) from None
    apply_threads(args)
    checkpoint = resolve_checkpoint(args.config, args.checkpoint)
    tracker = Tracker(load_model(args.config, checkpoint, args.image_size, args.device), tracker_config)
    curve = None
    if args.curve_secret:
        from streamtrack.live.publisher import CurveServer

        try:
            curve = CurveServer.from_certificate(args.curve_secret, args.curve_clients)
        except (OSError, ValueError) as e:
            raise UsageError(f"--curve-secret {args.curve_secret}: {e}") from None
    config = PipelineConfig(
        pub_addr=args.pub, control_addr=args.control, stream_id=args.stream_id, mask_encoding=args.mask_encoding,
        send_frames=args.send_frames, curve=curve, insecure_bind=args.insecure_bind,
        pace=args.pace, reconnect=not args.no_reconnect, max_frames=args.max_frames,
    )
    pipeline = Pipeline(tracker, lambda: open_source(args.source), config, prompts)

    def on_signal(signum, _frame):
        pipeline.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def ready() -> None:
        print(f"streamtrack run: publishing on {pipeline.pub_addr}, control on {pipeline.control_addr}", file=sys.stderr)

    error = None
    try:
        pipeline.run(on_ready=ready, stop_timeout=1.5)  # tracks on this thread, which loaded the model: see Pipeline.run
    except RuntimeError as e:
        error = e
    leftover = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive())
    if leftover:
        print(f"streamtrack run: warning: threads still running at exit: {', '.join(leftover)}", file=sys.stderr)
    if error is not None:
        print(f"streamtrack run: error: {error}", file=sys.stderr)
        return 1
    c = pipeline.counters
    print(f"streamtrack run: stopped ({pipeline.status()[1]}); tracked {c.tracked}, published {c.published}, "
          f"dropped {c.dropped_stale} stale / {c.dropped_publish} at the socket", file=sys.stderr)
    return 0
