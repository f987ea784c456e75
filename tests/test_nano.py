"""The nano model: its training script learns and resumes exactly, its shipped weights are
found by default and track the held-out synthetic benchmark well."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from streamtrack.checkpoint import CheckpointError, load_model, resolve_checkpoint, shipped_checkpoint
from streamtrack.config import load_config
from streamtrack.model import build_sam2
from streamtrack.procgen import benchmark_clips
from streamtrack.tracker import Tracker, TrackerConfig
from streamtrack.training.averaging import TailAverage
from streamtrack.training.batches import make_batch
from streamtrack.training.losses import frame_loss
from streamtrack.training.probes import MemoryProbes
from streamtrack.training.unroll import unroll
from streamtrack.vos import run_tracker_on_clip, score_clip, summarize
from train_tool import TINY, train_module



def batch_loss(state_dict: dict, seed: int = 123) -> float:
    """The training loss of fixed clips (not drawn by the run) under these weights."""
    model = build_sam2(load_config("nano", 128), stability=False).train()
    model.load_state_dict(state_dict)
    rng = np.random.default_rng(seed)
    images, masks, row_clip, plan = make_batch(rng, 128, 2, 3, 2)
    with torch.no_grad():
        return float(unroll(model, images, masks, row_clip, plan, rng)[0])


def test_training_lowers_the_loss(tmp_path):
    torch.set_num_threads(1)
    train = train_module()
    assert train.main(["--out", str(tmp_path), "--steps", "25", *TINY]) == 0
    torch.manual_seed(0)  # the run's initial weights come from its seed
    initial = build_sam2(load_config("nano", 128), stability=False).state_dict()
    trained = torch.load(tmp_path / "nano.pt", weights_only=True)["model"]
    before, after = batch_loss(initial), batch_loss(trained)
    assert after < 0.8 * before, f"loss on held clips went {before:.3f} -> {after:.3f}"
    record = json.loads((tmp_path / "nano.json").read_text())
    assert record["steps"] == 25 and record["seed"] == 0 and record["image_size"] == 128 and "final_100_steps" in record


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    train = train_module()
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "4", *TINY]) == 0
    # The same run stopped after its first step (--max-minutes 0), then resumed.
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "4", "--max-minutes", "0", *TINY]) == 3
    assert not (tmp_path / "b" / "nano.pt").exists()
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "4", *TINY]) == 0
    a = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_drawing_clips_ahead_in_a_worker_trains_the_same_weights(tmp_path):
    """The default run draws each step's clips in a worker process one step ahead; its weights
    equal those of a run that draws them in place, so the unroll's generator continued as well."""
    torch.set_num_threads(1)
    train = train_module()
    in_place = [*TINY, "--return-share", "0.5"]
    ahead = [a for a in in_place if a != "--no-prefetch"]
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "3", *ahead]) == 0
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "3", *in_place]) == 0
    a = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_chooses_the_steps_and_replays_exactly(tmp_path):
    """--minutes picks the step count at the end of the warm-up; that count, given as --steps,
    replays the run bit for bit."""
    torch.set_num_threads(1)
    train = train_module()
    tiny = [*TINY, "--warmup", "3"]  # the last --warmup counts
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "40", "--minutes", "0", *tiny]) == 0
    record = json.loads((tmp_path / "a" / "nano.json").read_text())
    assert record["steps"] == 3 and record["budget_minutes"] == 0  # no time left after the warm-up
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "3", *tiny]) == 0
    a = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The rule itself: 95% of what is left, at the measured step time, between the step and the cap.
    assert train.steps_in_budget(100, 600.0, 4.0, 90.0, 5000) == 100 + int(0.95 * 4800 // 4.0)
    assert train.steps_in_budget(100, 600.0, 4.0, 90.0, 500) == 500
    assert train.steps_in_budget(100, 6000.0, 4.0, 90.0, 5000) == 100


def test_a_time_budget_re_plans_when_steps_slow_down_and_the_re_plan_replays(tmp_path, monkeypatch):
    """Steps of 1 s in the warm-up, then 4 s (a fake clock): the warm-up plan fits 20 steps into
    1 minute, the first checkpoint after it re-plans to what is left, and --replans replays it."""
    torch.set_num_threads(1)
    train = train_module()
    clock = {"now": 0.0, "steps": 0}
    real_unroll = train.unroll

    def timed_unroll(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        clock["now"] += 1.0 if clock["steps"] < 3 else 4.0
        clock["steps"] += 1
        return real_unroll(*args, **kwargs)

    monkeypatch.setattr(train, "unroll", timed_unroll)
    monkeypatch.setattr(train, "time", type("FakeTime", (), {"monotonic": staticmethod(lambda: clock["now"])}))
    tiny = [*TINY, "--warmup", "3", "--save-every", "12"]  # the checkpoint comes after a logged step
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "20", "--minutes", "1", *tiny]) == 0
    record = json.loads((tmp_path / "a" / "nano.json").read_text())
    # At step 12: 39 s gone, 4 s a step, 95% of the 21 s left -> 4 more steps.
    assert record["replans"] == {"12": 16} and record["steps"] == 16
    assert record["train_minutes"] <= 1.0
    monkeypatch.setattr(train, "unroll", real_unroll)
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "20", "--replans", "12:16", *tiny]) == 0
    a = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_tail_average_is_the_mean_of_the_weights_it_was_given_and_resumes():
    torch.manual_seed(0)
    states = [{"w": torch.randn(3, 2), "h": torch.randn(4).half(), "n": torch.tensor(k)} for k in range(5)]
    whole = TailAverage()
    for state in states:
        whole.add(state)
    parted = TailAverage()
    for state in states[:2]:
        parted.add(state)
    resumed = TailAverage()
    resumed.load_state_dict(parted.state_dict())
    for state in states[2:]:
        resumed.add(state)
    for average in (whole, resumed):
        mean = average.weights(states[0])
        assert list(mean) == ["w", "h", "n"] and average.count == 5
        assert torch.allclose(mean["w"], torch.stack([s["w"] for s in states]).mean(0), atol=1e-6)
        assert mean["h"].dtype == torch.float16
        assert torch.allclose(mean["h"].float(), torch.stack([s["h"].float() for s in states]).mean(0), atol=1e-3)
        assert mean["n"].item() == 4  # not a float: the last one given
    assert not torch.allclose(whole.weights(states[0])["w"], states[-1]["w"])
    with pytest.raises(ValueError):
        TailAverage().weights(states[0])


