"""One training forward pass over a batch of clips: the tracker's per-frame recipe, differentiable.

Frame 0 is prompted (mask, box or clicks) and decoded without memory. Every later frame attends
to the memories and object pointers of earlier frames, chosen as the tracker chooses them
(conditioning frames, the num_maskmem - 1 most recent frames, pointers up to max_obj_ptrs - 1
frames old), and is decoded as the tracker decodes it (with multimask output unless the config
turns ``multimask_tracking`` off). On correction frames a click is sampled from
the error of that prediction, and the frame is decoded again with it and becomes a conditioning
frame, as a live user's correction does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from streamtrack.model import SAM2, DecoderOutput
from streamtrack.model.common import sine_1d, sine_position_encoding
from streamtrack.tracker import heads
from streamtrack.tracker.tracker import PREV_LOGITS_CLAMP
from streamtrack.training.clips import PointPrompt, correction_click, first_frame_prompt, pad_prompts
from streamtrack.training.losses import frame_loss
from streamtrack.training.probes import MemoryProbes, probe_loss

LIVE_PTR_WINDOW = 15
"""Pointer ages are divided by this, as the tracker does on live streams of unknown length."""

EMBED_WEIGHT = 0.01
"""Weight of mean(embedding^2) in the loss. Trained from scratch without it, the image embedding
grows (mean |x| 0.5 -> 19 within 600 steps) until the mask prompt and the mask in the memory
encoder, both added to it, no longer matter: every object gets the same memory and mask."""


@dataclass(frozen=True)
class ClipPlan:
    """How a batch of clips is prompted."""

    first: str
    """"mask", "box" or "points"."""
    first_prompts: list[PointPrompt] = field(default_factory=list)
    """Per object, for "box" and "points"."""
    corrections: frozenset[int] = frozenset()
    """Frames (>= 1) that get a correction click."""
    times: tuple[int, ...] | None = None
    """Each frame's index in its scene counted from frame 0 (``clips.clip_times``), which sets
    memory slots and pointer ages; None: consecutive frames."""
    true_memory: bool = False
    """With a "box" or "points" prompt: score the prompt's decode on frame 0, but write the true
    mask into memory (with the pointer of its mask-prompt decode), as a "mask" plan does, so the
    tracked frames never start from a wrong prompt memory."""


@dataclass(frozen=True)
class FrameRecord:
    """What one frame of an unroll fed its decoder (see ``unroll(record=)``)."""

    t: int
    """The frame's index in the clip."""
    raw: torch.Tensor
    """float[B, C, h, w]: image features without memory."""
    high_res: tuple[torch.Tensor, torch.Tensor]
    conditioned: torch.Tensor | None
    """float[B, C, h, w]: memory-conditioned features of a tracked frame; None on frame 0."""


@dataclass
class _Memory:
    frame: int
    """Its frame's time (``ClipPlan.times``)."""
    spatial: torch.Tensor
    """float[B, mem_dim, h, w]."""
    ptr: torch.Tensor
    """float[B, C]."""
    cond: bool


