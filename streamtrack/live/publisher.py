"""The publishing end of the live pipeline: one ZeroMQ PUB socket that never blocks the tracker.

A ``Publisher`` and its socket belong to one thread: create, use and close it there
(the tracking thread). Sends are non-blocking with a small high-water mark, so a slow
or stopped subscriber costs that subscriber messages, never the tracker time.

Where drops happen, and who sees them (ZeroMQ's PUB semantics):

- default (``lockstep=False``, a PUB socket): each subscriber has its own queue of at most
  ``sndhwm`` messages. A full queue drops that subscriber's copy silently; the others still
  get theirs. ``publish`` returns True even then: ZeroMQ never tells the sender, so drops
  show up at the subscriber as gaps in ``seq``.
- ``lockstep=True`` (XPUB with ``XPUB_NODROP``): a message goes to every subscriber or to
  none. When any subscriber's queue is full the send fails, ``publish`` returns False and
  the drop is counted here, but then the slowest subscriber sets the pace for all.

``CONFLATE`` is never used: with multipart messages it aborts the process.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

from streamtrack.live import wire
from streamtrack.live.types import CapturedFrame, Counters, StageTimes
from streamtrack.tracker.types import FrameResult

DEFAULT_PUB_ADDR = "tcp://127.0.0.1:5555"
STATUS_INTERVAL_S = 1.0


class BindError(ValueError):
    """Refused to bind: a non-loopback address without CURVE, or a malformed address."""


@dataclass(frozen=True)
class CurveServer:
    """CURVE keys of a server socket and the clients it accepts.

    Make keys with ``zmq.auth.create_certificates(dir, name)``; load a pair with
    :meth:`from_certificate`. Give clients the server's *public* key.
    """

    public_key: bytes
    """Z85 (40 characters)."""
    secret_key: bytes
    """Z85 (40 characters)."""
    clients: str | os.PathLike
    """Directory of authorised client certificates (``*.key`` files as ``zmq.auth`` writes them),
    or ``zmq.auth.CURVE_ALLOW_ANY`` ("*") to accept any client that knows the server's public
    key (encryption without client authentication)."""

    @classmethod
    def from_certificate(cls, secret_file: str | os.PathLike, clients: str | os.PathLike) -> CurveServer:
        public, secret = zmq.auth.load_certificate(secret_file)
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key (use the .key_secret file)")
        return cls(public, secret, clients)


def is_loopback(addr: str) -> bool:
    """True for tcp:// on 127.0.0.0/8, ::1 or localhost, and for ipc:// and inproc://."""
    scheme, sep, rest = addr.partition("://")
    if not sep:
        raise BindError(f"malformed ZeroMQ address {addr!r} (expected e.g. tcp://127.0.0.1:5555)")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, other host names


def bind_server(
    context: zmq.Context, socket: zmq.Socket, addr: str, curve: CurveServer | None, insecure: bool = False,
) -> ThreadAuthenticator | None:
    """Bind ``socket``: loopback freely, anything else only with CURVE, or with ``insecure``
    (an explicit choice, logged as a warning).

    With ``curve``, starts a ZAP authenticator on ``context`` (one per context: give each
    CURVE server its own context) and returns it; the caller stops it after closing the socket.
    """
    if curve is None and not is_loopback(addr):
        if not insecure:
            raise BindError(
                f"refusing to bind {addr} without CURVE: anyone who can reach it could read the stream "
                "and send commands. Bind to 127.0.0.1 (the default), give CURVE keys, or pass "
                "--insecure-bind to accept that risk."
            )
        log.warning("WARNING: %s is bound without authentication (--insecure-bind): anyone who can reach "
                    "it can read the stream and send commands", addr)
    auth = None
    if curve is not None:
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve(domain="*", location=curve.clients)
        socket.curve_publickey = curve.public_key
        socket.curve_secretkey = curve.secret_key
        socket.curve_server = True
    if addr.startswith("tcp://["):
        socket.ipv6 = True
    try:
        socket.bind(addr)
    except zmq.ZMQError:
        if auth is not None:
            auth.stop()
        raise
    return auth


