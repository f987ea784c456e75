"""Frame sources: the synthetic source's ground truth and pacing, folders, video files,
webcams that are not there, spec parsing, and credential redaction."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamtrack.live.sources import (
    AVSource,
    FolderSource,
    WebcamSource,
    _CloseGuard,
    open_source,
    redact,
)
from streamtrack.live.synthetic import SyntheticSource
from streamtrack.video_file import SourceError


def read_all(source, limit: int = 10_000) -> list:
    frames = []
    with source:
        while (f := source.read()) is not None and len(frames) < limit:
            frames.append(f)
    return frames


def gray_frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8[h, w, 3] of level 20 + 20 i, so each frame can be told from its neighbours after coding."""
    return np.full((h, w, 3), 20 + 20 * i, np.uint8)


def write_mp4(path: Path, n: int, fps: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for i in range(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(gray_frame(i), format="rgb24")))
        out.mux(stream.encode())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- synthetic source -------------------------------------------------------------------------


def test_synthetic_video_is_a_function_of_the_seed():
    a, b, c = (SyntheticSource(160, 120, seed=s, live=False, num_frames=20) for s in (7, 7, 8))
    fa, fb, fc = read_all(a), read_all(b), read_all(c)
    assert len(fa) == len(fb) == 20
    for x, y in zip(fa, fb):
        assert np.array_equal(x.rgb, y.rgb) and x.source_ts == y.source_ts
        assert x.gt_masks.keys() == y.gt_masks.keys()
        assert all(np.array_equal(x.gt_masks[k], y.gt_masks[k]) for k in x.gt_masks)
    assert not np.array_equal(fa[0].rgb, fc[0].rgb)
    assert np.array_equal(a.render(13).rgb, fa[13].rgb)  # random access gives the same frame


def test_synthetic_masks_are_visible_pixels_under_occlusion():
    src = SyntheticSource(160, 120, num_objects=3, fps=5, seed=0, live=False, effects=False)
    occluded = False
    background = src.render(0).rgb
    not_on_first = ~np.any(list(src.full_masks(0).values()), axis=0)
    for i in range(0, 150, 2):
        frame, full = src.render(i), src.full_masks(i)
        masks = list(frame.gt_masks.values())
        assert all(m.dtype == bool and m.shape == (120, 160) for m in masks)
        for m1, m2 in itertools.combinations(masks, 2):
            assert not (m1 & m2).any(), "one pixel shows one object"
        for k, m in frame.gt_masks.items():
            assert not (m & ~full[k]).any(), "visible pixels lie within the object's shape"
            occluded |= bool((full[k] & ~m).any())
        # Outside every object's shape the frame shows the static background.
        outside = ~np.any(list(full.values()), axis=0) & not_on_first
        assert np.array_equal(frame.rgb[outside], background[outside])
    assert occluded, "some object is partly hidden behind another within 30 s"


def test_synthetic_objects_are_textured_not_flat():
    src = SyntheticSource(320, 240, seed=1, live=False)
    frame = src.render(0)
    for k, m in frame.gt_masks.items():
        assert m.sum() > 500
        assert frame.rgb[m].std(axis=0).max() > 8, f"object {k} has a texture"


def test_synthetic_objects_leave_the_frame_and_come_back():
    src = SyntheticSource(96, 72, num_objects=3, fps=2, seed=0, live=False, num_frames=120)
    frames = read_all(src)
    visible = np.array([[m.any() for m in f.gt_masks.values()] for f in frames])  # [T, N]
    inside = np.array([[m.any() for m in src.full_masks(i).values()] for i in range(len(frames))])
    assert visible[0].all(), "every object is visible on frame 0"
    assert not (visible & ~inside).any(), "an object outside the frame has an empty mask"
    returned = [k for k in range(3) if not inside[:, k].all() and visible[np.argmin(inside[:, k]):, k].any()]
    assert returned, "within 60 s some object leaves the frame and comes back"


def test_first_frame_boxes_bound_the_visible_masks():
    src = SyntheticSource(160, 120, seed=3, live=False)
    masks = src.render(0).gt_masks
    boxes = src.first_frame_boxes()
    assert boxes.keys() == {k for k, m in masks.items() if m.any()}
    for k, (x0, y0, x1, y1) in boxes.items():
        ys, xs = np.nonzero(masks[k])
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_first_frame_masks_are_the_visible_masks_of_frame_0():
    src = SyntheticSource(160, 120, seed=3, live=False)
    masks = src.render(0).gt_masks
    first = src.first_frame_masks()
    assert first.keys() == {k for k, m in masks.items() if m.any()} and first
    for k, m in first.items():
        assert m.dtype == bool and np.array_equal(m, masks[k])