def unroll(model: SAM2, images: torch.Tensor, masks: torch.Tensor, row_clip: torch.Tensor, plan: ClipPlan,
           rng: np.random.Generator, probes: MemoryProbes | None = None, absent_weight: float = 1.0,
           image_weight: float = 0.0, record: list[FrameRecord] | None = None
           ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of R objects in C clips, tracked side by side.

    ``images: float[C, T, 3, S, S]`` normalised; ``masks: float[R, T, S, S]`` in {0, 1};
    ``row_clip: int[R]``, the clip of each object. Returns the mean over scored frames of
    :func:`frame_loss`, and averaged loss parts. With ``probes``, the mean of their read-out
    losses (on every memory written, and on every frame's memory-conditioned features) is added.
    ``absent_weight`` weighs the object-score loss of objects absent from a frame. With
    ``image_weight`` > 0, every frame also segments each visible object from a box or clicks
    sampled from its true mask, without memory (as the image predictor does), and that mean
    frame loss is added with this weight: it trains the image encoder and decoder on many more
    prompts than the one per clip (drawn from ``rng``, so only when on). ``record``, when given,
    receives each frame's decoder inputs (:class:`FrameRecord`).
    """
    n_clips, t_len = images.shape[:2]
    times = plan.times or tuple(range(t_len))
    if len(times) != t_len or times[0] != 0 or any(later <= sooner for sooner, later in zip(times, times[1:])):
        raise ValueError(f"plan.times must rise from 0 with one time per frame ({t_len}), got {times}")
    b = masks.shape[0]
    dev = images.device
    feats = model.encode_image(images.flatten(0, 1))
    c, h, w = feats.embed.shape[1:]
    embed = feats.embed.view(n_clips, t_len, c, h, w)[row_clip]
    embed_pos = feats.embed_pos[:1]
    hr = [x.view(n_clips, t_len, *x.shape[1:])[row_clip] for x in feats.high_res]
    grid_pe = sine_position_encoding(model.cfg.mem_dim, h, w, dev).flatten(1).transpose(0, 1)  # [hw, m]

    memories: list[_Memory] = []
    losses: list[torch.Tensor] = []
    parts: dict[str, float] = {}

    tracked: list[float] = []
    probe_terms: dict[str, list[torch.Tensor]] = {"probe_mem": [], "probe_cond": []}

    def score(out, target, tracking: bool = False):  # noqa: ANN001, ANN202
        loss, p = decode_loss(out, target, absent_weight)
        losses.append(loss)
        for k, v in p.items():
            parts[k] = parts.get(k, 0.0) + v
        if tracking:
            tracked.append(p["mask"])

    for t in range(t_len):
        target = masks[:, t, None]
        frame_hr = (hr[0][:, t], hr[1][:, t])
        raw = embed[:, t]
        cond = t == 0
        pix = None
        if t == 0:
            if plan.first != "mask":
                out = _memory_free_decode(model, raw, frame_hr, plan.first_prompts, plan.first)
                score(out, target)
            if plan.first == "mask" or plan.true_memory:
                # The mask is the answer (as in the tracker); decoding it as a mask input is trained
                # too, since the object pointer comes from that decode.
                inner = heads.decode_mask_prompt(model, raw, frame_hr, target)
                score(inner, target)
                chosen = heads.mask_answer(model, target, inner)
            else:
                chosen = heads.choose(model, out)
        else:
            pix = _condition(model, raw, embed_pos, memories, times[t], grid_pe)
            if probes is not None:
                probe_terms["probe_cond"].append(probe_loss(probes.conditioned, pix, target))
            no_xy, no_lab = heads.no_points(b, dev)
            out = model.decode(pix, frame_hr, no_xy, no_lab, None, multimask=model.cfg.multimask_tracking)
            score(out, target, tracking=True)
            chosen = heads.choose(model, out)
            if t in plan.corrections:
                chosen, cond = _correct(model, pix, frame_hr, chosen, target, rng, score), True
        if record is not None:
            record.append(FrameRecord(t, raw, frame_hr, pix))
        mem = heads.encode_memory(model, raw, chosen.high_res.detach(), chosen.object_score.detach(), binarize=cond)
        memories.append(_Memory(times[t], mem.float(), chosen.obj_ptr, cond))
        if probes is not None:
            written = (chosen.high_res.detach() > 0).float()
            probe_terms["probe_mem"].append(probe_loss(probes.memory, mem.float(), written))

    image_terms = [prompted_loss(model, embed[:, t], (hr[0][:, t], hr[1][:, t]), masks[:, t, None], rng)
                   for t in range(t_len)] if image_weight > 0 else []
    image_terms = [term for term in image_terms if term is not None]

    n = max(len(losses), 1)
    embed_term = feats.embed.pow(2).mean()
    out = {k: v / n for k, v in parts.items()} | {"embed": embed_term.item()}
    if tracked:
        out["track"] = float(np.mean(tracked))
    total = torch.stack(losses).mean() + EMBED_WEIGHT * embed_term
    if image_terms:
        out["image"] = float(np.mean([p["mask"] for _, p in image_terms]))
        total = total + image_weight * torch.stack([loss for loss, _ in image_terms]).mean()
    for k, terms in probe_terms.items():
        if terms:
            term = torch.stack(terms).mean()
            out[k] = term.item()
            total = total + term
    return total, out


def prompted_loss(model: SAM2, raw: torch.Tensor, frame_hr: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor,
                  rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]] | None:
    """:func:`frame_loss` of the visible objects of one frame, each segmented without memory from
    a box or 1-3 clicks sampled from ``target: float[B, 1, S, S]``; None when none is visible."""
    rows = torch.nonzero(target.flatten(1).amax(1) > 0).flatten()
    if len(rows) == 0:
        return None
    kind = "box" if rng.random() < 0.5 else "points"
    prompts = [first_frame_prompt(rng, m, kind) for m in target[rows, 0].cpu().numpy() > 0.5]
    out = _memory_free_decode(model, raw[rows], (frame_hr[0][rows], frame_hr[1][rows]), prompts, kind)
    return decode_loss(out, target[rows])


def _memory_free_decode(model: SAM2, raw: torch.Tensor, frame_hr: tuple[torch.Tensor, torch.Tensor],
                        prompts: list[PointPrompt], kind: str) -> DecoderOutput:
    """Each object's ``kind`` ("box" or "points") prompt decoded on ``raw: float[B, C, h, w]`` with
    no memory, as on a prompted first frame; three candidates when every object has one click."""
    coords, labels = (torch.from_numpy(a).to(raw.device) for a in pad_prompts(prompts))
    single_click = kind == "points" and bool((labels >= 0).sum(1).eq(1).all())
    pix = raw + model.no_mem_embed.view(1, -1, 1, 1)
    return model.decode(pix, frame_hr, coords, labels, None, multimask=single_click)


def decode_loss(out: DecoderOutput, target: torch.Tensor, absent_weight: float = 1.0
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`frame_loss` of a decode, its logits upsampled to ``target: float[B, 1, S, S]``."""
    s = target.shape[-1]
    logits = F.interpolate(out.low_res_logits, size=(s, s), mode="bilinear", align_corners=False)
    return frame_loss(logits, out.iou, out.object_score_logits, target, absent_weight)


def _correct(model: SAM2, pix: torch.Tensor, frame_hr: tuple[torch.Tensor, torch.Tensor], chosen: heads.HeadOutput,
             target: torch.Tensor, rng: np.random.Generator, score) -> heads.HeadOutput:  # noqa: ANN001
    """Decode again with one click on each object's error (objects with no error get a padding point)."""
    pred = (chosen.high_res.detach()[:, 0] > 0).cpu().numpy()
    gt = target[:, 0].cpu().numpy() > 0.5
    prompts = []
    for p, g in zip(pred, gt):
        click = correction_click(rng, p, g)
        prompts.append(click or PointPrompt(np.zeros((1, 2), np.float32), np.array([-1], np.int32)))
    coords, labels = (torch.from_numpy(a).to(pix.device) for a in pad_prompts(prompts))
    prev = chosen.low_res.detach().clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
    out = model.decode(pix, frame_hr, coords, labels, prev, multimask=False)
    score(out, target)
    return heads.choose(model, out)


def _condition(model: SAM2, raw: torch.Tensor, embed_pos: torch.Tensor, memories: list[_Memory], t: int,
               grid_pe: torch.Tensor) -> torch.Tensor:
    """``raw: float[B, C, h, w]`` -> memory-conditioned features for the frame at time ``t``, as the
    tracker builds its keys."""
    cfg = model.cfg
    b, c, h, w = raw.shape
    m = cfg.mem_dim
    tpos = model.maskmem_tpos_enc.view(cfg.num_maskmem, m)
    cond = [mm for mm in memories if mm.cond]
    recent = sorted((mm for mm in memories if not mm.cond and 1 <= t - mm.frame <= cfg.num_maskmem - 1),
                    key=lambda mm: mm.frame)
    if cfg.cond_memory_max_age and recent:  # after a --prompt-lag gap there may be no recent frame
        cond = [mm for mm in cond if t - mm.frame <= cfg.cond_memory_max_age]
    spatial = cond + recent
    keys, key_pos = [], []
    for mm in spatial:
        keys.append(mm.spatial.flatten(2).transpose(1, 2))  # [B, hw, m]
        slot = cfg.num_maskmem - 1 if mm.cond else t - mm.frame - 1
        key_pos.append((grid_pe + tpos[slot]).expand(b, -1, -1))
    ptrs = [mm for mm in memories if mm.cond] + sorted(
        (mm for mm in memories if not mm.cond and 1 <= t - mm.frame <= min(cfg.max_obj_ptrs, LIVE_PTR_WINDOW + 1) - 1),
        key=lambda mm: -mm.frame)
    split = c // m
    ptr_tokens = torch.stack([mm.ptr for mm in ptrs], 1).reshape(b, -1, m)
    ages = torch.tensor([float(t - mm.frame) for mm in ptrs], device=raw.device)
    if model.obj_ptr_tpos_proj is not None:
        ptr_pos = model.obj_ptr_tpos_proj(sine_1d(ages / LIVE_PTR_WINDOW, c))  # [P, m]
    else:
        ptr_pos = raw.new_zeros(len(ptrs), m)
    ptr_pos = ptr_pos.repeat_interleave(split, 0).expand(b, -1, -1)
    memory = torch.cat(keys + [ptr_tokens], 1)
    memory_pos = torch.cat(key_pos + [ptr_pos], 1)
    curr = raw.flatten(2).transpose(1, 2)
    curr_pos = embed_pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
    out = model.memory_attention(curr, curr_pos, memory, memory_pos, ptr_tokens.shape[1], None)
    return out.transpose(1, 2).reshape(b, c, h, w)
