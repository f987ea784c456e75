"""Frame sources of the live pipeline behind one small interface: webcams, network streams and
video files (PyAV), image folders, and the synthetic source; ``open_source`` picks one from a spec.

Every message, exception and log line names a source through ``redact``, so credentials in
URLs never leave this module.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import cv2

from streamtrack.live.types import RawFrame
from streamtrack.video_file import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "srt")
"""URL schemes read as live streams. HLS is an http(s) URL to an .m3u8 playlist."""

_SECRET_QUERY_KEYS = re.compile(r"(?i)^(pass(word)?|pwd|token|key|secret|auth|signature|sig|user(name)?)$")
_URL_TOKEN = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://\S+")


class Source(ABC):
    """A stream of RGB frames.

    A source is opened once; reconnecting means making a new one. ``close()`` is idempotent and
    may be called from another thread while ``open()`` or ``read()`` runs: that call then
    returns (``None``) as soon as the underlying library lets it.
    """

    live: bool = False
    """True: frames arrive in real time and the newest wins. False (files, folders): every frame counts."""
    fps: float | None = None
    """Native frame rate in frames/s, when known (after ``open()`` for most sources)."""
    damaged_packets: int = 0
    """Undecodable packets a live source skipped so far (the capture totals them across reconnects)."""

    @abstractmethod
    def open(self) -> None:
        """Connect or open; raises SourceError with a reason a user can act on."""

    @abstractmethod
    def read(self) -> RawFrame | None:
        """The next frame, or None at the end of the stream (or once closed).

        Raises SourceError when reading fails or a live source stalls."""

    @abstractmethod
    def close(self) -> None:
        """Release the source. Idempotent; safe from another thread (see the class doc)."""

    @abstractmethod
    def describe(self) -> str:
        """A human-readable name, with credentials redacted."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced.

    ``rtsp://user:pw@cam/live?token=x`` -> ``rtsp://***@cam/live?token=***``. When in doubt it
    hides too much: everything before a URL's last ``@``, so a password with unescaped ``/``,
    ``?`` or ``#`` is hidden too.
    """
    return _URL_TOKEN.sub(lambda m: _redact_url(m.group(0)), text)


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    if at >= 0:
        rest = "***@" + rest[at + 1:]
    base, q, tail = rest.partition("?")
    if q:
        query, hash_, fragment = tail.partition("#")
        tail = "&".join(_redact_pair(p) for p in query.split("&")) + hash_ + fragment
    return f"{scheme}://{base}{q}{tail}"


def _redact_pair(pair: str) -> str:
    key, eq, _ = pair.partition("=")
    return f"{key}=***" if eq and _SECRET_QUERY_KEYS.match(key) else pair


def is_network_url(spec: str) -> bool:
    """True for ``rtsp://``, ``http(s)://`` and the other schemes in NETWORK_SCHEMES."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


