"""The live pipeline: capture thread -> tracking thread -> ZeroMQ publisher, plus control.

Threads:
- capture (``Capture``): reads the source, stamps frames, hands the newest one over;
- tracking (this module): owns the tracker, the PUB socket and the control socket;
  it takes the newest frame, tracks it, publishes it, answers control requests
  between frames and sends status once a second.

:meth:`Pipeline.run` tracks on the calling thread, as ``streamtrack run`` does;
:meth:`Pipeline.start` tracks on a thread of its own and returns, for callers that
need their thread. Tracking on the thread that already ran the model is faster on
the CPU. Torch's CPU kernels split their work over an OpenMP team of threads, one
team for each thread that calls them. Once two threads have teams, the OpenMP
runtime most likely counts more threads than cores, stops keeping its idle threads
spinning, and every split pays to wake them. On the 2-core machine, nano's ``track`` took
59-75 ms a frame on a second thread and 33-47 ms on the thread that loaded the model
(``docs/speed.md``, "The tracking thread").
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamtrack.live.capture import Capture
from streamtrack.live.control import ControlRequest, ControlServer, RequestError
from streamtrack.live.publisher import CurveServer, Publisher
from streamtrack.live.sources import Source
from streamtrack.live.types import CapturedFrame, Counters, StageTimes
from streamtrack.tracker import FrameResult, Prompt, Tracker

FRAME_WAIT_S = 0.05
"""How long the tracking thread waits for a frame before serving control and status again."""


@dataclass(frozen=True)
class PipelineConfig:
    pub_addr: str = "tcp://127.0.0.1:5555"
    control_addr: str = "tcp://127.0.0.1:5556"
    stream_id: str = "streamtrack"
    mask_encoding: str = "rle"
    """"rle" (COCO RLE) or "bits" (packed bits)."""
    send_frames: bool = False
    """Also publish each frame as JPEG, for viewers."""
    curve: CurveServer | None = None
    """CURVE keys for both sockets; required to bind anywhere but loopback unless ``insecure_bind``."""
    insecure_bind: bool = False
    """Allow non-loopback addresses without CURVE (logged as a warning)."""
    pace: bool = False
    """Play files and folders at their native rate (newest frame wins) instead of frame by frame."""
    reconnect: bool = True
    max_frames: int | None = None
    """Stop after this many tracked frames (None: until the source ends or stop())."""


class Pipeline:
    """Run a tracker over a source and publish every result.

    ``prompts`` maps tracker frame indices to prompts applied on those frames (the
    command line's --box/--point/--prompts); live prompts come over the control socket.
    """

    def __init__(
        self,
        tracker: Tracker,
        source_factory: Callable[[], Source],
        config: PipelineConfig = PipelineConfig(),
        prompts: dict[int, list[Prompt]] | None = None,
    ) -> None:
        self.tracker = tracker
        self.config = config
        self.prompts = prompts or {}
        self.counters = Counters()
        self.capture = Capture(source_factory, pace=config.pace, reconnect=config.reconnect, on_status=self._on_status)
        self.pub_addr: str | None = None
        self.control_addr: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._status_lock = threading.Lock()
        self._state, self._reason = "starting", "opening the source"
        self._last: tuple[CapturedFrame, FrameResult] | None = None
        self._thread = threading.Thread(target=self._track_loop, name="streamtrack-tracking", daemon=True)

    # ------------------------------------------------------------------ owner

    def run(self, on_ready: Callable[[], None] | None = None, stop_timeout: float = 2.0) -> None:
        """Track on the calling thread until the source ends, ``max_frames`` is reached or
        :meth:`request_stop` is called (from another thread or a signal handler); then stop
        capture. Re-raises the error that ended tracking as RuntimeError, and a
        KeyboardInterrupt as it is.

        ``on_ready`` is called on this thread once the sockets are bound (their addresses are
        then set) and capture has started, before the first frame. ``stop_timeout``: how long
        stopping capture may wait for a source read in progress (see ``Capture.stop``).
        """
        def ready() -> None:
            self.capture.start()
            if on_ready is not None:
                on_ready()

        try:
            self._track_loop(ready)
        finally:
            self.capture.stop(stop_timeout)
        if isinstance(self._error, KeyboardInterrupt):
            err, self._error = self._error, None
            raise err
        self._raise_if_failed()

    def start(self, timeout: float = 10.0) -> None:
        """Start both threads; returns once the sockets are bound (their addresses are then set).

        On the CPU, prefer :meth:`run` on the thread that loaded the model (see the module
        docstring): a second thread running the model makes each frame slower.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the tracking thread did not start")
        self._raise_if_failed()
        self.capture.start()

    def wait(self, timeout: float | None = None) -> bool:
        """After start(): wait for the pipeline to end; True if it has. Re-raises the error that ended it."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._raise_if_failed()
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        """Ask tracking to end after the frame in progress; returns at once (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capture and tracking. A frame in progress is finished if it fits in ``timeout``."""
        deadline = time.monotonic() + timeout
        self.request_stop()
        self.capture.stop()
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"pipeline stopped: {type(err).__name__}: {err}") from err

    def _on_status(self, state: str, reason: str) -> None:
        """Called by the capture thread."""
        with self._status_lock:
            self._state, self._reason = state, reason

    def status(self) -> tuple[str, str]:
        with self._status_lock:
            return self._state, self._reason

    # --------------------------------------------------------------- tracking

    def _track_loop(self, on_ready: Callable[[], None] | None = None) -> None:
        publisher = control = None
        try:
            publisher = Publisher(self.config.pub_addr, stream_id=self.config.stream_id,
                                  mask_encoding=self.config.mask_encoding, send_frames=self.config.send_frames,
                                  curve=self.config.curve, insecure=self.config.insecure_bind)
            control = ControlServer(self.config.control_addr, curve=self.config.curve, insecure=self.config.insecure_bind)
            self.pub_addr, self.control_addr = publisher.addr, control.addr
            self._ready.set()
            if on_ready is not None:
                on_ready()
            self._on_status("stopped", self._loop(publisher, control))
        except BaseException as e:  # noqa: BLE001 - reported to the owner, who re-raises
            self._error = e
            self._on_status("stopped", f"error: {type(e).__name__}: {e}")
        finally:
            self._ready.set()
            if publisher is not None:
                state, reason = self.status()
                self._sync_counters(control)
                publisher.send_status(state, reason, self.counters, self._objects())
                publisher.close()
            if control is not None:
                control.close()

    def _loop(self, publisher: Publisher, control: ControlServer) -> str:
        """Track until told to stop; returns why it stopped."""
        while not self._stop.is_set():
            state, reason = self.status()
            self._sync_counters(control)
            publisher.tick(state, reason, self.counters, self._objects())
            control.poll(self._handle)
            captured = self.capture.get(FRAME_WAIT_S)
            if captured is None:
                if self.capture.finished:
                    return "the source ended"
                continue
            times = StageTimes(capture=captured.t_capture_ns)
            times.mark("dequeue")
            result = self.tracker.track(captured.frame.rgb, times)
            for prompt in self.prompts.get(self.tracker.frame_index, []):
                result = self.tracker.add_prompt(prompt)
            self._last = (captured, result)
            self.counters.tracked += 1
            # A PUB socket drops for a slow subscriber silently (subscribers see seq gaps);
            # only a lockstep publisher refuses, and counts it.
            publisher.publish(captured, result, times)
            self.counters.published, self.counters.dropped_publish = publisher.sent, publisher.dropped
            if self.config.max_frames is not None and self.counters.tracked >= self.config.max_frames:
                return f"tracked max_frames={self.config.max_frames} frames"
        return "stopped by request"

    def _sync_counters(self, control: ControlServer | None) -> None:
        cap = self.capture.counters
        self.counters.captured = cap.captured
        self.counters.dropped_stale = cap.dropped_stale
        self.counters.reconnects = cap.reconnects
        self.counters.damaged_packets = cap.damaged_packets
        if control is not None:
            self.counters.control_requests, self.counters.control_errors = control.requests, control.errors

    def _objects(self) -> list[dict]:
        if self._last is None:
            return []
        return [_object_summary(o) for o in self._last[1].objects]

    # ---------------------------------------------------------------- control

    def _handle(self, req: ControlRequest) -> dict:
        """Run one control command on the tracking thread."""
        tracker = self.tracker
        if req.cmd in ("add", "correct"):
            exists = req.obj_id in tracker.object_ids
            if req.cmd == "add" and exists:
                raise RequestError(f"object {req.obj_id} exists; use cmd 'correct' to change it")
            if req.cmd == "correct" and not exists:
                raise RequestError(f"no object {req.obj_id}; tracked: {tracker.object_ids}")
            if self._last is None:
                raise RequestError("no frame has been tracked yet; try again once frames arrive")
            captured = self._last[0]
            result = tracker.add_prompt(req.prompt)
            self._last = (captured, result)
            reply = {"applied_to_seq": captured.seq, "object": _object_summary(result.by_id()[req.obj_id])}
            if req.seq is not None and req.seq != captured.seq:
                reply["drawn_on_seq"] = req.seq
            return reply
        if req.cmd == "remove":
            tracker.remove_object(req.obj_id)
            if self._last is not None:
                captured, result = self._last
                kept = [o for o in result.objects if o.obj_id != req.obj_id]
                self._last = (captured, dataclasses.replace(result, objects=kept))
            return {"removed": req.obj_id}
        if req.cmd == "reset":
            tracker.reset()
            self._last = None
            return {"reset": True}
        if req.cmd == "list":
            return {"objects": self._objects()}
        if req.cmd == "state":
            state, reason = self.status()
            last = self._last[0] if self._last else None
            return {
                "state": state, "reason": reason, "stream": self.config.stream_id,
                "seq": last.seq if last else None, "session": last.session if last else None,
                "image": None if last is None else {"width": last.frame.rgb.shape[1], "height": last.frame.rgb.shape[0]},
                "objects": self._objects(),
            }
        if req.cmd == "stats":
            return {"counters": dataclasses.asdict(self.counters)}
        raise RequestError(f"unknown cmd {req.cmd!r}")


def _object_summary(o) -> dict:
    return {"id": o.obj_id, "score": round(o.object_score, 5), "visible": o.visible, "iou": round(o.iou, 5),
            "bbox": list(o.bbox) if o.bbox else None, "area": o.area}
