"""The capture thread: reads a source, stamps each frame and hands it to the tracking thread
through a one-frame slot; reconnects live sources that end, fail or stall.

Live sources (and paced files) never queue: the newest frame replaces one not yet taken,
and the replaced frame is counted as stale. Files and folders go frame by frame and lose
nothing. Whatever ends the capture thread reaches the consumer: the end of the stream as
``finished``, an exception raised again from ``get()``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from streamtrack.live.sources import Source, redact
from streamtrack.live.types import CapturedFrame, RawFrame
from streamtrack.video_file import SourceError

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, str], None]
"""on_status(state, detail): state is "running" or "reconnecting"; detail is for people, redacted."""


class FrameSlot:
    """Hands frames from one producer thread to one consumer thread, holding at most one.

    live=True: ``put`` never blocks; a frame not yet taken is replaced and counted in
    ``dropped_stale``. live=False: ``put`` waits until the previous frame was taken (or the
    slot is closed), so nothing is lost. ``live`` may change between frames.
    """

    def __init__(self, live: bool = True) -> None:
        self._cond = threading.Condition()
        self._live = live
        self._frame: CapturedFrame | None = None
        self._ended = False
        self._closed = False
        self._error: BaseException | None = None
        self.dropped_stale = 0

    @property
    def live(self) -> bool:
        return self._live

    @live.setter
    def live(self, value: bool) -> None:
        with self._cond:
            self._live = value
            self._cond.notify_all()

    def put(self, frame: CapturedFrame) -> bool:
        """Producer: offer a frame. False (frame discarded) once the slot is closed or ended."""
        with self._cond:
            while not self._live and self._frame is not None and not (self._closed or self._ended):
                self._cond.wait()
            if self._closed or self._ended:
                return False
            if self._frame is not None:
                self.dropped_stale += 1
            self._frame = frame
            self._cond.notify_all()
            return True

    def end(self, error: BaseException | None = None) -> None:
        """Producer: no more frames; ``error`` (if any) is raised to the consumer after the last frame."""
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        """Owner: stop. Wakes a producer blocked in ``put`` and a consumer blocked in ``get``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """Consumer: the frame waiting or the next one, within ``timeout`` seconds (None = no limit).

        None means no frame yet, or none ever again when ``finished`` is True. Raises the
        producer's error once its frames are taken.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not (self._ended or self._closed):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            if frame is None and self._error is not None:
                raise self._error
            return frame

    @property
    def finished(self) -> bool:
        """True once the stream has ended (or the slot was closed) and its last frame was taken."""
        with self._cond:
            return (self._ended or self._closed) and self._frame is None


@dataclass(frozen=True)
class CaptureCounters:
    """A consistent snapshot of the capture thread's counters and state."""

    captured: int
    """Frames read and stamped (the next frame's seq)."""
    dropped_stale: int
    """Frames replaced in the slot before the consumer took them."""
    reconnects: int
    """Successful reconnections of a live source."""
    damaged_packets: int
    """Undecodable packets the live sources skipped, summed over every session."""
    session: str | None
    """Current source session id (uuid4 hex), None before the first open."""
    state: str
    """"starting", "running", "reconnecting" or "ended"."""


class _Pacer:
    """Releases frames of a file at their presentation times, against the monotonic clock.

    Times are ``source_ts`` when the source gives them, else ``i / fps``; with neither, no waiting.
    """

    def __init__(self, fps: float | None) -> None:
        self._fps = fps
        self._count = 0
        self._origin: tuple[float, float] | None = None  # (monotonic s, media s) of the first frame

    def wait(self, raw: RawFrame, stop: threading.Event) -> bool:
        """Sleep until ``raw`` is due; False if ``stop`` was set meanwhile."""
        ts = raw.source_ts if raw.source_ts is not None else (self._count / self._fps if self._fps else None)
        self._count += 1
        if ts is None:
            return not stop.is_set()
        if self._origin is None:
            self._origin = (time.monotonic(), ts)
            return not stop.is_set()
        delay = self._origin[0] + (ts - self._origin[1]) - time.monotonic()
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