def test_live_synthetic_paces_to_fps_and_non_live_does_not():
    live = SyntheticSource(64, 48, fps=50, live=True)
    t0 = time.monotonic()
    frames = read_all(live, limit=11)
    elapsed = time.monotonic() - t0
    assert elapsed >= 10 / 50 * 0.95, f"11 frames at 50 fps take 0.2 s, not {elapsed:.3f} s"
    assert [round(f.source_ts * 50) for f in frames] == list(range(11))
    fast = SyntheticSource(64, 48, fps=1, live=False, num_frames=11)
    t0 = time.monotonic()
    assert len(read_all(fast)) == 11
    assert time.monotonic() - t0 < 1.0, "a non-live source does not wait 10 s for 11 frames at 1 fps"


def test_live_synthetic_skips_frames_a_slow_reader_missed():
    src = SyntheticSource(64, 48, fps=100, live=True)
    with src:
        src.read()
        time.sleep(0.2)
        late = src.read()
    assert late.source_ts >= 0.19, "like a camera, it shows the present, not the frames it missed"


def test_synthetic_close_wakes_a_paced_read():
    src = SyntheticSource(64, 48, fps=0.2, live=True)
    src.open()
    src.read()  # frame 0 is due at once; frame 1 in 5 s
    threading.Timer(0.1, src.close).start()
    t0 = time.monotonic()
    assert src.read() is None
    assert time.monotonic() - t0 < 1.0


# --- folders and files ------------------------------------------------------------------------


def test_folder_source_reads_images_in_numeric_order(tmp_path):
    for i in (0, 2, 10, 1):
        cv2.imwrite(str(tmp_path / f"{i}.png"), gray_frame(i))
    src = FolderSource(tmp_path, fps=4)
    assert not src.live
    frames = read_all(src)
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [20, 40, 60, 220]
    assert [f.source_ts for f in frames] == [0, 0.25, 0.5, 0.75]


def test_video_file_source_decodes_every_frame_with_its_timestamp(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4", 12, fps=10)
    src = AVSource(path)
    assert not src.live
    frames = read_all(src)
    assert src.fps == 10
    assert len(frames) == 12
    assert [f.source_ts for f in frames] == pytest.approx([i / 10 for i in range(12)])
    levels = [float(f.rgb.mean()) for f in frames]
    assert levels == pytest.approx([20 + 20 * i for i in range(12)], abs=3)
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8


def test_corrupt_video_file_is_a_source_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 100)
    with pytest.raises(SourceError, match="cannot be opened"):
        AVSource(bad).open()


def test_missing_webcam_gives_a_clear_error():
    index = next(i for i in range(90, 200) if not Path(f"/dev/video{i}").exists())
    with pytest.raises(SourceError, match=rf"camera {index} could not be opened .*does not exist"):
        WebcamSource(index).open()


# --- open_source ------------------------------------------------------------------------------


def test_open_source_picks_the_source_a_spec_names(tmp_path):
    clip = write_mp4(tmp_path / "clip.mp4", 3)
    folder = tmp_path / "frames"
    folder.mkdir()
    assert type(open_source("0")) is WebcamSource and open_source("3").index == 3
    for url in ("rtsp://cam/live", "rtsps://cam/live", "rtmp://host/app", "https://host/index.m3u8"):
        src = open_source(url, rtsp_transport="udp", read_timeout=None)
        assert type(src) is AVSource and src.live, url
    assert open_source("rtsp://cam/live", rtsp_transport="udp").options["rtsp_transport"] == "udp"
    assert type(open_source(str(clip))) is AVSource and not open_source(str(clip)).live
    assert type(open_source(str(folder), fps=5)) is FolderSource
    syn = open_source("synthetic:width=64,height=48,live=false,num_frames=5,seed=2", num_objects=2)
    assert type(syn) is SyntheticSource and len(syn.object_ids) == 2
    frames = read_all(syn)
    assert len(frames) == 5 and frames[0].rgb.shape == (48, 64, 3)
    assert open_source("synthetic").live


@pytest.mark.parametrize("spec, options, message", [
    ("no/such/file.mp4", {}, "no such file or folder.*camera index.*synthetic"),
    ("ftp://user:pw@host/x.mp4", {}, "unsupported URL scheme"),
    ("synthetic:colour=red", {}, "not key=value with a key among"),
    ("synthetic:fps=fast", {}, "fps='fast' is not a valid value"),
    ("synthetic:width=4", {}, "below the 16x16 minimum"),
    ("0", {"rtsp_transport": "udp"}, "rtsp_transport does not apply to a webcam source"),
])
def test_open_source_rejects_bad_specs_with_a_helpful_message(spec, options, message):
    with pytest.raises(SourceError, match=message) as e:
        open_source(spec, **options)
    assert "pw@" not in str(e.value)