class _CloseGuard:
    """Lets ``close()`` come from another thread while ``open()``/``read()`` run inside a C library
    (FFmpeg, V4L2) whose handle must not be released under them: whichever thread finishes last
    releases the handle, exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._closing = False
        self._released = False

    @contextmanager
    def active(self, release: Callable[[], None]) -> Iterator[bool]:
        """Marks a call as running; yields False if the source is already closed."""
        with self._lock:
            ok = not self._closing
            self._busy = ok
        try:
            yield ok
        finally:
            if ok:
                with self._lock:
                    self._busy = False
                    now = self._take_release()
                if now:
                    release()

    def close(self, release: Callable[[], None]) -> None:
        with self._lock:
            self._closing = True
            now = not self._busy and self._take_release()
        if now:
            release()

    def _take_release(self) -> bool:
        if self._closing and not self._released:
            self._released = True
            return True
        return False


class WebcamSource(Source):
    """A V4L2 camera by index (``/dev/video<index>``), through OpenCV.

    ``source_ts`` is the driver's buffer timestamp in seconds when it gives one.
    """

    live = True

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> None:
        self.index = int(index)
        self._want = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
        self._cap: cv2.VideoCapture | None = None
        self._guard = _CloseGuard()

    def describe(self) -> str:
        return f"camera {self.index} (V4L2)"

    def open(self) -> None:
        with self._guard.active(self._release) as ok:
            if not ok:
                return
            cap = cv2.VideoCapture(self.index, cv2.CAP_V4L2)
            if not cap.isOpened():
                cap.release()
                device = Path(f"/dev/video{self.index}")
                why = ("it exists but cannot be opened: busy, no permission, or not a capture device"
                       if device.exists() else "it does not exist: no V4L2 camera with that index")
                raise SourceError(f"camera {self.index} could not be opened ({device}: {why})")
            for prop, value in self._want.items():
                if value is not None:
                    cap.set(prop, float(value))
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue is latency: keep one buffer
            self.fps = cap.get(cv2.CAP_PROP_FPS) or None
            self._cap = cap

    def read(self) -> RawFrame | None:
        with self._guard.active(self._release) as ok:
            if not ok or self._cap is None:
                return None
            got, bgr = self._cap.read()
            if not got:
                raise SourceError(f"camera {self.index}: no frame (unplugged or stalled)")
            msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            return RawFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), msec / 1000.0 if msec > 0 else None)

    def close(self) -> None:
        self._guard.close(self._release)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class AVSource(Source):
    """Network streams (rtsp, rtsps, rtmp, http(s), HLS; live) and video files (not live) via PyAV.

    Network streams get FFmpeg's low-latency options (``flags=low_delay``, a short stream analysis,
    ``rtsp_transport``) and open/read timeouts: once ``read_timeout`` seconds pass with no data,
    the read raises SourceError (a stall), after the frames of a packet that came late, if any.
    ``ffmpeg_options`` adds or overrides FFmpeg options (string values). ``source_ts`` is the
    frame's pts x time base, in seconds (None where FFmpeg gives no pts, as for the first frame
    of an RTSP session, decoded from packets read while the stream was opening).
    """

    MAX_BAD_PACKETS = 25
    """Consecutive undecodable packets a live stream may have before it counts as broken."""
    ANALYZE_SECONDS = 0.2
    """How long FFmpeg reads a live stream to learn its parameters when it opens (its default is 5 s,
    which only delays the first frame). The packets it reads are kept and decoded: they start with
    the keyframe the stream began with. (``fflags=nobuffer`` would drop them, and the first frame
    would then wait for the next keyframe, a whole keyframe interval.)"""
    STALL_SHARE = 0.9
    """A live read that waited this share of ``read_timeout`` for data counts as a stall (FFmpeg's
    socket timeout fired in it)."""

    def __init__(self, url_or_path: str | Path, *, rtsp_transport: str = "tcp", open_timeout: float = 10.0,
                 read_timeout: float = 5.0, ffmpeg_options: Mapping[str, str] | None = None) -> None:
        self.target = str(url_or_path)
        self.live = is_network_url(self.target)
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.options = self._ffmpeg_options(rtsp_transport) | dict(ffmpeg_options or {})
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._guard = _CloseGuard()
        self.damaged_packets = 0
        """Undecodable packets of a live stream skipped so far (each costs its frame)."""

    def _ffmpeg_options(self, rtsp_transport: str) -> dict[str, str]:
        if not self.live:
            return {}
        options = {"flags": "low_delay", "analyzeduration": str(int(self.ANALYZE_SECONDS * 1e6))}
        micros = str(int(self.read_timeout * 1e6))
        if self.target.lower().startswith(("rtsp://", "rtsps://")):
            # FFmpeg >= 5: `timeout` is the RTSP socket timeout in microseconds (`stimeout` is gone).
            options |= {"rtsp_transport": rtsp_transport, "timeout": micros}
        else:
            options["rw_timeout"] = micros
        return options

    def describe(self) -> str:
        return redact(self.target)

    def open(self) -> None:
        with self._guard.active(self._release) as ok:
            if not ok:
                return
            try:
                container = av.open(self.target, options=self.options,
                                    timeout=(self.open_timeout, self.read_timeout) if self.live else None)
            except av.FFmpegError as e:
                # `from None`: the FFmpeg error's text names the URL, credentials included.
                raise SourceError(f"{self.describe()}: cannot be opened ({_why(e)})") from None
            if not container.streams.video:
                container.close()
                raise SourceError(f"{self.describe()}: has no video stream")
            stream = container.streams.video[0]
            # Frame threading holds frames back (one per thread); slice threading does not.
            stream.thread_type = "SLICE" if self.live else "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            self._container, self._frames = container, self._decode(container, stream)

    def read(self) -> RawFrame | None:
        with self._guard.active(self._release) as ok:
            if not ok:
                return None
            if self._frames is None:
                raise SourceError(f"{self.describe()}: read before open")
            t0 = time.monotonic()
            try:
                vf = next(self._frames, None)
            except _Stalled as e:
                raise SourceError(f"{self.describe()}: stalled, no data for {e.seconds:.1f} s") from None
            except av.FFmpegError as e:
                waited = time.monotonic() - t0
                if self._is_stall(waited):
                    raise SourceError(f"{self.describe()}: stalled, no data for {waited:.1f} s") from None
                raise SourceError(f"{self.describe()}: read failed ({_why(e)})") from None
            if vf is None:
                return None
            return RawFrame(vf.to_ndarray(format="rgb24"), None if vf.time is None else float(vf.time))

    def _is_stall(self, waited: float) -> bool:
        return self.live and waited >= self.STALL_SHARE * self.read_timeout

    def _decode(self, container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
        """The stream's frames. Raises :class:`_Stalled` once the frames of a packet that took a
        read timeout to come are out: FFmpeg answers its first timeout by flushing the parser,
        which hands back the packet it held, and reports the timeout only a second timeout later."""
        bad = 0
        packets = container.demux(stream)
        while True:
            asked = time.monotonic()
            packet = next(packets, None)
            if packet is None:
                return
            waited = time.monotonic() - asked  # in FFmpeg, waiting for data (not in our caller)
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                # A damaged packet of a live stream costs its frame, not the connection.
                bad += 1
                if not self.live or bad > self.MAX_BAD_PACKETS:
                    raise
                self.damaged_packets += 1
                log.warning("%s: skipped an undecodable packet (%d so far)", self.describe(), self.damaged_packets)
                frames = []
            else:
                bad = 0
            yield from frames
            if self._is_stall(waited):
                raise _Stalled(waited)

    def close(self) -> None:
        self._guard.close(self._release)

    def _release(self) -> None:
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None


class _Stalled(Exception):
    """Raised inside :meth:`AVSource._decode` once the frames of a late packet are out."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def _why(error: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name (which may be a URL with credentials)."""
    return redact(error.strerror or type(error).__name__)


