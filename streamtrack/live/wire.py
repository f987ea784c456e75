"""Version 1 of the wire format: multipart ZeroMQ messages [topic, header, payload...].

``docs/wire-format.md`` is the specification; this module is its reference implementation.
Headers are UTF-8 JSON objects; payloads are raw bytes (one mask each). Nothing received
is ever unpickled or evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from streamtrack.live import rle
from streamtrack.live.types import CapturedFrame, Counters, StageTimes

if TYPE_CHECKING:  # importing the tracker package would import torch, which subscribers never need
    from streamtrack.tracker.types import FrameResult

VERSION = 1
TOPIC_FRAME = b"frame"
TOPIC_STATUS = b"status"
MASK_ENCODINGS = ("rle", "bits")
STATES = ("starting", "running", "stalled", "reconnecting", "stopped")
STAGES = tuple(f.name for f in dataclasses.fields(StageTimes))
"""capture, dequeue, preprocess, image_encoder, memory_attention, decoder, memory_encoder, publish."""


KERNEL_BUFFER_BYTES = 64 * 1024
"""SO_SNDBUF of the publisher's socket and SO_RCVBUF of subscribers: a slow subscriber's
backlog stays small (dropped at the high-water mark) instead of hiding in TCP buffers."""


class WireError(ValueError):
    """A received message is not valid version-1 wire format; the message says why."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object's entry in a frame header."""

    id: int
    score: float | None
    """Object-score logit (> 0: visible); None if it was not finite."""
    visible: bool
    bbox: tuple[int, int, int, int] | None
    """(x0, y0, x1, y1) inclusive pixel bounds, or None when the mask is empty."""
    area: int
    """Mask pixels."""
    iou: float | None
    """Predicted IoU of the mask; None if it was not finite."""
    payload: int
    """Index of this object's mask among the message's payload parts (part 2 + payload)."""


