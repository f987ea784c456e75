"""The per-frame step: memory conditioning, decoding and memory writing for a batch of objects.

Everything here works on whole fixed-shape bank buffers; which slots take part is
a mask computed from the slots' frame indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamtrack.model import SAM2, BackboneFeatures
from streamtrack.model.common import sine_1d
from streamtrack.postprocess import non_overlapping
from streamtrack.timing import StageTimes
from streamtrack.tracker import heads
from streamtrack.tracker.bank import MemoryBank



@dataclass
class MemoryView:
    """The keys one frame attends to, for R object rows."""

    memory: torch.Tensor
    """float[R, K*h*w + P*4, 64]: spatial memories, then pointer tokens (4 per pointer)."""
    memory_pos: torch.Tensor
    """float[R, K*h*w + P*4, 64]."""
    key_valid: torch.Tensor | None
    """bool[R, K*h*w + P*4]; None when every key is valid."""
    n_ptr_tokens: int


def memory_view(
    model: SAM2, bank: MemoryBank, rows: torch.Tensor, frame: int | torch.Tensor, fixed_shapes: bool, stream_length: int | None = None
) -> MemoryView:
    """Gather the memories object ``rows`` (int[R]) may use on ``frame``.

    Conditioning frames count (temporal slot 0), while at most the config's
    ``cond_memory_max_age`` frames old when that is set; recent frames count when
    1 to num_maskmem-1 frames old. Pointers: conditioning frames not in the
    future, and recent frames 1 to max_obj_ptrs-1 frames old.

    Pointer temporal positions are ages divided by ``min(stream_length, max_obj_ptrs) - 1``
    (15 for live streams of unknown length), as the official predictor scales them.

    ``fixed_shapes``: keep every slot and mask the unused ones (shapes never change,
    as CUDA graphs need). Otherwise only slots some row uses are gathered, in the
    official order, and the mask is dropped when every row uses all of them: the
    exact and faster path for eager execution.
    """
    s = bank.shape
    hw = s.embed_size**2
    r = rows.shape[0]

    age = frame - bank.spatial_frame[rows]  # [R, K]
    is_cond = bank.is_cond_spatial[None]
    max_age = model.cfg.cond_memory_max_age
    cond_ok = is_cond & (age <= max_age) if max_age else is_cond
    valid = bank.spatial_valid[rows] & (cond_ok | (~is_cond & (age >= 1) & (age <= s.num_maskmem - 1)))
    p_age = frame - bank.ptr_frame[rows]  # [R, P]
    p_cond = bank.is_cond_ptr[None]
    ptr_window = min(stream_length or s.max_obj_ptrs, s.max_obj_ptrs) - 1
    p_valid = bank.ptr_valid[rows] & torch.where(p_cond, p_age >= 0, (p_age >= 1) & (p_age <= ptr_window))

    if fixed_shapes:
        k_idx = torch.arange(s.spatial_slots, device=rows.device)
        p_idx = torch.arange(s.ptr_slots, device=rows.device)
        # A row with no valid key at all (an unused object slot) would give NaNs; let it see slot 0.
        valid = valid | (~valid.any(1, keepdim=True) & (k_idx == 0)[None])
    else:
        k_idx = _official_order(valid, bank.spatial_frame[rows], bank.is_cond_spatial, bank.cond_added[rows], newest_first=False)
        p_idx = _official_order(p_valid, bank.ptr_frame[rows], bank.is_cond_ptr, bank.cond_added[rows], newest_first=True)
        age, valid, p_age, p_valid = age[:, k_idx], valid[:, k_idx], p_age[:, p_idx], p_valid[:, p_idx]
        is_cond = is_cond[:, k_idx]

    tpos_idx = torch.where(is_cond, s.num_maskmem - 1, age - 1).clamp(0, s.num_maskmem - 1)
    tpos = model.maskmem_tpos_enc.view(s.num_maskmem, s.mem_dim)[tpos_idx]  # [R, k, 64]
    spatial = bank.spatial[rows][:, k_idx].float().reshape(r, -1, s.mem_dim)
    spatial_pos = (bank.grid_pe[None, None] + tpos[:, :, None, :]).reshape(r, -1, s.mem_dim)

    ptrs = bank.ptr[rows][:, p_idx]  # [R, p, 256]
    split = s.hidden_dim // s.mem_dim
    ptr_tokens = ptrs.reshape(r, -1, s.mem_dim)  # each pointer -> `split` consecutive tokens
    if model.obj_ptr_tpos_proj is not None:
        ptr_pos = model.obj_ptr_tpos_proj(sine_1d(p_age.float() / max(ptr_window, 1), s.hidden_dim))
    else:
        ptr_pos = ptrs.new_zeros(r, ptrs.shape[1], s.mem_dim)
    ptr_pos = ptr_pos.repeat_interleave(split, dim=1)

    key_valid = torch.cat((valid.repeat_interleave(hw, 1), p_valid.repeat_interleave(split, 1)), 1)
    if not fixed_shapes and bool(key_valid.all()):
        key_valid = None
    return MemoryView(
        memory=torch.cat((spatial, ptr_tokens), 1),
        memory_pos=torch.cat((spatial_pos, ptr_pos), 1),
        key_valid=key_valid,
        n_ptr_tokens=ptr_tokens.shape[1],
    )


def _official_order(
    valid: torch.Tensor, frames: torch.Tensor, is_cond: torch.Tensor, cond_added: torch.Tensor, newest_first: bool
) -> torch.Tensor:
    """Indices of the slots any row uses, ordered as the official tracker concatenates them:
    conditioning frames in the order they were added, then recent frames by age.
    (Order changes results only by float rounding; matching it keeps parity tight.)"""
    used = valid.any(0).nonzero().flatten().tolist()
    c = cond_added.shape[1]
    f0 = frames[0].tolist()
    added = cond_added[0].tolist()
    cond = sorted((i for i in used if is_cond[i]), key=lambda i: added[i] if i < c else 0)
    recent = sorted((i for i in used if not is_cond[i]), key=lambda i: f0[i], reverse=newest_first)
    return torch.tensor(cond + recent, dtype=torch.long, device=valid.device)


def condition_on_memory(model: SAM2, embed: torch.Tensor, embed_pos: torch.Tensor, view: MemoryView) -> torch.Tensor:
    """``embed/embed_pos: float[1, 256, h, w]`` frame features -> ``float[R, 256, h, w]`` per object."""
    r = view.memory.shape[0]
    _, c, h, w = embed.shape
    curr = embed.flatten(2).transpose(1, 2).expand(r, -1, -1)
    curr_pos = embed_pos.flatten(2).transpose(1, 2).expand(r, -1, -1)
    out = model.memory_attention(curr, curr_pos, view.memory, view.memory_pos, view.n_ptr_tokens, view.key_valid)
    return out.transpose(1, 2).reshape(r, c, h, w)



def frame_step(
    model: SAM2,
    bank: MemoryBank,
    feats: BackboneFeatures,
    frame: int | torch.Tensor,
    rows: torch.Tensor,
    active: torch.Tensor,
    fixed_shapes: bool,
    stream_length: int | None,
    times: StageTimes | None = None,
) -> heads.HeadOutput:
    """Track bank ``rows`` (int[R]) on ``frame`` and store their new memories.

    ``frame`` may be a 0-dim long tensor: then nothing here reads a value back to the host,
    and the step can be recorded as a CUDA graph (see :mod:`streamtrack.tracker.graph`).

    ``active: bool[R]`` marks the rows that hold objects; only those get memories
    marked valid. With fixed shapes the caller passes every row, so every tensor
    entering and inside this step keeps its shape from frame to frame.
    ``times`` (optional) gets the end of memory attention, decoder and memory encoder.
    """
    r = rows.shape[0]
    view = memory_view(model, bank, rows, frame, fixed_shapes, stream_length)
    pix = condition_on_memory(model, feats.embed, feats.embed_pos, view)
    _mark(times, "memory_attention")
    coords, labels = heads.no_points(r, feats.embed.device)
    out = heads.decode(model, pix, feats.high_res, coords, labels, None, multimask=model.cfg.multimask_tracking)
    _mark(times, "decoder")
    masks = out.high_res
    if model.cfg.non_overlap_memory and r > 1:
        masks = non_overlapping(masks, active if fixed_shapes else None)  # else every row is active
    mem = heads.encode_memory(model, feats.embed, masks, out.object_score, binarize=False)
    bank.write_recent(rows, frame, mem, out.obj_ptr, active)
    _mark(times, "memory_encoder")
    return out


def _mark(times: StageTimes | None, stage: str) -> None:
    if times is not None:
        times.mark(stage)