class FolderSource(Source):
    """A folder of images (sorted by number when all names are numbers), not live.

    With ``fps`` given, frame i has ``source_ts = i / fps`` (so it can be paced).
    """

    live = False

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = Path(path)
        self.fps = fps
        self._frames: Iterator[Frame] | None = None

    def describe(self) -> str:
        return f"folder {self.path}"

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"source {self.path}: not a folder")
        self._frames = iter(FrameSource(self.path))

    def read(self) -> RawFrame | None:
        frames = self._frames  # close() from another thread only drops the reference
        if frames is None:
            return None
        f = next(frames, None)
        if f is None:
            return None
        return RawFrame(f.rgb, f.index / self.fps if self.fps else None)

    def close(self) -> None:
        self._frames = None


def open_source(spec: str, **options: Any) -> Source:
    """The source a command-line spec names, not yet opened (``Capture`` opens it).

    - ``"0"``, ``"1"``, ...: a V4L2 webcam (options: width, height, fps);
    - ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://`` (incl. HLS) ...: a live AVSource
      (options: rtsp_transport, open_timeout, read_timeout, ffmpeg_options);
    - an existing video file: an AVSource that is not live; a folder: a FolderSource (option: fps);
    - ``"synthetic"`` or ``"synthetic:width=320,height=240,live=false,..."``: a SyntheticSource
      (options: its constructor's arguments, which override the spec's).

    Options whose value is None are ignored; others must apply to the chosen source.
    """
    from streamtrack.live.synthetic import SyntheticSource, parse_synthetic_spec

    given = {k: v for k, v in options.items() if v is not None}
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _build(SyntheticSource, "synthetic", parse_synthetic_spec(spec.partition(":")[2]) | given)
    if spec.isdigit():
        return _build(WebcamSource, "webcam", {"index": int(spec)} | given)
    if "://" in spec:
        if not is_network_url(spec):
            raise SourceError(f"source {redact(spec)}: unsupported URL scheme; use one of "
                              f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}")
        return _build(AVSource, "stream", {"url_or_path": spec} | given)
    path = Path(spec)
    if path.is_dir():
        return _build(FolderSource, "folder", {"path": path} | given)
    if path.is_file():
        return _build(AVSource, "video file", {"url_or_path": path} | given)
    raise SourceError(f"source {redact(spec)!r}: no such file or folder. A source is a camera index (0, 1, ...), "
                      "a URL (rtsp://, rtmp://, http(s)://, ...), a video file, a folder of images, "
                      "or synthetic[:key=value,...]")


def _build(cls: type[Source], kind: str, kwargs: dict[str, Any]) -> Source:
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise SourceError(f"option {', '.join(unknown)} does not apply to a {kind} source "
                          f"(it takes: {', '.join(sorted(accepted))})")
    return cls(**kwargs)