@dataclass
class FrameMessage:
    """A decoded ``frame`` message: header fields plus masks decoded on first use."""

    kind: ClassVar[str] = "frame"
    stream: str
    seq: int
    session: str
    frame_index: int
    source_ts: float | None
    """Source presentation time, seconds; None for sources without timestamps."""
    t_capture_ns: int
    """Monotonic clock of the publishing host when the frame was read."""
    t_capture_wall_ns: int
    """Wall clock (Unix epoch, ns) when the frame was read."""
    t_publish_wall_ns: int
    stages_ns: dict[str, int]
    """Monotonic timestamps of the pipeline stages (0 = not reached)."""
    latency_ms: dict[str, float]
    """Duration of each reached stage since the previous reached one, ms."""
    width: int
    height: int
    mask_encoding: str
    objects: list[ObjectInfo]
    image_payload: int | None
    """Index of the JPEG of the frame itself among the payloads, when the publisher sends frames."""
    payloads: list[bytes] = field(repr=False)
    header: dict[str, Any] = field(repr=False)
    """The header as received (including fields this reader does not know)."""

    @cached_property
    def masks(self) -> dict[int, np.ndarray]:
        """bool[height, width] per object id, decoded on first access."""
        return {o.id: self.mask(o.id) for o in self.objects}

    def mask(self, obj_id: int) -> np.ndarray:
        """One object's mask, bool[height, width]; raises :class:`WireError` if it does not decode."""
        data = self.payloads[self._object(obj_id).payload]
        try:
            if self.mask_encoding == "rle":
                return rle.decode(data, self.height, self.width)
            return rle.unpack_bits(data, self.height, self.width)
        except rle.RLEError as e:
            raise WireError(f"frame {self.seq}, object {obj_id}: {e}") from None

    def coco_rle(self, obj_id: int) -> dict[str, Any]:
        """``{"size": [h, w], "counts": bytes}``, ready for ``pycocotools.mask.decode`` (RLE only)."""
        if self.mask_encoding != "rle":
            raise ValueError(f"masks of this message are {self.mask_encoding!r}, not 'rle'")
        return {"size": [self.height, self.width], "counts": self.payloads[self._object(obj_id).payload]}

    def image(self) -> np.ndarray | None:
        """The frame as uint8[height, width, 3] RGB, if the publisher sent it (``--send-frames``)."""
        if self.image_payload is None:
            return None
        bgr = cv2.imdecode(np.frombuffer(self.payloads[self.image_payload], np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise WireError(f"frame {self.seq}: the image payload is not a decodable JPEG")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _object(self, obj_id: int) -> ObjectInfo:
        for o in self.objects:
            if o.id == obj_id:
                return o
        raise KeyError(f"no object {obj_id} in frame {self.seq}; objects: {[o.id for o in self.objects]}")


@dataclass
class StatusMessage:
    """A decoded ``status`` message."""

    kind: ClassVar[str] = "status"
    stream: str
    state: str
    """One of :data:`STATES`."""
    reason: str
    t_wall_ns: int
    t_mono_ns: int
    counters: Counters
    objects: list[dict[str, Any]]
    """Objects currently tracked, as summaries ({"id", "score", "visible", "iou", "bbox", "area"})."""
    last_seq: int | None
    """Sequence number of the last frame message sent, None before the first."""
    header: dict[str, Any] = field(repr=False)


Message = FrameMessage | StatusMessage


# ---------------------------------------------------------------------- encoding


def mask_payloads(result: FrameResult, height: int, width: int, encoding: str = "rle") -> list[bytes]:
    """One payload per object of ``result``, in order; masks must be bool[height, width]."""
    if encoding not in MASK_ENCODINGS:
        raise ValueError(f"mask encoding must be one of {MASK_ENCODINGS}, got {encoding!r}")
    out = []
    for o in result.objects:
        if o.mask.shape != (height, width):
            raise ValueError(f"object {o.obj_id}: mask shape {list(o.mask.shape)} is not the image's {[height, width]}")
        out.append(rle.encode(o.mask) if encoding == "rle" else rle.pack_bits(o.mask))
    return out


def frame_header(
    captured: CapturedFrame, result: FrameResult, times: StageTimes, stream_id: str, encoding: str = "rle",
    with_image: bool = False,
) -> bytes:
    """The JSON header of a frame message (payload i belongs to ``result.objects[i]``; with
    ``with_image`` the frame's JPEG follows the masks)."""
    height, width = captured.frame.rgb.shape[:2]
    stages = {name: int(getattr(times, name)) for name in STAGES}
    total = (times.publish - times.capture) / 1e6 if times.publish and times.capture else None
    header = {
        "v": VERSION,
        "stream": stream_id,
        "seq": captured.seq,
        "session": captured.session,
        "frame_index": result.frame_index,
        "source_ts": _number(captured.frame.source_ts),
        "t_capture_ns": captured.t_capture_ns,
        "t_capture_wall_ns": captured.t_capture_wall_ns,
        "t_publish_wall_ns": time.time_ns(),
        "stages_ns": stages,
        "latency_ms": {k: round(v, 3) for k, v in times.latencies_ms().items()},
        "pipeline_ms": None if total is None else round(total, 3),
        "width": int(width),
        "height": int(height),
        "mask_encoding": encoding,
        "objects": [
            {"id": o.obj_id, "score": _number(o.object_score, 5), "visible": bool(o.visible),
             "bbox": [int(v) for v in o.bbox] if o.bbox is not None else None,
             "area": int(o.area), "iou": _number(o.iou, 5), "payload": i}
            for i, o in enumerate(result.objects)
        ],
        "image_payload": len(result.objects) if with_image else None,
    }
    return _dumps(header)


def encode_image(rgb: np.ndarray, quality: int = 80) -> bytes:
    """uint8[H, W, 3] RGB -> JPEG bytes (the optional image payload)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_frame(
    captured: CapturedFrame, result: FrameResult, times: StageTimes, stream_id: str, encoding: str = "rle",
    image_jpeg: bytes | None = None,
) -> list[bytes]:
    """[b"frame", header, mask payloads..., (image)]. ``times`` is written as it is (publish included)."""
    height, width = captured.frame.rgb.shape[:2]
    payloads = mask_payloads(result, height, width, encoding)
    header = frame_header(captured, result, times, stream_id, encoding, with_image=image_jpeg is not None)
    return [TOPIC_FRAME, header, *payloads, *([image_jpeg] if image_jpeg is not None else [])]


def encode_status(
    stream_id: str,
    state: str,
    reason: str = "",
    counters: Counters | None = None,
    objects: Sequence[dict[str, Any]] = (),
    last_seq: int | None = None,
) -> list[bytes]:
    """[b"status", header]; wall and monotonic times are taken now."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    header = {
        "v": VERSION,
        "stream": stream_id,
        "state": state,
        "reason": reason,
        "t_wall_ns": time.time_ns(),
        "t_mono_ns": time.monotonic_ns(),
        "counters": dataclasses.asdict(counters if counters is not None else Counters()),
        "objects": list(objects),
        "last_seq": last_seq,
    }
    return [TOPIC_STATUS, _dumps(header)]


def _dumps(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def _number(v: float | None, digits: int | None = None) -> float | None:
    """A JSON-safe float: None for missing or non-finite values (JSON has no NaN)."""
    if v is None or not math.isfinite(v):
        return None
    return float(v) if digits is None else round(float(v), digits)


# ---------------------------------------------------------------------- decoding


def decode(parts: Sequence[bytes]) -> Message:
    """A received multipart message -> :class:`FrameMessage` or :class:`StatusMessage`.

    Raises :class:`WireError` for an unknown topic, a wrong version or a malformed header.
    Masks are checked when they are decoded (:attr:`FrameMessage.masks`).
    """
    if len(parts) < 2:
        raise WireError(f"a message has at least 2 parts (topic, header), got {len(parts)}")
    topic, header = bytes(parts[0]), _header(parts[1])
    if topic == TOPIC_FRAME:
        return _frame(header, [bytes(p) for p in parts[2:]])
    if topic == TOPIC_STATUS:
        if len(parts) != 2:
            raise WireError(f"a status message has 2 parts, got {len(parts)}")
        return _status(header)
    raise WireError(f"unknown topic {topic[:32]!r} (expected b'frame' or b'status')")


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise WireError(f"header must be a JSON object, got {type(header).__name__}")
    v = header.get("v")
    if v != VERSION:
        raise WireError(f"unsupported wire version {v!r}: this reader speaks version {VERSION}")
    return header


def _frame(h: dict[str, Any], payloads: list[bytes]) -> FrameMessage:
    encoding = _get(h, "mask_encoding", str)
    if encoding not in MASK_ENCODINGS:
        raise WireError(f"unknown mask_encoding {encoding!r} (expected one of {MASK_ENCODINGS})")
    objects = [_object(o, len(payloads)) for o in _get(h, "objects", list)]
    if len({o.id for o in objects}) != len(objects):
        raise WireError("frame header lists an object id twice")
    stages = _get(h, "stages_ns", dict)
    latency = _get(h, "latency_ms", dict)
    if not all(isinstance(v, int) for v in stages.values()) or not all(_is_number(v) for v in latency.values()):
        raise WireError("stages_ns values must be integers and latency_ms values numbers")
    width, height = _get(h, "width", int), _get(h, "height", int)
    if width < 0 or height < 0:
        raise WireError(f"image size {width}x{height} is negative")
    image_payload = _get(h, "image_payload", int, optional=True) if "image_payload" in h else None
    if image_payload is not None and not 0 <= image_payload < len(payloads):
        raise WireError(f"image payload index {image_payload} is out of range")
    return FrameMessage(
        stream=_get(h, "stream", str), seq=_get(h, "seq", int), session=_get(h, "session", str),
        frame_index=_get(h, "frame_index", int), source_ts=_get(h, "source_ts", float, optional=True),
        t_capture_ns=_get(h, "t_capture_ns", int), t_capture_wall_ns=_get(h, "t_capture_wall_ns", int),
        t_publish_wall_ns=_get(h, "t_publish_wall_ns", int), stages_ns=stages, latency_ms=latency,
        width=width, height=height, mask_encoding=encoding, objects=objects, image_payload=image_payload,
        payloads=payloads, header=h,
    )


def _object(o: Any, n_payloads: int) -> ObjectInfo:
    if not isinstance(o, dict):
        raise WireError(f"each object must be a JSON object, got {type(o).__name__}")
    bbox = _get(o, "bbox", list, optional=True)
    if bbox is not None and (len(bbox) != 4 or not all(isinstance(v, int) for v in bbox)):
        raise WireError(f"bbox must be 4 integers or null, got {bbox!r}")
    payload = _get(o, "payload", int)
    if not 0 <= payload < n_payloads:
        raise WireError(f"object payload index {payload} is out of range (the message has {n_payloads} payloads)")
    return ObjectInfo(
        id=_get(o, "id", int), score=_get(o, "score", float, optional=True), visible=_get(o, "visible", bool),
        bbox=None if bbox is None else tuple(bbox), area=_get(o, "area", int),
        iou=_get(o, "iou", float, optional=True), payload=payload,
    )


def _status(h: dict[str, Any]) -> StatusMessage:
    state = _get(h, "state", str)
    if state not in STATES:
        raise WireError(f"unknown state {state!r} (expected one of {STATES})")
    objects = _get(h, "objects", list)
    if not all(isinstance(o, dict) for o in objects):
        raise WireError("status objects must be JSON objects")
    return StatusMessage(
        stream=_get(h, "stream", str), state=state, reason=_get(h, "reason", str),
        t_wall_ns=_get(h, "t_wall_ns", int), t_mono_ns=_get(h, "t_mono_ns", int),
        counters=_counters(_get(h, "counters", dict)), objects=objects,
        last_seq=_get(h, "last_seq", int, optional=True), header=h,
    )


def _counters(raw: dict[str, Any]) -> Counters:
    """Known counters by name; counters a newer publisher adds go to ``extra``."""
    names = {f.name for f in dataclasses.fields(Counters)} - {"extra"}
    extra = raw.get("extra", {})
    if not isinstance(extra, dict):
        raise WireError("counters.extra must be an object")
    extra = dict(extra) | {k: v for k, v in raw.items() if k not in names and k != "extra"}
    values = {k: raw[k] for k in names if k in raw}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*values.values(), *extra.values()]):
        raise WireError("counters must be integers")
    return Counters(**values, extra=extra)


def _get(d: dict[str, Any], key: str, kind: type, optional: bool = False) -> Any:
    """d[key], checked to be of ``kind`` (an int is a float; a bool is not an int)."""
    if key not in d:
        raise WireError(f"header field {key!r} is missing")
    v = d[key]
    if v is None and optional:
        return None
    if kind is float:
        ok = _is_number(v)
        v = float(v) if ok else v
    elif kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise WireError(f"header field {key!r} must be {'null or ' if optional else ''}{kind.__name__}, got {v!r:.60}")
    return v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