def test_average_from_writes_the_mean_of_the_last_steps_weights_even_across_a_resume(tmp_path):
    """--average-from 2 of 4 steps: nano.pt is the mean of the weights after steps 2 and 3 (from
    0), however often the run was stopped; the run's own weights train as without it."""
    torch.set_num_threads(1)
    train = train_module()
    assert train.main(["--out", str(tmp_path / "plain"), "--steps", "4", *TINY]) == 0
    assert train.main(["--out", str(tmp_path / "avg"), "--steps", "4", "--average-from", "2", *TINY]) == 0
    after_step = {}
    for done in range(1, 4):  # one step per invocation (--max-minutes 0)
        assert train.main(["--out", str(tmp_path / "parts"), "--steps", "4", "--average-from", "2",
                           "--max-minutes", "0", *TINY]) == 3
        after_step[done - 1] = torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["model"]
    assert train.main(["--out", str(tmp_path / "parts"), "--steps", "4", "--average-from", "2", *TINY]) == 0
    plain = torch.load(tmp_path / "plain" / "nano.pt", weights_only=True)["model"]
    averaged = torch.load(tmp_path / "avg" / "nano.pt", weights_only=True)["model"]
    parts = torch.load(tmp_path / "parts" / "nano.pt", weights_only=True)["model"]
    assert all(torch.equal(averaged[k], parts[k]) for k in averaged)
    last = torch.load(tmp_path / "avg" / "last.pt", weights_only=True)["model"]
    # nano.pt's prompt decoder is not trained here: it is a copy of the shared decoder (test_prompt_decoder.py).
    trained = [k for k in plain if not k.startswith("prompt_decoder.")]
    assert all(torch.equal(plain[k], last[k]) for k in trained)  # averaging does not change training
    changed = 0
    for k in trained:
        value = plain[k]
        if value.is_floating_point():
            mean = ((after_step[2][k].double() + value.double()) / 2).to(value.dtype)
            assert torch.allclose(averaged[k], mean, rtol=1e-6, atol=1e-7), k
            changed += not torch.equal(averaged[k], value)
    assert changed > 0
    record = json.loads((tmp_path / "avg" / "nano.json").read_text())
    assert record["average_from"] == 2 and record["averaged_steps"] == 2
    with pytest.raises(SystemExit):
        train.parse_args(["--out", "x", "--average-from", "-1"])


