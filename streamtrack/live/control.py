"""The control channel: JSON requests on a ZeroMQ ROUTER socket, validated, answered.

The socket is owned by the tracking thread, which polls it between frames and runs
the commands on the tracker itself, so nothing needs a lock. Every request gets a
reply; a malformed, unknown or oversized one gets ``{"ok": false, "error": ...}``
and the pipeline carries on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from streamtrack.live import rle
from streamtrack.live.publisher import CurveServer, bind_server
from streamtrack.tracker import Prompt, PromptError

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 4 * 2**20
"""Larger requests get an error reply."""
HARD_LIMIT_BYTES = 16 * 2**20
"""ZMQ_MAXMSGSIZE: a peer sending more than this is disconnected by ZeroMQ (no reply possible)."""
MAX_MASK_SIDE = 8192
MAX_POINTS = 64

COMMANDS = {
    "add": {"obj_id", "points", "box", "mask", "seq"},
    "correct": {"obj_id", "points", "box", "mask", "seq"},
    "remove": {"obj_id"},
    "reset": set(),
    "list": set(),
    "state": set(),
    "stats": set(),
}


class RequestError(ValueError):
    """A request is malformed or cannot be carried out; the message goes back to the client."""


@dataclass(frozen=True)
class ControlRequest:
    cmd: str
    obj_id: int | None = None
    prompt: Prompt | None = None
    seq: int | None = None
    """Sequence number of the frame the prompt was drawn on, if the client said."""


def parse_request(raw: bytes) -> ControlRequest:
    """Validate one request frame; raises :class:`RequestError` saying what is wrong."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(raw)} bytes exceeds the limit of {MAX_REQUEST_BYTES}")
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"request is not UTF-8 JSON: {e}") from None
    if not isinstance(msg, dict):
        raise RequestError("request must be a JSON object")
    if msg.get("v") != PROTOCOL_VERSION:
        raise RequestError(f"unsupported protocol version {msg.get('v')!r}; this server speaks v{PROTOCOL_VERSION}")
    cmd = msg.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise RequestError(f"unknown cmd {cmd!r}; one of {sorted(COMMANDS)}")
    allowed = COMMANDS[cmd] | {"v", "cmd"}
    unknown = sorted(set(msg) - allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown} for cmd {cmd!r}")
    obj_id = seq = prompt = None
    if "obj_id" in COMMANDS[cmd]:
        obj_id = _int(msg, "obj_id", required=True)
    if "seq" in msg:
        seq = _int(msg, "seq", required=False)
        if seq is not None and seq < 0:
            raise RequestError("seq must be >= 0")
    if cmd in ("add", "correct"):
        prompt = _prompt(obj_id, msg)
    return ControlRequest(cmd, obj_id, prompt, seq)


def _int(msg: dict, key: str, required: bool) -> int | None:
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{key} must be an integer")
    if abs(value) > 2**53:
        raise RequestError(f"{key} is out of range")
    return value


def _prompt(obj_id: int, msg: dict) -> Prompt:
    kwargs: dict[str, Any] = {}
    if "points" in msg:
        pts = msg["points"]
        if not isinstance(pts, list) or not 0 < len(pts) <= MAX_POINTS:
            raise RequestError(f"points must be a list of 1 to {MAX_POINTS} [x, y] or [x, y, label] items")
        if not all(isinstance(p, list) and len(p) in (2, 3) for p in pts):
            raise RequestError("each point must be [x, y] or [x, y, label]")
        kwargs["points"] = tuple((p[0], p[1]) for p in pts)
        kwargs["labels"] = tuple(p[2] if len(p) == 3 else 1 for p in pts)
    if "box" in msg:
        if not isinstance(msg["box"], list) or len(msg["box"]) != 4:
            raise RequestError("box must be [x0, y0, x1, y1]")
        kwargs["box"] = tuple(msg["box"])
    if "mask" in msg:
        kwargs["mask"] = _mask(msg["mask"])
    try:
        return Prompt(obj_id, **kwargs)
    except PromptError as e:
        raise RequestError(str(e)) from None


def _mask(spec: Any):
    if not isinstance(spec, dict) or set(spec) != {"size", "counts"}:
        raise RequestError('mask must be {"size": [h, w], "counts": "<COCO RLE>"}')
    size, counts = spec["size"], spec["counts"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_MASK_SIDE for v in size)):
        raise RequestError(f"mask size must be [h, w] with 1 <= h, w <= {MAX_MASK_SIDE}")
    if not isinstance(counts, str):
        raise RequestError("mask counts must be a COCO RLE string")
    try:
        return rle.decode(counts, size[0], size[1])
    except Exception as e:  # any decoding failure is the client's malformed mask
        raise RequestError(f"mask counts cannot be decoded: {e}") from None


Handler = Callable[[ControlRequest], dict]


class ControlServer:
    """A ROUTER socket answering control requests. Owned by the thread that calls :meth:`poll`."""

    def __init__(self, addr: str, curve: CurveServer | None = None, insecure: bool = False) -> None:
        # A context of its own: CURVE authentication is one authenticator per context.
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_BYTES)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        try:  # refuses non-loopback addresses without CURVE (unless insecure)
            self._auth = bind_server(self.context, self.socket, addr, curve, insecure)
        except BaseException:
            self.socket.close(linger=0)
            self.context.term()
            raise
        self.addr = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = 0
        self.errors = 0

    def poll(self, handle: Handler, max_requests: int = 16) -> int:
        """Answer up to ``max_requests`` pending requests without blocking; returns how many."""
        n = 0
        while n < max_requests:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            n += 1
            self.requests += 1
            envelope, body = _split_envelope(parts)
            if body is None:
                reply = self._error("request must be one frame holding a JSON object")
            else:
                try:
                    reply = {"v": PROTOCOL_VERSION, "ok": True, "result": handle(parse_request(body))}
                except (RequestError, PromptError, KeyError) as e:
                    reply = self._error(str(e).strip("'\""))
            try:
                self.socket.send_multipart([*envelope, json.dumps(reply).encode()], zmq.NOBLOCK)
            except zmq.Again:
                pass  # the client went away; nothing to answer
        return n

    def _error(self, message: str) -> dict:
        self.errors += 1
        return {"v": PROTOCOL_VERSION, "ok": False, "error": message}

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self.context.term()


def _split_envelope(parts: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """ROUTER frames -> (routing envelope incl. the empty delimiter, body).

    A REQ client sends [identity, b"", body]; a DEALER may omit the delimiter.
    """
    if b"" in parts[1:]:
        i = parts.index(b"", 1)
        envelope, rest = parts[: i + 1], parts[i + 1 :]
    else:
        envelope, rest = parts[:1], parts[1:]
    return envelope, rest[0] if len(rest) == 1 else None