def test_rtsp_low_latency_options_use_ffmpeg5_timeout_in_microseconds():
    opts = AVSource("rtsp://cam/live", read_timeout=2.5).options
    assert opts == {"flags": "low_delay", "analyzeduration": "200000", "rtsp_transport": "tcp", "timeout": "2500000"}
    assert "stimeout" not in opts
    assert AVSource("rtmp://host/app", read_timeout=1).options["rw_timeout"] == "1000000"


# --- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://admin@cam/live", "rtsp://***@cam/live"),
    ("rtsp://cam/live", "rtsp://cam/live"),
    ("rtsp://a:p@ss@cam/x", "rtsp://***@cam/x"),
    ("rtsp://a:p/w?x#y@cam/x", "rtsp://***@cam/x"),
    ("rtsp://a:p'w\"z@cam/x", "rtsp://***@cam/x"),
    ("http://cam/x.m3u8?token=abc&w=1&password=p#f", "http://cam/x.m3u8?token=***&w=1&password=***#f"),
    ("failed: rtsp://u:p@h/a and 'rtmp://k:q@h2/b'", "failed: rtsp://***@h/a and 'rtmp://***@h2/b'"),
    ("/data/clip.mp4", "/data/clip.mp4"),
])
def test_redact_hides_credentials(text, expected):
    assert redact(text) == expected


def test_unreachable_stream_error_never_shows_credentials(capfd):
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/live"
    src = AVSource(url, open_timeout=2, read_timeout=2)
    assert "hunter2" not in src.describe()
    with pytest.raises(SourceError) as e:
        src.open()
    assert "rtsp://***@127.0.0.1" in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__, "no chained FFmpeg error naming the URL"
    out, err = capfd.readouterr()
    assert "hunter2" not in str(e.value) + repr(e.value.args) + out + err


# --- closing from another thread -------------------------------------------------------------


def test_close_during_a_read_releases_the_handle_when_the_read_returns():
    guard, released = _CloseGuard(), []
    release = lambda: released.append(threading.current_thread().name)  # noqa: E731
    with guard.active(release) as ok:
        assert ok
        t = threading.Thread(target=guard.close, args=(release,), name="closer")
        t.start()
        t.join()
        assert released == [], "not released under a running call"
    assert released == [threading.current_thread().name]
    guard.close(release)
    with guard.active(release) as ok:
        assert not ok, "a closed source reads nothing"
    assert len(released) == 1, "released exactly once"


def test_close_from_another_thread_while_ffmpeg_is_blocked_is_safe():
    with socket.socket() as listener:  # accepts connections into its backlog and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        src = AVSource(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/live", open_timeout=1.0, read_timeout=1.0)
        errors: list[BaseException] = []

        def opener() -> None:
            try:
                src.open()
            except SourceError as e:
                errors.append(e)

        t = threading.Thread(target=opener)
        t.start()
        time.sleep(0.3)  # now inside avformat_open_input, waiting for an answer
        t0 = time.monotonic()
        src.close()
        assert time.monotonic() - t0 < 0.1, "close() does not wait for FFmpeg"
        t.join(5.0)
    assert not t.is_alive() and len(errors) == 1 and "cannot be opened" in str(errors[0])
    assert src.read() is None, "a closed source reads nothing"


def damaged_copy(path: Path, out: Path, hits: int = 50, seed: int = 0) -> Path:
    """``path`` with ``hits`` random bytes overwritten in its middle half."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(len(data) // 4, 3 * len(data) // 4, hits):
        data[i] = int(rng.integers(256))
    out.write_bytes(bytes(data))
    return out


def test_damaged_video_frames_are_a_clear_error_in_a_file_and_a_counted_skip_live(tmp_path, caplog):
    """Damaged packets end a file with a SourceError naming it; a live stream skips and counts them."""
    clip = write_mp4(tmp_path / "clip.mp4", 12)
    outcomes = []
    for seed in range(8):
        bad = damaged_copy(clip, tmp_path / f"bad{seed}.mp4", seed=seed)
        for live in (False, True):
            src = AVSource(bad)
            src.live = live  # as for a network stream carrying the same bytes
            frames = None
            try:
                frames = read_all(src)
            except SourceError as e:
                assert str(bad) in str(e), "the error names the source"
            outcomes.append((seed, live, frames is not None, src.damaged_packets))
    assert any(not live and not ok for _, live, ok, _ in outcomes), "some file is refused with a SourceError"
    skipped = [n for _, live, ok, n in outcomes if live and ok]
    assert any(n > 0 for n in skipped), "a live stream skips damaged packets and counts them"
    assert "undecodable packet" in caplog.text