def test_the_absent_score_weight_weighs_only_absent_objects():
    """Object 0 is on the frame, object 1 is gone: only object 1's score term is scaled."""
    torch.manual_seed(0)
    logits, iou, score = torch.randn(2, 1, 8, 8), torch.rand(2, 1), torch.randn(2, 1)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(score[:, 0], torch.tensor([1.0, 0.0]), reduction="none")
    _, plain = frame_loss(logits, iou, score, target)
    _, weighted = frame_loss(logits, iou, score, target, absent_weight=4.0)
    assert plain["score"] == pytest.approx(float(bce.mean()), rel=1e-6)
    assert weighted["score"] == pytest.approx(float((bce[0] + 4 * bce[1]) / 2), rel=1e-6)
    assert weighted["mask"] == plain["mask"] and weighted["iou"] == plain["iou"]


def test_a_lagged_plan_reads_its_memories_at_their_true_ages(monkeypatch):
    """``ClipPlan.times`` sets the object pointers' ages: at time 23, after frame 0 and times 21
    and 22, the prompt's pointer is 23 frames old (3 without the lag). Bad times are refused."""
    import streamtrack.training.unroll as unroll_module

    torch.manual_seed(0)
    model = build_sam2(load_config("nano", 128), stability=False).eval()
    images, masks, row_clip, plan = make_batch(np.random.default_rng(5), 128, 1, 4, 1)
    plan = dataclasses.replace(plan, corrections=frozenset())  # a correction would add a prompt's pointer
    seen = []
    real = unroll_module.sine_1d
    monkeypatch.setattr(unroll_module, "sine_1d", lambda x, c: seen.append(x * unroll_module.LIVE_PTR_WINDOW) or real(x, c))
    with torch.no_grad():
        unroll(model, images, masks, row_clip, dataclasses.replace(plan, times=(0, 21, 22, 23)), np.random.default_rng(1))
        assert seen[-1].tolist() == [23, 1, 2]
        unroll(model, images, masks, row_clip, plan, np.random.default_rng(1))
        assert seen[-1].tolist() == [3, 1, 2]
        for bad in ((0, 1, 2), (1, 2, 3, 4), (0, 2, 2, 3)):
            with pytest.raises(ValueError, match="plan.times"):
                unroll(model, images, masks, row_clip, dataclasses.replace(plan, times=bad), np.random.default_rng(1))


def test_a_lag_share_leaves_some_steps_unlagged():
    """--lag-share P: about P of the steps draw a lag, the others track from the prompt on; with
    P = 1 the batches are those of a run from before the option, draw for draw."""
    first_tracked = {p: [make_batch(np.random.default_rng(s), 64, 1, 2, 1, 0.0, 40, p)[3].times[1] for s in range(12)]
                     for p in (0.0, 0.5)}
    assert first_tracked[0.0] == [1] * 12
    assert 2 <= sum(t > 1 for t in first_tracked[0.5]) <= 10
    for s in range(2):
        old = make_batch(np.random.default_rng(s), 64, 1, 2, 1, 0.0, 40)
        new = make_batch(np.random.default_rng(s), 64, 1, 2, 1, 0.0, 40, 1.0)
        assert (old[3].first, old[3].times, old[3].corrections) == (new[3].first, new[3].times, new[3].corrections)
        assert torch.equal(old[0], new[0]) and torch.equal(old[1], new[1])
    with pytest.raises(SystemExit):
        train_module().parse_args(["--out", "x", "--lag-share", "1.5"])


def test_a_mask_share_sets_how_often_clips_start_from_true_masks():
    """--mask-share P: about P of the steps prompt frame 0 with the true masks, the rest with
    boxes or clicks."""
    kinds = {p: [make_batch(np.random.default_rng(s), 64, 1, 2, 1, mask_share=p)[3].first for s in range(16)]
             for p in (0.0, 0.3, 1.0)}
    assert kinds[1.0] == ["mask"] * 16
    assert "mask" not in kinds[0.0] and {"box", "points"} == set(kinds[0.0])
    assert 1 <= kinds[0.3].count("mask") <= 10
    with pytest.raises(SystemExit):
        train_module().parse_args(["--out", "x", "--mask-share", "-0.1"])


