"""Wire format version 1: frame and status messages round trip; malformed input is refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtrack.live import wire
from streamtrack.live.types import CapturedFrame, Counters, RawFrame, StageTimes
from streamtrack.tracker.types import FrameResult, ObjectResult

try:
    from pycocotools import mask as coco
except ImportError:
    coco = None

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

T0 = 1_000_000_000_000
"""A monotonic capture time (ns) for test frames."""


def captured_frame(seq: int, height: int = 48, width: int = 64, source_ts: float | None = 0.04) -> CapturedFrame:
    rgb = np.zeros((height, width, 3), np.uint8)
    return CapturedFrame(seq=seq, session="sess-1", frame=RawFrame(rgb, source_ts=source_ts),
                         t_capture_ns=T0 + seq, t_capture_wall_ns=1_700_000_000_000_000_000 + seq)


def object_result(obj_id: int, mask: np.ndarray, score: float = 2.5) -> ObjectResult:
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if xs.size else None
    return ObjectResult(obj_id=obj_id, mask=mask, object_score=score, visible=score > 0, iou=0.875,
                        bbox=bbox, area=int(mask.sum()))


def frame_result(masks: dict[int, np.ndarray], frame_index: int = 0) -> FrameResult:
    return FrameResult(frame_index, [object_result(i, m) for i, m in masks.items()])


def sample_masks(height: int = 48, width: int = 64, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    box = np.zeros((height, width), bool)
    box[5:20, 10:40] = True
    return {1: box, 7: rng.random((height, width)) < 0.3, 3: np.zeros((height, width), bool)}


def stage_times(published: bool = True) -> StageTimes:
    t = StageTimes(capture=T0, dequeue=T0 + 1_000_000, preprocess=T0 + 3_000_000, image_encoder=T0 + 40_000_000,
                   memory_attention=T0 + 50_000_000, decoder=T0 + 55_000_000, memory_encoder=T0 + 60_000_000)
    if published:
        t.publish = T0 + 62_500_000
    return t


def frame_parts(encoding: str = "rle", **kw) -> list[bytes]:
    return wire.encode_frame(captured_frame(5, **kw), frame_result(sample_masks()), stage_times(), "cam0", encoding)


@pytest.mark.parametrize("encoding", ["rle", "bits"])
def test_frame_round_trips_with_every_field(encoding):
    masks = sample_masks()
    parts = wire.encode_frame(captured_frame(5), frame_result(masks, frame_index=4), stage_times(), "cam0", encoding)
    assert parts[0] == b"frame" and len(parts) == 2 + len(masks)
    msg = wire.decode(parts)
    assert isinstance(msg, wire.FrameMessage) and msg.kind == "frame"
    assert (msg.stream, msg.seq, msg.session, msg.frame_index) == ("cam0", 5, "sess-1", 4)
    assert (msg.source_ts, msg.t_capture_ns, msg.t_capture_wall_ns) == (0.04, T0 + 5, 1_700_000_000_000_000_005)
    assert (msg.width, msg.height, msg.mask_encoding) == (64, 48, encoding)
    assert msg.stages_ns["publish"] == T0 + 62_500_000 and msg.stages_ns["image_encoder"] == T0 + 40_000_000
    assert msg.latency_ms == {"dequeue": 1.0, "preprocess": 2.0, "image_encoder": 37.0, "memory_attention": 10.0,
                              "decoder": 5.0, "memory_encoder": 5.0, "publish": 2.5}
    assert msg.header["pipeline_ms"] == 62.5
    assert [o.id for o in msg.objects] == [1, 7, 3]
    first = msg.objects[0]
    assert (first.score, first.visible, first.bbox, first.area, first.iou) == (2.5, True, (10, 5, 39, 19), 450, 0.875)
    assert msg.objects[2].bbox is None and msg.objects[2].area == 0
    assert set(msg.masks) == {1, 7, 3}
    for obj_id, mask in masks.items():
        assert msg.masks[obj_id].dtype == bool
        np.testing.assert_array_equal(msg.masks[obj_id], mask)


def test_header_has_exactly_the_documented_fields():
    """docs/wire-format.md lists these; a change here must change the document too."""
    header = json.loads(frame_parts()[1])
    assert set(header) == {
        "v", "stream", "seq", "session", "frame_index", "source_ts", "t_capture_ns", "t_capture_wall_ns",
        "t_publish_wall_ns", "stages_ns", "latency_ms", "pipeline_ms", "width", "height", "mask_encoding", "objects",
        "image_payload",
    }
    assert list(header["stages_ns"]) == ["capture", "dequeue", "preprocess", "image_encoder", "memory_attention",
                                         "decoder", "memory_encoder", "publish"]
    assert set(header["objects"][0]) == {"id", "score", "visible", "bbox", "area", "iou", "payload"}
    status = json.loads(wire.encode_status("cam0", "running")[1])
    assert set(status) == {"v", "stream", "state", "reason", "t_wall_ns", "t_mono_ns", "counters", "objects", "last_seq"}


@pytest.mark.skipif(coco is None, reason="pycocotools is not installed")
def test_rle_payload_is_a_pycocotools_counts_string():
    parts = frame_parts("rle")
    header = json.loads(parts[1])
    for obj, mask in zip(header["objects"], sample_masks().values()):
        payload = parts[2 + obj["payload"]]
        out = coco.decode({"size": [header["height"], header["width"]], "counts": payload})
        np.testing.assert_array_equal(out.astype(bool), mask)
    msg = wire.decode(parts)
    np.testing.assert_array_equal(coco.decode(msg.coco_rle(7)).astype(bool), sample_masks()[7])


def test_bits_payload_is_packed_row_major():
    parts = frame_parts("bits")
    assert parts[2] == np.packbits(sample_masks()[1]).tobytes()
    assert all(len(p) == 48 * 64 // 8 for p in parts[2:])


def test_unreached_stages_are_zero_and_missing_values_null():
    captured = captured_frame(0, source_ts=None)
    result = FrameResult(0, [object_result(1, np.zeros((48, 64), bool), score=float("nan"))])
    msg = wire.decode(wire.encode_frame(captured, result, StageTimes(capture=T0), "cam0"))
    assert msg.source_ts is None and msg.objects[0].score is None
    assert msg.stages_ns["publish"] == 0 and msg.latency_ms == {} and msg.header["pipeline_ms"] is None


def test_status_round_trips_counters_and_objects():
    counters = Counters(captured=10, dropped_stale=2, tracked=8, published=7, dropped_publish=1, reconnects=1,
                        control_requests=3, control_errors=1, extra={"status_dropped": 4})
    objects = [{"id": 1, "score": 1.5, "visible": True, "iou": 0.9, "bbox": [1, 2, 3, 4], "area": 9}]
    msg = wire.decode(wire.encode_status("cam0", "reconnecting", "source ended; retry in 2 s", counters, objects, 41))
    assert isinstance(msg, wire.StatusMessage) and msg.kind == "status"
    assert (msg.stream, msg.state, msg.reason, msg.last_seq) == ("cam0", "reconnecting", "source ended; retry in 2 s", 41)
    assert msg.counters == counters and msg.objects == objects
    assert msg.t_wall_ns > 1_600_000_000 * 10**9 and msg.t_mono_ns > 0


def test_unknown_fields_are_ignored_and_unknown_counters_kept():
    parts = frame_parts()
    header = json.loads(parts[1]) | {"future_field": [1, 2]}
    header["objects"][0]["future_object_field"] = "x"
    msg = wire.decode([parts[0], json.dumps(header).encode(), *parts[2:]])
    assert msg.seq == 5 and msg.header["future_field"] == [1, 2]
    status = json.loads(wire.encode_status("cam0", "running")[1])
    status["counters"]["gpu_resets"] = 3
    assert wire.decode([b"status", json.dumps(status).encode()]).counters.extra == {"gpu_resets": 3}


def _edit_header(edit) -> list[bytes]:
    parts = frame_parts()
    header = json.loads(parts[1])
    edit(header)
    return [parts[0], json.dumps(header).encode(), *parts[2:]]


@pytest.mark.parametrize("parts, message", [
    ([b"frame"], "at least 2 parts"),
    ([b"video", b"{}"], "unsupported wire version None"),
    ([b"video", b'{"v": 1}'], "unknown topic"),
    ([b"frame", b"\xff\xfe"], "not UTF-8 JSON"),
    ([b"frame", b"{'v': 1}"], "not UTF-8 JSON"),
    ([b"frame", b"[1]"], "must be a JSON object"),
    (_edit_header(lambda h: h.update(v=2)), "unsupported wire version 2: this reader speaks version 1"),
    (_edit_header(lambda h: h.pop("seq")), "'seq' is missing"),
    (_edit_header(lambda h: h.update(seq="5")), "'seq' must be int"),
    (_edit_header(lambda h: h.update(seq=True)), "'seq' must be int"),
    (_edit_header(lambda h: h.update(mask_encoding="png")), "unknown mask_encoding"),
    (_edit_header(lambda h: h["objects"][0].update(payload=3)), "payload index 3 is out of range"),
    (_edit_header(lambda h: h["objects"][0].update(bbox=[1, 2])), "bbox must be 4 integers"),
    (_edit_header(lambda h: h["objects"][1].update(id=1)), "object id twice"),
    (_edit_header(lambda h: h["stages_ns"].update(publish=1.5)), "stages_ns values must be integers"),
    ([b"status", b'{"v": 1, "stream": "s", "state": "sleeping"}'], "unknown state 'sleeping'"),
    ([*wire.encode_status("s", "running"), b"extra"], "a status message has 2 parts"),
])
def test_malformed_messages_raise_wire_error(parts, message):
    with pytest.raises(wire.WireError, match=message):
        wire.decode(parts)


def test_corrupt_mask_payload_raises_when_decoded():
    parts = frame_parts()
    parts[3] = b"4a"
    msg = wire.decode(parts)
    np.testing.assert_array_equal(msg.mask(1), sample_masks()[1])  # other objects still decode
    with pytest.raises(wire.WireError, match="frame 5, object 7"):
        msg.masks


def test_encoder_refuses_bad_input():
    with pytest.raises(ValueError, match="mask shape"):
        wire.encode_frame(captured_frame(0), frame_result({1: np.zeros((10, 10), bool)}), stage_times(), "cam0")
    with pytest.raises(ValueError, match="mask encoding"):
        frame_parts("png")
    with pytest.raises(ValueError, match="state must be one of"):
        wire.encode_status("cam0", "sleeping")



def test_optional_frame_image_round_trips():
    parts = frame_parts()
    msg = wire.decode(parts)
    assert msg.image_payload is None and msg.image() is None
    captured, result, times = captured_frame(5), frame_result(sample_masks()), stage_times()
    rng = np.random.default_rng(1)
    captured.frame.rgb[:] = np.kron(rng.integers(0, 255, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    jpeg = wire.encode_image(captured.frame.rgb, quality=95)
    parts = wire.encode_frame(captured, result, times, "cam0", image_jpeg=jpeg)
    msg = wire.decode(parts)
    assert msg.image_payload == len(result.objects)
    img = msg.image()
    assert img.shape == captured.frame.rgb.shape
    assert np.abs(img.astype(int) - captured.frame.rgb.astype(int)).mean() < 8
    assert set(msg.masks) == {o.obj_id for o in result.objects}


@settings(max_examples=120, deadline=None)
@given(
    height=st.integers(1, 40), width=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
    ids=st.lists(st.integers(0, 2**31 - 1), min_size=0, max_size=5, unique=True),
    density=st.floats(0.0, 1.0), encoding=st.sampled_from(wire.MASK_ENCODINGS),
    seq=st.integers(0, 2**53), frame_index=st.integers(0, 2**31),
)
def test_any_frame_round_trips_exactly(height, width, seed, ids, density, encoding, seq, frame_index):
    """Property: encode then decode gives back every mask bit, id, box and area."""
    rng = np.random.default_rng(seed)
    masks = {i: rng.random((height, width)) < density for i in ids}
    result = frame_result(masks, frame_index=frame_index)
    msg = wire.decode(wire.encode_frame(captured_frame(seq, height, width), result, stage_times(), "s", encoding))
    assert (msg.seq, msg.frame_index, msg.height, msg.width) == (seq, frame_index, height, width)
    assert [o.id for o in msg.objects] == ids
    for o, src in zip(msg.objects, result.objects):
        assert (o.bbox, o.area) == (src.bbox, src.area)
        np.testing.assert_array_equal(msg.mask(o.id), masks[o.id])
