"""Tracker behaviour the official predictor cannot be compared on: objects coming and
going, the conditioning-frame cap, fixed shapes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamtrack.checkpoint import load_model
from streamtrack.config import load_config
from streamtrack.tracker import Prompt, PromptError, Tracker, TrackerConfig
from video import disc_mask, moving_shapes

SIZE = 128


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("sam2.1_hiera_t", None, image_size=SIZE)


@pytest.fixture(scope="module")
def frames():
    return moving_shapes(30, 120, 160)


POINT = Prompt(1, points=((40.0, 90.0),), labels=(1,))
BOX = Prompt(2, box=(100.0, 30.0, 150.0, 80.0))


def test_results_have_every_field_at_source_resolution(model, frames):
    tracker = Tracker(model, TrackerConfig(max_objects=3))
    assert tracker.track(frames[0]).objects == []
    result = tracker.add_prompt(BOX)
    (obj,) = result.objects
    assert obj.obj_id == 2 and obj.mask.shape == (120, 160) and obj.mask.dtype == bool
    assert obj.area == int(obj.mask.sum())
    assert obj.visible == (obj.object_score > 0)
    if obj.area:
        ys, xs = np.nonzero(obj.mask)
        assert obj.bbox == (xs.min(), ys.min(), xs.max(), ys.max())
    else:
        assert obj.bbox is None
    assert tracker.track(frames[1]).frame_index == 1


def test_objects_can_be_removed_and_slots_reused(model, frames):
    tracker = Tracker(model, TrackerConfig(max_objects=2))
    tracker.track(frames[0])
    tracker.add_prompt(POINT)
    tracker.add_prompt(BOX)
    with pytest.raises(PromptError, match="all 2 object slots are in use"):
        tracker.add_prompt(Prompt(3, points=((10.0, 10.0),), labels=(1,)))
    tracker.track(frames[1])
    tracker.remove_object(1)
    assert [o.obj_id for o in tracker.track(frames[2]).objects] == [2]
    result = tracker.add_prompt(Prompt(3, points=((10.0, 10.0),), labels=(1,)))
    assert [o.obj_id for o in result.objects] == [2, 3]
    # The new object starts from its own prompt only: none of object 1's memory survives in its row.
    row = tracker._objects[3].row
    assert tracker.bank.cond_frames(row) == []  # its prompt memory is written before the next frame
    tracker.track(frames[3])
    assert tracker.bank.cond_frames(row) == [2]
    with pytest.raises(KeyError, match="no object 1"):
        tracker.remove_object(1)


def test_removing_an_object_leaves_the_others_unchanged(model, frames):
    def run(remove: bool):
        tracker = Tracker(model, TrackerConfig(max_objects=3))
        masks = []
        for t, frame in enumerate(frames[:8]):
            result = tracker.track(frame)
            if t == 0:
                tracker.add_prompt(POINT)
                result = tracker.add_prompt(BOX)
            if t == 3 and remove:
                tracker.remove_object(1)
            masks.append(result.by_id()[2].mask)
        return masks

    kept, removed = run(False), run(True)
    for a, b in zip(kept, removed):
        assert (a != b).mean() < 1e-3


def test_conditioning_frames_are_capped_and_the_first_is_kept(model, frames):
    tracker = Tracker(model, TrackerConfig(max_cond_frames=3, corrections_as_cond=True))
    for t, frame in enumerate(frames[:12]):
        tracker.track(frame)
        if t == 0:
            tracker.add_prompt(POINT)
        elif t % 2 == 0:
            tracker.add_prompt(Prompt(1, points=((45.0 + t, 90.0),), labels=(1,)))
    tracker.track(frames[12])
    assert tracker.bank.cond_frames(tracker._objects[1].row) == [0, 8, 10]


def test_corrections_off_stay_out_of_conditioning_frames(model, frames):
    tracker = Tracker(model, TrackerConfig(corrections_as_cond=False))
    tracker.track(frames[0])
    tracker.add_prompt(POINT)
    for frame in frames[1:4]:
        tracker.track(frame)
    tracker.add_prompt(Prompt(1, points=((50.0, 90.0),), labels=(0,)))
    tracker.track(frames[4])
    assert tracker.bank.cond_frames(tracker._objects[1].row) == [0]


def test_reset_forgets_everything(model, frames):
    tracker = Tracker(model)
    tracker.track(frames[0])
    tracker.add_prompt(POINT)
    tracker.track(frames[1])
    tracker.reset()
    assert tracker.object_ids == [] and tracker.frame_index is None
    assert not tracker.bank.spatial_valid.any() and not tracker.bank.ptr_valid.any()
    assert tracker.track(frames[2]).frame_index == 0


def test_prompt_before_any_frame_is_an_error(model):
    with pytest.raises(PromptError, match="call track"):
        Tracker(model).add_prompt(POINT)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(points=((1.0, 2.0),), labels=()), "1 points but 0 labels"),
        (dict(points=((1.0, float("nan")),), labels=(1,)), "finite"),
        (dict(points=((1.0, 2.0),), labels=(5,)), "labels must be 1"),
        (dict(box=(10.0, 10.0, 5.0, 20.0)), "x0 <= x1"),
        (dict(box=(1.0, 2.0, 3.0)), "four finite numbers"),
        (dict(), "needs points, a box or a mask"),
        (dict(mask=np.zeros((4, 4, 3))), "2-D"),
        (dict(mask=np.ones((4, 4)), box=(0.0, 0.0, 1.0, 1.0)), "cannot be combined"),
    ],
)
def test_malformed_prompts_are_rejected(kwargs, message):
    with pytest.raises(PromptError, match=message):
        Prompt(1, **kwargs)


def test_memory_holds_the_official_window_only(model, frames):
    """After many frames an object's valid recent memories are exactly the last 7 frames
    (6 used by the next step), and its recent pointers the last 16."""
    tracker = Tracker(model, TrackerConfig(max_objects=1))
    for t, frame in enumerate(frames[:25]):
        tracker.track(frame)
        if t == 0:
            tracker.add_prompt(POINT)
    bank, row = tracker.bank, tracker._objects[1].row
    c = bank.shape.max_cond_frames
    recent = sorted(bank.spatial_frame[row, c:][bank.spatial_valid[row, c:]].tolist())
    ptrs = sorted(bank.ptr_frame[row, c:][bank.ptr_valid[row, c:]].tolist())
    assert recent == list(range(18, 25))
    assert ptrs == list(range(9, 25))


def test_stage_times_are_recorded_in_order(model, frames):
    from streamtrack.timing import StageTimes

    tracker = Tracker(model)
    tracker.track(frames[0])
    tracker.add_prompt(POINT)
    times = StageTimes()
    times.mark("capture")
    tracker.track(frames[1], times)
    stages = ["capture", "preprocess", "image_encoder", "memory_attention", "decoder", "memory_encoder"]
    stamps = [getattr(times, s) for s in stages]
    assert all(stamps) and stamps == sorted(stamps)


@pytest.mark.parametrize("multimask", [True, False])
def test_tracked_frames_decode_as_the_config_says(frames, monkeypatch, multimask):
    """``multimask_tracking`` picks the decoder's output for frames tracked without a prompt,
    in the tracker and in the training unroll alike (every shipped config keeps it on)."""
    import dataclasses

    from streamtrack.model import build_sam2
    from streamtrack.training.clips import sample_clip
    from streamtrack.training.unroll import ClipPlan, unroll

    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config("nano", SIZE), multimask_tracking=multimask)
    net = build_sam2(cfg).eval()
    calls = []
    real = net.decode

    def spy(pix, hr, coords, labels, mask_input, multimask, **kw):  # noqa: ANN001, ANN202
        calls.append((bool((labels >= 0).any()), mask_input is not None, multimask))
        return real(pix, hr, coords, labels, mask_input, multimask, **kw)

    monkeypatch.setattr(net, "decode", spy)
    tracker = Tracker(net, TrackerConfig(max_objects=2))
    tracker.track(frames[0])
    tracker.add_prompt(BOX)
    calls.clear()
    result = tracker.track(frames[1])
    assert calls == [(False, False, multimask)]
    assert result.objects[0].mask.shape == frames[1].shape[:2]

    rng = np.random.default_rng(0)
    clip = sample_clip(rng, SIZE, 3)
    images = torch.from_numpy(clip.images).permute(0, 3, 1, 2).float().div(255)[None]
    calls.clear()
    with torch.no_grad():
        unroll(net, images, torch.from_numpy(clip.masks).float(), torch.zeros(1, dtype=torch.long),
               ClipPlan("mask"), rng)
    assert calls[1:] == [(False, False, multimask)] * 2  # calls[0] decodes frame 0's mask prompt


@pytest.mark.parametrize("max_age", [0, 3])
def test_a_prompt_memory_is_read_while_the_config_allows(frames, max_age):
    """``cond_memory_max_age``: with 0 (every official config) the prompted frame's memory is read
    on every later frame; with N it is read only while at most N frames old, in the tracker and
    in the training unroll alike. Counted as the spatial memories memory attention gets."""
    import dataclasses

    from streamtrack.model import build_sam2
    from streamtrack.training.clips import sample_clip
    from streamtrack.training.unroll import ClipPlan, unroll

    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config("nano", SIZE), cond_memory_max_age=max_age)
    net = build_sam2(cfg).eval()
    hw = cfg.embed_size**2
    spatial = []

    def spy(_module, args):  # noqa: ANN001, ANN202
        _curr, _curr_pos, memory, _memory_pos, n_ptr_tokens, key_valid = args
        assert key_valid is None or bool(key_valid.all())
        spatial.append((memory.shape[1] - n_ptr_tokens) // hw)

    net.memory_attention.register_forward_pre_hook(spy)
    tracker = Tracker(net, TrackerConfig(max_objects=1))
    tracker.track(frames[0])
    tracker.add_prompt(BOX)
    for frame in frames[1:10]:
        tracker.track(frame)
    prompt = [1 if max_age == 0 or t <= max_age else 0 for t in range(1, 10)]
    assert spatial == [p + min(t - 1, cfg.num_maskmem - 1) for t, p in zip(range(1, 10), prompt)]

    # The unroll, with its tracked frames 21-23 frames after the prompt (a --prompt-lag): the first
    # has no recent memory and keeps the prompt's; later ones drop it when it is too old.
    clip = sample_clip(np.random.default_rng(0), SIZE, 4)
    images = torch.from_numpy(clip.images).permute(0, 3, 1, 2).float().div(255)[None]
    spatial.clear()
    with torch.no_grad():
        unroll(net, images, torch.from_numpy(clip.masks).float(), torch.zeros(1, dtype=torch.long),
               ClipPlan("mask", times=(0, 21, 22, 23)), np.random.default_rng(1))
    assert spatial == ([1, 2, 3] if max_age == 0 else [1, 1, 2])


@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_tracked_memories_share_no_pixel_when_the_config_says(frames, fixed_shapes):
    """``non_overlap_memory``: the masks a tracked frame's memories are encoded from give each
    pixel to one object at most, and only reassign pixels (their union is unchanged). With fixed
    shapes the empty third bank row takes no part."""
    import dataclasses

    from streamtrack.checkpoint import resolve_checkpoint

    disc = disc_mask(*frames[0].shape[:2])
    right_half = disc.copy()
    right_half[:, : int(np.nonzero(disc)[1].mean())] = False

    def tracked_memory_masks(flag: bool) -> torch.Tensor:
        net = load_model("nano", resolve_checkpoint("nano", None))  # the shipped weights: real masks
        net.cfg = dataclasses.replace(net.cfg, non_overlap_memory=flag)
        seen = []
        net.memory_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[1].clone()))
        tracker = Tracker(net, TrackerConfig(max_objects=3, fixed_shapes=fixed_shapes))
        tracker.track(frames[0])
        tracker.add_prompt(Prompt(1, mask=disc))
        tracker.add_prompt(Prompt(2, mask=right_half))  # object 2 is part of object 1
        seen.clear()
        tracker.track(frames[1])
        masks = seen[-1]  # the tracked frame's batched call, after the prompts' own
        assert masks.shape[0] == (3 if fixed_shapes else 2)
        return masks[:2] > 0  # [2, 1, S, S]: foreground of objects 1 and 2

    apart, together = tracked_memory_masks(True), tracked_memory_masks(False)
    assert (together[0] & together[1]).sum() > 0  # overlap to remove
    assert not (apart[0] & apart[1]).any()
    assert torch.equal(apart[0] | apart[1], together[0] | together[1])