def test_a_return_share_gives_batches_whose_objects_vanish_and_come_back():
    """--return-share 1: every clip's tracked object is gone on some frame and visible again later."""
    masks = make_batch(np.random.default_rng(2), 64, 2, 10, 1, return_share=1.0)[1]
    area = masks.sum((2, 3))  # [R, T]
    for row in area:
        gone = torch.nonzero(row[1:] == 0).flatten()
        assert gone.numel() and bool((row[int(gone[0]) + 2:] > 0).any()), row
    with pytest.raises(SystemExit):
        train_module().parse_args(["--out", "x", "--return-share", "2"])


def test_a_true_prompt_memory_tracks_as_from_a_mask_and_still_scores_the_box():
    """ClipPlan.true_memory: a box-prompted clip's tracked frames see the memory a mask prompt
    gives (so their loss is the mask plan's), while frame 0's box decode is still scored."""
    torch.manual_seed(0)
    model = build_sam2(load_config("nano", 128), stability=False).eval()
    images, masks, row_clip, plan = make_batch(np.random.default_rng(5), 128, 2, 3, 2, mask_share=0.0)
    assert plan.first in ("box", "points")
    plan = dataclasses.replace(plan, corrections=frozenset())
    runs = {}
    with torch.no_grad():
        for name, p in (("mask", dataclasses.replace(plan, first="mask")), ("prompt", plan),
                        ("true", dataclasses.replace(plan, true_memory=True))):
            runs[name] = unroll(model, images, masks, row_clip, p, np.random.default_rng(1))
    assert runs["true"][1]["track"] == runs["mask"][1]["track"]
    assert runs["prompt"][1]["track"] != runs["mask"][1]["track"]
    # 3 frames scored, plus the box decode: the mean over 4 frames against 3.
    assert runs["true"][0].item() != pytest.approx(runs["mask"][0].item(), rel=1e-4)


def test_the_image_loss_adds_memory_free_prompted_decodes():
    """--image-weight adds its weight times a loss of its own, leaves the tracking terms as they
    were, and skips frames where no object is visible."""
    from streamtrack.training.unroll import prompted_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_sam2(load_config("nano", 128), stability=False).train()
    images, masks, row_clip, plan = make_batch(np.random.default_rng(5), 128, 2, 3, 2)
    totals, parts = [], []
    for weight in (0.0, 1.0, 2.0):
        total, p = unroll(model, images, masks, row_clip, plan, np.random.default_rng(1), image_weight=weight)
        totals.append(total.item())
        parts.append(p)
    assert "image" not in parts[0] and parts[1]["image"] > 0 and parts[1]["image"] == parts[2]["image"]
    assert parts[1]["mask"] == parts[0]["mask"] and parts[1]["track"] == parts[0]["track"]
    assert totals[1] > totals[0]
    assert totals[2] - totals[0] == pytest.approx(2 * (totals[1] - totals[0]), rel=1e-4)
    feats = model.encode_image(images[0, :1])
    empty = torch.zeros(2, 1, 128, 128)
    assert prompted_loss(model, feats.embed.expand(2, -1, -1, -1), tuple(x.expand(2, -1, -1, -1) for x in feats.high_res),
                         empty, np.random.default_rng(0)) is None


def test_memory_readouts_train_the_memory_path():
    """The read-out losses add to the tracking loss, and their gradient reaches the memory
    encoder and memory attention (it would not if they read detached features)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config("nano", 128)
    model = build_sam2(cfg, stability=False).train()
    probes = MemoryProbes(cfg.mem_dim, cfg.hidden_dim)
    images, masks, row_clip, plan = make_batch(np.random.default_rng(5), 128, 2, 3, 2)
    plain, _ = unroll(model, images, masks, row_clip, plan, np.random.default_rng(1))
    total, parts = unroll(model, images, masks, row_clip, plan, np.random.default_rng(1), probes)
    assert parts["probe_mem"] > 0 and parts["probe_cond"] > 0
    readouts = total - plain
    assert readouts.item() == pytest.approx(parts["probe_mem"] + parts["probe_cond"], rel=1e-4)
    readouts.backward()
    for module in (model.memory_encoder, model.memory_attention, probes.memory, probes.conditioned):
        grads = [p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None]
        assert grads and max(grads) > 0, type(module).__name__


def test_the_shipped_weights_are_the_default_and_small():
    path = resolve_checkpoint("nano", None)
    assert path == shipped_checkpoint() and path.is_file()
    assert path.stat().st_size <= 10 * 2**20
    record = json.loads(path.with_suffix(".json").read_text())
    for key in ("command", "seed", "steps", "train_minutes", "final_100_steps"):
        assert key in record
    assert record["train_minutes"] <= 90
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.pt"):
        resolve_checkpoint("sam2.1_hiera_t", None)


QUALITY_FLOOR = 0.75
"""Issue 7's target for this test. The shipped weights measure 0.764 on these 6 clips (0.694 on the 30 clips
of eval_vos, where the issue's target of 0.85 is not met; docs/nano-model.md)."""


