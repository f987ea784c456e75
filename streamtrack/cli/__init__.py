"""The ``streamtrack`` command line: one module per subcommand."""

from __future__ import annotations

import argparse
import sys



class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from streamtrack.cli import bench, echo, make_checkpoint, prompt, run, segment, track, view

    parser = argparse.ArgumentParser(
        prog="streamtrack",
        description="Real-time object segmentation and tracking with SAM 2 / SAM 2.1 models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, echo, view, prompt, segment, track, bench, make_checkpoint):
        module.add_parser(sub)
    return parser


def user_error_types() -> tuple[type[Exception], ...]:
    """The errors reported as one line with exit status 2. Looked up after one was raised, from
    the modules loaded by then: a module never imported raised nothing. Importing
    ``streamtrack.checkpoint`` up front would load torch, which `echo`, `view` and `prompt` do
    not need."""
    kinds: list[type[Exception]] = [UsageError]
    for module, name in (("streamtrack.config", "ConfigError"), ("streamtrack.checkpoint", "CheckpointError")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return tuple(kinds)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"streamtrack {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, user_error_types()):
            raise
        print(f"streamtrack {args.command}: error: {e}", file=sys.stderr)
        return 2


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options every model-running subcommand shares."""
    p.add_argument("--config", default="nano",
                   help="model config name from configs/ (e.g. sam2.1_hiera_t) or a YAML path (default: nano)")
    p.add_argument("--checkpoint", default=None,
                   help="official SAM 2 / SAM 2.1 checkpoint (.pt), e.g. sam2.1_hiera_tiny.pt with --config "
                        "sam2.1_hiera_t. Without it the nano model that ships with streamtrack is used: it was "
                        "trained only on synthetic video; for real scenes download an official checkpoint")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="model input size, a multiple of 32 (default from the config: 256 for nano, 1024 for official)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_threads_arg(p)


def threads_count(text: str) -> int:
    """argparse type of ``--threads``: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1 thread is needed")
    return n


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=threads_count, default=None, metavar="N",
                   help="CPU threads for the model's operations (default: torch's, one per core). Fewer can be "
                        "faster where other work shares the cores: with the nano model on 2 cores and "
                        "`streamtrack view` beside it, `run --threads 1` kept up with more of the source's frames than 2 "
                        "threads (docs/speed.md, \"The viewer\")")


def apply_threads(args: argparse.Namespace) -> None:
    """Sets torch's CPU threads from ``--threads``, if given; call before any model work."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def parse_floats(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """``"1,2,3"`` -> floats, checking the count; raises :class:`UsageError`."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in count:
        raise UsageError(f"{what} {text!r}: expected {' or '.join(map(str, count))} numbers, got {len(values)}")
    return values