class Publisher:
    """Publish frame results and status on a PUB socket (see the module docstring for drops)."""

    def __init__(
        self,
        addr: str = DEFAULT_PUB_ADDR,
        stream_id: str = "streamtrack",
        mask_encoding: str = "rle",
        sndhwm: int = 4,
        lockstep: bool = False,
        curve: CurveServer | None = None,
        status_interval: float = STATUS_INTERVAL_S,
        send_frames: bool = False,
        jpeg_quality: int = 80,
        insecure: bool = False,
    ) -> None:
        if mask_encoding not in wire.MASK_ENCODINGS:
            raise ValueError(f"mask_encoding must be one of {wire.MASK_ENCODINGS}, got {mask_encoding!r}")
        self.stream_id = stream_id
        self.mask_encoding = mask_encoding
        self.lockstep = lockstep
        self.status_interval = status_interval
        self.send_frames, self.jpeg_quality = send_frames, jpeg_quality
        """With send_frames, each frame message also carries the frame as a JPEG (for viewers)."""
        self.sent = self.dropped = 0
        """Frame messages handed to ZeroMQ / refused by it (refusals only happen with lockstep)."""
        self.status_sent = self.status_dropped = 0
        self.last_seq: int | None = None
        self._last_status_at: float | None = None
        self._last_state: str | None = None
        # A context of our own: a CURVE authenticator is one per context, and closing
        # the publisher must not depend on what else shares a context.
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB if lockstep else zmq.PUB)
        self._auth = None
        try:
            self._socket.linger = 0
            self._socket.sndhwm = sndhwm
            # Small kernel buffers too: otherwise a slow subscriber's backlog hides in TCP
            # buffers (megabytes: seconds of stale masks) instead of being dropped at the HWM.
            self._socket.sndbuf = wire.KERNEL_BUFFER_BYTES
            if lockstep:
                self._socket.xpub_nodrop = True
            self._auth = bind_server(self._context, self._socket, addr, curve, insecure)
        except BaseException:
            self.close()
            raise
        self.addr: str = self._socket.last_endpoint.decode()
        """The bound endpoint, with the real port when ``addr`` asked for a random one (``:*``)."""

    def publish(self, captured: CapturedFrame, result: FrameResult, times: StageTimes) -> bool:
        """Encode and send one frame; sets ``times.publish`` just before sending.

        Returns False if the message was dropped (only possible with ``lockstep``).
        Never blocks: encoding takes a few ms per 1080p mask, sending is a queue push.
        """
        height, width = captured.frame.rgb.shape[:2]
        payloads = wire.mask_payloads(result, height, width, self.mask_encoding)
        if self.send_frames:
            payloads.append(wire.encode_image(captured.frame.rgb, self.jpeg_quality))
        times.publish = time.monotonic_ns()
        header = wire.frame_header(captured, result, times, self.stream_id, self.mask_encoding, self.send_frames)
        if self._send([wire.TOPIC_FRAME, header, *payloads]):
            self.sent += 1
            self.last_seq = captured.seq
            return True
        self.dropped += 1
        return False

    def send_status(
        self, state: str, reason: str = "", counters: Counters | None = None, objects: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Send a status message now; False if it was dropped."""
        parts = wire.encode_status(self.stream_id, state, reason, counters, objects, self.last_seq)
        self._last_status_at, self._last_state = time.monotonic(), state
        ok = self._send(parts)
        self.status_sent += ok
        self.status_dropped += not ok
        return ok

    def tick(
        self, state: str, reason: str = "", counters: Counters | None = None, objects: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Call often (every loop iteration): sends status once per ``status_interval``, and at
        once when ``state`` differs from the last status sent. True if it sent one."""
        due = (
            self._last_status_at is None
            or state != self._last_state
            or time.monotonic() - self._last_status_at >= self.status_interval
        )
        return self.send_status(state, reason, counters, objects) if due else False

    def close(self, flush: float = 0.1) -> None:
        """Close the socket and the context, waiting at most ``flush`` seconds for queued
        messages (typically the final ``stopped`` status) to go out; the rest is discarded."""
        if self._socket is not None:
            self._socket.close(linger=int(flush * 1000))
            self._socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, parts: list[bytes]) -> bool:
        if self._socket is None:
            raise RuntimeError("the publisher is closed")
        if self.lockstep:
            self._discard_subscriptions()
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def _discard_subscriptions(self) -> None:
        """An XPUB socket queues (un)subscription notices for us to read; we do not need them."""
        while True:
            try:
                self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
