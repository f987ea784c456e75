"""The streamtrack client SDK: subscribe to masks and status, send control commands.

```python
from streamtrack.client import ControlClient, Subscriber

with Subscriber("tcp://127.0.0.1:5555", drain=True) as sub:
    for msg in sub:                       # FrameMessage or StatusMessage
        if msg.kind == "frame":
            for obj_id, mask in msg.masks.items():   # bool[H, W]
                ...

with ControlClient("tcp://127.0.0.1:5556") as ctl:
    ctl.add_object(1, box=(40, 30, 200, 180))
```

Message fields are described in ``docs/wire-format.md``.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zmq

from streamtrack.live import rle
from streamtrack.live.wire import KERNEL_BUFFER_BYTES, FrameMessage, Message, ObjectInfo, StatusMessage, WireError, decode

__all__ = [
    "ControlClient", "ControlError", "ControlTimeout", "FrameMessage", "ObjectInfo", "StatusMessage",
    "Subscriber", "WireError",
]

DEFAULT_PUB_ADDR = "tcp://127.0.0.1:5555"
DEFAULT_CONTROL_ADDR = "tcp://127.0.0.1:5556"
CONTROL_VERSION = 1


class Subscriber:
    """Receive frame and status messages from a streamtrack publisher.

    ``drain=True`` is for consumers slower than the stream: each :meth:`recv` first reads
    everything already queued and keeps only the newest frame message (status messages are
    all kept, in order), so what you process is never stale. ``skipped`` counts the frames
    dropped that way; ``missed`` counts frames that never arrived (gaps in ``seq``: dropped
    as stale before tracking, or by a full queue between publisher and here).

    A socket belongs to one thread: use a Subscriber from the thread that made it.
    """

    def __init__(
        self,
        addr: str = DEFAULT_PUB_ADDR,
        topics: Sequence[str] = ("frame", "status"),
        drain: bool = False,
        rcvhwm: int = 4,
        context: zmq.Context | None = None,
        curve_server_key: bytes | None = None,
        curve_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``curve_server_key``: the publisher's CURVE public key (Z85), when it uses CURVE;
        ``curve_keypair``: this client's (public, secret) keys, made fresh when not given."""
        self.drain = drain
        self.received = self.skipped = self.missed = 0
        self._pending: collections.deque[Message] = collections.deque()
        self._last_seq: dict[str, int] = {}
        self._socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        try:
            self._socket.linger = 0
            self._socket.rcvhwm = rcvhwm
            self._socket.rcvbuf = KERNEL_BUFFER_BYTES  # a backlog stays small: see the publisher
            _set_curve_client(self._socket, curve_server_key, curve_keypair)
            for topic in topics:
                self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._socket.connect(addr)
        except BaseException:
            self.close()
            raise

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message (with ``drain``: the newest frame), or None after ``timeout`` seconds.

        ``timeout=None`` waits forever. Raises :class:`WireError` for a message that is not
        valid wire format version 1 (the subscriber stays usable).
        """
        if self.drain:
            self._read_available()
        if not self._pending:
            if not self._socket.poll(None if timeout is None else max(0, int(timeout * 1000))):
                return None
            self._read_one()
            if self.drain:
                self._read_available()
        return self._pending.popleft() if self._pending else None

    def __iter__(self) -> Iterator[Message]:
        """Messages forever (stop with break, or Ctrl-C)."""
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_available(self) -> None:
        while self._socket.poll(0):
            self._read_one()

    def _read_one(self) -> None:
        """Receive one message into the pending queue; with ``drain``, older frames leave it."""
        msg = decode(self._socket.recv_multipart())
        self.received += 1
        if isinstance(msg, FrameMessage):
            self._count_gap(msg)
            if self.drain:
                kept = [m for m in self._pending if not isinstance(m, FrameMessage)]
                self.skipped += len(self._pending) - len(kept)
                self._pending = collections.deque(kept)
        self._pending.append(msg)

    def _count_gap(self, msg: FrameMessage) -> None:
        last = self._last_seq.get(msg.stream)
        if last is not None and msg.seq > last + 1:
            self.missed += msg.seq - last - 1
        self._last_seq[msg.stream] = msg.seq


class ControlError(RuntimeError):
    """The server refused a request (its error message is this exception's message)."""


class ControlTimeout(ControlError, TimeoutError):
    """No reply within the timeout. The client stays usable (its socket is recreated)."""


class ControlClient:
    """Send control commands to a running pipeline (JSON over a REQ socket, one reply each)."""

    def __init__(
        self,
        addr: str = DEFAULT_CONTROL_ADDR,
        timeout: float = 5.0,
        context: zmq.Context | None = None,
        curve_server_key: bytes | None = None,
        curve_keypair: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._curve = (curve_server_key, curve_keypair)
        self._socket: zmq.Socket | None = None
        self._connect()

    # -------------------------------------------------------------- commands

    def add_object(
        self, obj_id: int, points=None, labels=None, box=None, mask=None, seq: int | None = None,
    ) -> dict[str, Any]:
        """Start tracking a new object from points (x, y) with ``labels`` (1 = foreground, the
        default; 0 = background), a box (x0, y0, x1, y1), or a mask (bool[H, W] at the source
        size, or a ready ``{"size", "counts"}`` COCO RLE dict). ``seq``: the frame the prompt
        was drawn on. Returns the server's result."""
        return self._call("add", **prompt_fields(obj_id, points, labels, box, mask, seq))

    def correct(
        self, obj_id: int, points=None, labels=None, box=None, mask=None, seq: int | None = None,
    ) -> dict[str, Any]:
        """Correct a tracked object; arguments as :meth:`add_object`."""
        return self._call("correct", **prompt_fields(obj_id, points, labels, box, mask, seq))

    def remove(self, obj_id: int) -> dict[str, Any]:
        return self._call("remove", obj_id=obj_id)

    def reset(self) -> dict[str, Any]:
        """Forget every object."""
        return self._call("reset")

    def list_objects(self) -> dict[str, Any]:
        return self._call("list")

    def get_state(self) -> dict[str, Any]:
        """Pipeline state, the last frame's seq and the current objects (for late joiners)."""
        return self._call("state")

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    # ------------------------------------------------------------------ core

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request (``"v": 1`` is added unless given) and return the whole reply.

        Raises :class:`ControlTimeout` after ``timeout`` seconds without a reply, and
        :class:`ControlError` for a reply that is not a version-1 JSON object.
        """
        payload = json.dumps({"v": CONTROL_VERSION} | req, separators=(",", ":")).encode()
        if self._socket is None:
            self._connect()
        deadline_ms = int(self.timeout * 1000)
        try:
            if not self._socket.poll(deadline_ms, zmq.POLLOUT):
                raise zmq.Again()
            self._socket.send(payload, zmq.NOBLOCK)
            if not self._socket.poll(deadline_ms, zmq.POLLIN):
                raise zmq.Again()
            raw = self._socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            self._reset_socket()  # a REQ socket waiting for a lost reply cannot send again
            raise ControlTimeout(f"no reply from {self.addr} within {self.timeout:g} s (is the pipeline running?)") from None
        return _parse_reply(raw)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        reply = self.request({"cmd": cmd, **fields})
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error", "request failed (no error message)")))
        result = reply.get("result", {})
        if not isinstance(result, dict):
            raise ControlError(f"malformed reply: result must be an object, got {result!r:.80}")
        return result

    def _connect(self) -> None:
        sock = self._context.socket(zmq.REQ)
        try:
            sock.linger = 0
            _set_curve_client(sock, *self._curve)
            sock.connect(self.addr)
        except BaseException:
            sock.close(linger=0)
            raise
        self._socket = sock

    def _reset_socket(self) -> None:
        self.close()
        self._connect()


def prompt_fields(obj_id: int, points=None, labels=None, box=None, mask=None, seq: int | None = None) -> dict[str, Any]:
    """The prompt part of an add/correct request, in the control protocol's JSON form."""
    out: dict[str, Any] = {"obj_id": int(obj_id)}
    if points is not None:
        points = [tuple(p) for p in points]
        if labels is None:
            labels = [int(p[2]) if len(p) == 3 else 1 for p in points]
        if len(labels) != len(points):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        out["points"] = [[float(p[0]), float(p[1]), int(lab)] for p, lab in zip(points, labels)]
    if box is not None:
        out["box"] = [float(v) for v in box]
    if mask is not None:
        out["mask"] = mask if isinstance(mask, dict) else mask_to_json(mask)
    if seq is not None:
        out["seq"] = int(seq)
    return out


def mask_to_json(mask: np.ndarray) -> dict[str, Any]:
    """bool[H, W] -> {"size": [H, W], "counts": "<COCO RLE string>"}."""
    mask = np.asarray(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle.encode(mask).decode("ascii")}


def _parse_reply(raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError(f"malformed reply (not UTF-8 JSON): {e}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"malformed reply (expected an object with 'ok'): {raw[:80]!r}")
    if reply.get("v") != CONTROL_VERSION:
        raise ControlError(f"reply has protocol version {reply.get('v')!r}; this client speaks {CONTROL_VERSION}")
    return reply


def _set_curve_client(sock: zmq.Socket, server_key: bytes | None, keypair: tuple[bytes, bytes] | None) -> None:
    if server_key is None:
        return
    public, secret = keypair if keypair is not None else zmq.curve_keypair()
    sock.curve_serverkey = server_key
    sock.curve_publickey = public
    sock.curve_secretkey = secret

