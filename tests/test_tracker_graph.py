"""The CUDA-graph frame step. Recording needs CUDA; on the CPU these tests check its
preconditions on the very code that is recorded: fixed input shapes and dtypes from frame
to frame, static buffers that are never reallocated, and no value read back to the host."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from streamtrack.checkpoint import load_model
from streamtrack.tracker import Prompt, Tracker, TrackerConfig
from streamtrack.tracker.graph import StaticStep, StepSignature

from test_tracker import SIZE, frames, model  # noqa: F401 - the same tiny model and clip as fixtures

CUDA = torch.cuda.is_available()
FRAMES = 14


def drive(tracker: Tracker, frames: list[np.ndarray], on_frame=None) -> list[dict[int, np.ndarray]]:  # noqa: ANN001
    """Objects come and go while tracking: one from frame 0, a second from frame 3, a correction
    on frame 5, the first removed on frame 8 and a third added on frame 10."""
    out = []
    for t, frame in enumerate(frames[:FRAMES]):
        result = tracker.track(frame)
        if t == 0:
            result = tracker.add_prompt(Prompt(1, points=((40.0, 90.0),), labels=(1,)))
        elif t == 3:
            result = tracker.add_prompt(Prompt(2, box=(100.0, 30.0, 150.0, 80.0)))
        elif t == 5:
            result = tracker.add_prompt(Prompt(2, points=((120.0, 50.0),), labels=(1,)))
        elif t == 8:
            tracker.remove_object(1)
        elif t == 10:
            result = tracker.add_prompt(Prompt(3, box=(10.0, 10.0, 60.0, 50.0)))
        if on_frame is not None:
            on_frame(t)
        out.append({o.obj_id: o.mask for o in result.objects})
    return out


def test_step_inputs_keep_their_shapes_dtypes_and_buffers_on_every_frame(model, frames):
    tracker = Tracker(model, TrackerConfig(max_objects=4, fixed_shapes=True))
    step = tracker.static_step
    assert isinstance(step, StaticStep) and not step.graph_enabled
    seen: list[tuple[StepSignature | None, tuple[int, ...], tuple]] = []

    def record(t: int) -> None:
        bank = tuple((tuple(b.shape), b.dtype, b.data_ptr()) for b in tracker.bank.tensors())
        seen.append((step.signature, tuple(b.data_ptr() for b in step._inputs), bank))

    drive(tracker, frames, record)
    assert step.frames_run == FRAMES - 1  # frame 0 is tracked before its first prompt
    assert seen[1][0] is not None and set(seen[1:]) == {seen[1]}, "inputs, bank and their buffers never change"
    embed = {name: (shape, dtype) for name, shape, dtype in seen[1][0].tensors}
    assert embed["active"] == ((4,), torch.bool) and embed["embed"][1] == torch.float32
    wrong = tracker._frame.feats
    with pytest.raises(ValueError, match="changed shape or dtype"):
        step(type(wrong)(wrong.embed.double(), wrong.embed_pos, wrong.high_res), 99, torch.ones(4, dtype=torch.bool))


@contextlib.contextmanager
def no_host_reads():
    """Make every way of reading a tensor's value into Python raise (what a CUDA graph forbids)."""
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name: str):  # noqa: ANN202
        def f(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            raise AssertionError(f"host read inside the step: Tensor.{name}")
        return f

    for n in names:
        setattr(torch.Tensor, n, refuse(n))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def test_the_recorded_step_reads_nothing_back_to_the_host(model, frames):
    tracker = Tracker(model, TrackerConfig(max_objects=3, fixed_shapes=True))
    tracker.track(frames[0])
    tracker.add_prompt(Prompt(1, points=((40.0, 90.0),), labels=(1,)))
    tracker.track(frames[1])  # first step: buffers allocated
    step = tracker.static_step
    feats = tracker._frame.feats
    with torch.inference_mode():
        for buf, src in zip(step._inputs, (feats.embed, feats.embed_pos, *feats.high_res)):
            buf.copy_(src)
        step.frame.fill_(2)
        with no_host_reads():
            out = step._step()
    assert out.low_res.shape == (3, 1, SIZE // 4, SIZE // 4)
    # The guard does catch a host read.
    with no_host_reads(), pytest.raises(AssertionError, match="host read"):
        bool(step.frame > 0)


def test_a_graph_needs_cuda(model):
    if CUDA:
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        Tracker(model, TrackerConfig(cuda_graph=True))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (recording a CUDA graph)")
def test_the_replayed_graph_gives_the_eager_masks(frames):
    torch.manual_seed(0)
    gpu_model = load_model("sam2.1_hiera_t", None, image_size=SIZE, device="cuda")
    runs = {}
    for graph in (False, True):
        tracker = Tracker(gpu_model, TrackerConfig(max_objects=4, fixed_shapes=True, cuda_graph=graph))
        runs[graph] = drive(tracker, frames)
        assert tracker.static_step.captured == graph
    for t, (eager, replayed) in enumerate(zip(runs[False], runs[True])):
        assert eager.keys() == replayed.keys()
        for k in eager:
            inter = np.logical_and(eager[k], replayed[k]).sum()
            union = np.logical_or(eager[k], replayed[k]).sum()
            assert union == 0 or inter / union > 0.99, f"frame {t}, object {k}"