def test_nano_tracks_the_held_out_benchmark():
    """A fast subset of the held-out synthetic benchmark (tools/eval_vos.py runs all of it)."""
    torch.set_num_threads(2)
    model = load_model("nano", resolve_checkpoint("nano", None))
    scores = []
    for name, frames, gts in benchmark_clips(count=6):
        tracker = Tracker(model, TrackerConfig(max_objects=len(gts[0])))
        preds, _, prompt_frames = run_tracker_on_clip(tracker, frames, gts)
        scores.append(score_clip(preds, gts, skip=prompt_frames, name=name))
    summary = summarize(scores)
    print(summary)
    assert summary["J&F"] >= QUALITY_FLOOR, summary


def test_the_decoder_stage_trains_only_the_decoder_and_lowers_its_loss(tmp_path):
    """--decoder-only fine-tunes the prompt encoder and mask decoder of --init's model (here with
    two updates per unroll) and leaves every other weight as it was; its loss on held clips falls."""
    from streamtrack.training.decoder_stage import decoder_loss, record_frames

    torch.set_num_threads(1)
    train = train_module()
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "2", *TINY]) == 0
    start = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "10", "--decoder-only", "--image-weight", "1",
                       "--decoder-updates", "2", "--init", str(tmp_path / "a" / "nano.pt"), *TINY]) == 0
    tuned = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    decoder = ("sam_prompt_encoder.", "sam_mask_decoder.", "prompt_decoder.")  # saved as a copy of the shared
    assert all(torch.equal(start[k], tuned[k]) for k in start if not k.startswith(decoder))
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith("sam_mask_decoder."))
    record = json.loads((tmp_path / "b" / "nano.json").read_text())
    assert record["decoder_only"] is True and record["decoder_updates"] == 2 and "image" in record["final_100_steps"]

    def held_loss(state: dict) -> float:
        model = build_sam2(load_config("nano", 128), stability=False).train()
        model.load_state_dict(state)
        rng = np.random.default_rng(123)
        images, masks, row_clip, plan = make_batch(rng, 128, 2, 3, 2)
        with torch.no_grad():
            return float(decoder_loss(model, record_frames(model, images, masks, row_clip, plan, rng), masks, rng)[0])

    before, after = held_loss(start), held_loss(tuned)
    assert after < before, f"decoder-stage loss on held clips went {before:.3f} -> {after:.3f}"
    with pytest.raises(SystemExit):
        train.parse_args(["--out", "x", "--decoder-only", "--image-weight", "1"])  # no --init
    with pytest.raises(SystemExit):
        train.parse_args(["--out", "x", "--decoder-updates", "2"])  # not a decoder stage


def test_a_frozen_image_encoder_keeps_its_weights_and_the_rest_trains(tmp_path):
    """--freeze-image-encoder leaves --init's Hiera trunk and neck exactly as they were, and still
    trains the memory path and the decoder."""
    torch.set_num_threads(1)
    train = train_module()
    assert train.main(["--out", str(tmp_path / "a"), "--steps", "2", *TINY]) == 0
    start = torch.load(tmp_path / "a" / "nano.pt", weights_only=True)["model"]
    assert train.main(["--out", str(tmp_path / "b"), "--steps", "3", "--freeze-image-encoder",
                       "--init", str(tmp_path / "a" / "nano.pt"), *TINY]) == 0
    tuned = torch.load(tmp_path / "b" / "nano.pt", weights_only=True)["model"]
    encoder = [k for k in start if k.startswith("image_encoder.")]
    assert encoder and all(torch.equal(start[k], tuned[k]) for k in encoder)
    for part in ("memory_attention.", "memory_encoder.", "sam_mask_decoder."):
        assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith(part)), part
    assert json.loads((tmp_path / "b" / "nano.json").read_text())["freeze_image_encoder"] is True
    for bad in (["--freeze-image-encoder"], ["--freeze-image-encoder", "--init", "x.pt", "--decoder-only", "--image-weight", "1"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--out", "x", *bad])
