"""A training stage for the prompt encoder and mask decoder alone.

Trained with the rest of the model, the nano decoder learns to decode tracked frames and
answers a box or a click with one salient-object guess, wherever the prompt is
(docs/nano-model.md, "Prompts are ignored"). Trained on prompts alone, with the rest of the model
fixed, it learns to follow a box within a few hundred steps, but then it no longer tracks. This
stage keeps the image encoder, memory attention and memory encoder fixed, runs the tracker's
unroll without gradient to get each frame's features, and trains the decoder on both at once:
the tracked frames' memory-conditioned features (as in :func:`unroll.unroll`) and memory-free
decodes of every visible object on every frame from a box or clicks
(:func:`unroll.prompted_loss`). docs/nano-model.md has what its runs gave.
"""

from __future__ import annotations

import numpy as np
import torch

from streamtrack.model import SAM2
from streamtrack.tracker import heads
from streamtrack.training.unroll import ClipPlan, FrameRecord, decode_loss, prompted_loss, unroll


def trainable(model: SAM2) -> list[torch.nn.Parameter]:
    """The parameters this stage trains; every other parameter of ``model`` is frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.sam_prompt_encoder.parameters()) + list(model.sam_mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def record_frames(model: SAM2, images: torch.Tensor, masks: torch.Tensor, row_clip: torch.Tensor, plan: ClipPlan,
                  rng: np.random.Generator) -> list[FrameRecord]:
    """Each frame's decoder inputs from the tracking unroll of a batch laid out as for
    :func:`unroll.unroll` (``images: float[C, T, 3, S, S]``, ``masks: float[R, T, S, S]``,
    ``row_clip: int[R]``), computed without gradient."""
    frames: list[FrameRecord] = []
    with torch.no_grad():
        unroll(model, images, masks, row_clip, plan, rng, record=frames)
    return frames


def decoder_loss(model: SAM2, frames: list[FrameRecord], masks: torch.Tensor, rng: np.random.Generator,
                 absent_weight: float = 1.0, prompt_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean frame loss of the tracked frames' decodes plus ``prompt_weight`` times that of the
    prompted decodes (prompts drawn from ``rng``). Parts: "track" (mask term of tracked frames),
    "iou", "score" (tracked frames) and "image" (mask term of prompted decodes)."""
    tracked = [f for f in frames if f.conditioned is not None]
    parts: dict[str, float] = {}
    total = masks.new_zeros(())
    if tracked:
        pix = torch.cat([f.conditioned for f in tracked])
        high_res = tuple(torch.cat([f.high_res[i] for f in tracked]) for i in range(2))
        target = torch.cat([masks[:, f.t, None] for f in tracked])
        no_xy, no_lab = heads.no_points(pix.shape[0], pix.device)
        out = model.decode(pix, high_res, no_xy, no_lab, None, multimask=model.cfg.multimask_tracking)
        total, p = decode_loss(out, target, absent_weight)
        parts = {"track": p["mask"], "iou": p["iou"], "score": p["score"]}
    prompted = [prompted_loss(model, f.raw, f.high_res, masks[:, f.t, None], rng) for f in frames]
    prompted = [term for term in prompted if term is not None]
    if prompted:
        total = total + prompt_weight * torch.stack([loss for loss, _ in prompted]).mean()
        parts["image"] = float(np.mean([p["mask"] for _, p in prompted]))
    return total, parts