class Capture:
    """Reads frames from ``source_factory()`` on a daemon thread and hands them over, stamped.

    Each frame gets a pipeline-wide ``seq`` (+1 per frame, across reconnects), the session id
    of the source connection (a fresh uuid4 hex per successful open) and the host clocks
    (``time.monotonic_ns()``, ``time.time_ns()``) when it was read; for paced files, when it
    was released.

    - ``pace=True``: a file or folder plays at its native rate and the newest frame wins, as live.
    - Live sources with ``reconnect=True``: the end of the stream, a read error or a stall is a
      disconnect. The source is closed, ``on_status("reconnecting", ...)`` gives the reason,
      the attempt number and the delay, and a new source from the factory is opened after
      ``backoff[0]`` seconds, doubling up to ``backoff[1]`` per failed attempt. Success announces
      ``("running", ...)`` with the new session. Opening the first source is not retried: an error
      there (such as a missing camera) is a mistake to report, not an outage to wait out.
    - Any other error ends the capture thread and is raised from ``get()``.

    ``on_status`` runs on the capture thread and must return quickly.
    """

    def __init__(self, source_factory: Callable[[], Source], *, pace: bool = False, reconnect: bool = True,
                 backoff: tuple[float, float] = (0.5, 8.0), on_status: StatusCallback | None = None) -> None:
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"backoff {backoff} must be (first, cap) seconds with 0 < first <= cap")
        self._factory = source_factory
        self._pace = pace
        self._reconnect = reconnect
        self._backoff = backoff
        self._on_status = on_status
        self._slot = FrameSlot()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the fields below
        self._source: Source | None = None
        self._session: str | None = None
        self._state = "starting"
        self._seq = 0
        self._reconnects = 0
        self._damaged = 0
        self._thread = threading.Thread(target=self._run, name="streamtrack-capture", daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest frame (live) or the next frame (files); see ``FrameSlot.get``."""
        return self._slot.get(timeout)

    @property
    def finished(self) -> bool:
        """True when no frame will ever come again: the stream ended, failed or was stopped."""
        return self._slot.finished

    @property
    def counters(self) -> CaptureCounters:
        """A snapshot, safe to read from any thread."""
        with self._lock:
            return CaptureCounters(self._seq, self._slot.dropped_stale, self._reconnects, self._damaged, self._session,
                                   self._state)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop capturing and join the thread, within ``timeout`` seconds.

        The source is closed from this thread to unblock a read. A read stuck inside FFmpeg or
        V4L2 only returns at its own timeout: then this returns False after ``timeout``, having
        detached the thread, which delivers nothing more and closes the source when it wakes.
        """
        self._stop.set()
        self._slot.close()
        with self._lock:
            source = self._source
        if source is not None:
            source.close()
        if self._thread.ident is None or self._thread is threading.current_thread():
            return True  # never started, or stop() from on_status: the thread ends on its own
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("capture: %s did not return within %.1f s of stop; its thread ends when it does",
                        source.describe() if source else "the source", timeout)
            return False
        return True

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            source = self._open(self._factory(), reconnect=False)
            while source is not None:
                try:
                    reason = self._pump(source)
                finally:
                    self._drop(source)
                source = None if reason is None else self._reconnect_after(reason)
        except BaseException as e:  # noqa: BLE001 -- whatever it is, the consumer must learn of it
            error = e
        finally:
            with self._lock:
                self._state = "ended"
            self._slot.end(error)

    def _open(self, source: Source, *, reconnect: bool) -> Source | None:
        """Open ``source`` and start a session; None if stopped meanwhile."""
        with self._lock:
            self._source = source  # from here on stop() closes it, even mid-open
        if self._stop.is_set():
            self._drop(source)
            return None
        try:
            source.open()
        except BaseException:
            self._drop(source)
            raise
        if self._stop.is_set():
            self._drop(source)
            return None
        session = uuid.uuid4().hex
        with self._lock:
            self._session = session
            self._reconnects += int(reconnect)
        self._slot.live = source.live or self._pace
        self._announce("running", f"{source.describe()}: session {session}")
        return source

    def _drop(self, source: Source) -> None:
        with self._lock:
            if self._source is source:
                self._source = None
        source.close()

    def _pump(self, source: Source) -> str | None:
        """Read until stopped or the stream ends; the reason to reconnect, or None to finish."""
        reconnects = self._reconnect and source.live
        pacer = _Pacer(source.fps) if self._pace and not source.live else None
        counted = 0  # of this source's damaged packets
        while not self._stop.is_set():
            try:
                raw = source.read()
            except SourceError as e:
                if self._stop.is_set():
                    return None
                if reconnects:
                    return str(e)
                raise
            if source.damaged_packets != counted:
                with self._lock:
                    self._damaged += source.damaged_packets - counted
                counted = source.damaged_packets
            if self._stop.is_set():
                return None  # a read that returned after stop() delivers nothing
            if raw is None:
                return f"{source.describe()}: end of stream" if reconnects else None
            if pacer is not None and not pacer.wait(raw, self._stop):
                return None
            if not self._slot.put(self._stamp(raw)):
                return None
        return None

    def _stamp(self, raw: RawFrame) -> CapturedFrame:
        t_mono, t_wall = time.monotonic_ns(), time.time_ns()
        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
            session = self._session or ""
        return CapturedFrame(seq, session, raw, t_mono, t_wall)

    def _reconnect_after(self, reason: str) -> Source | None:
        """Reopen with capped exponential backoff until it works; None if stopped first."""
        delay, attempt = self._backoff[0], 0
        while True:
            attempt += 1
            self._announce("reconnecting", f"attempt {attempt} in {delay:g} s: {reason}")
            if self._stop.wait(delay):
                return None
            try:
                return self._open(self._factory(), reconnect=True)
            except SourceError as e:
                reason = str(e)
                delay = min(2 * delay, self._backoff[1])

    def _announce(self, state: str, detail: str) -> None:
        detail = redact(detail)
        with self._lock:
            self._state = state
        log.info("capture %s: %s", state, detail)
        if self._on_status is not None:
            self._on_status(state, detail)
