"""What `streamtrack view` draws and writes: tinted masks and box outlines, and an MP4 that decodes."""

from __future__ import annotations

import av
import numpy as np

from streamtrack.overlay import VideoWriter, color_of, draw


def test_a_mask_is_tinted_half_way_to_its_colour_and_nothing_else_changes():
    rgb = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 5:25] = True
    out = draw(rgb, {2: mask}, {})
    tint = ((100 + np.array(color_of(2))) / 2).astype(np.uint8)
    assert (out[mask] == tint).all()
    assert (out[~mask] == 100).all()
    assert (rgb == 100).all(), "the input frame is left alone"


def test_a_box_is_drawn_in_its_objects_colour():
    rgb = np.zeros((40, 60, 3), np.uint8)
    out = draw(rgb, {}, {3: (10, 8, 40, 30), 4: None})
    assert (out[8, 20] == color_of(3)).all() and (out[30, 20] == color_of(3)).all()
    assert (out[20, 10] == color_of(3)).all() and (out[20, 40] == color_of(3)).all()
    assert (out[20, 25] == 0).all(), "the box is an outline"


def test_the_video_decodes_to_the_frames_written(tmp_path):
    """Odd sizes are cropped to even ones (yuv420p); a frame of another size is resized."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (128, 128, 128), (10, 10, 10)]
    writer = VideoWriter(tmp_path / "sub" / "out.mp4", fps=10)
    for i, c in enumerate(colours):
        size = (65, 97) if i != 3 else (40, 50)
        writer.write(np.full((*size, 3), c, np.uint8))
    writer.close()
    assert writer.frames == len(colours)
    with av.open(str(tmp_path / "sub" / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == len(colours)
    for frame, c in zip(decoded, colours):
        assert frame.shape == (64, 96, 3)
        assert np.abs(frame.reshape(-1, 3).mean(0) - c).max() < 8, "each frame keeps its colour"
