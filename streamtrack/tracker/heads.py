"""What the tracker does with the model on one frame, for B objects at once.

Pure functions of the model and tensors: decoding with object pointers and the
visibility rule, the mask-prompt shortcut, and memory encoding. No state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from streamtrack.model import SAM2, DecoderOutput

ABSENT_LOGIT = -1024.0
"""Mask logit written everywhere when the object-score head says the object is not visible."""

MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0
"""A binary mask prompt m becomes logits m * 20 - 10 (sigmoid(-10) ~ 4.5e-5)."""


@dataclass
class HeadOutput:
    """The chosen mask and what goes with it, for B objects."""

    low_res: torch.Tensor
    """float[B, 1, S/4, S/4] mask logits (ABSENT_LOGIT everywhere when not visible)."""
    high_res: torch.Tensor
    """float[B, 1, S, S] the same, upsampled to the model input size."""
    iou: torch.Tensor
    """float[B] predicted IoU of the chosen mask."""
    obj_ptr: torch.Tensor
    """float[B, 256] object pointer (the learned 'no object' pointer when not visible)."""
    object_score: torch.Tensor
    """float[B, 1] object-score logit; > 0 means visible."""


def no_points(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'no point' prompt the decoder gets when tracking: one (0, 0) point labelled -1."""
    return torch.zeros(batch, 1, 2, device=device), -torch.ones(batch, 1, dtype=torch.int32, device=device)


def decode(
    model: SAM2,
    pix_feat: torch.Tensor,
    high_res_feats: tuple[torch.Tensor, torch.Tensor],
    coords: torch.Tensor,
    labels: torch.Tensor,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> HeadOutput:
    """Decode B objects and pick each one's mask.

    ``pix_feat: float[B, 256, h, w]`` (memory-conditioned, or raw + no-memory embedding);
    ``coords: float[B, N, 2]`` model pixels; ``labels: int[B, N]``;
    ``mask_input: float[B, 1, S/4, S/4]`` logits or None.
    With ``multimask`` the candidate with the highest predicted IoU wins, and its
    token becomes the object pointer.
    """
    out = model.decode(pix_feat, high_res_feats, coords, labels, mask_input, multimask, batch=pix_feat.shape[0])
    return choose(model, out)


def choose(model: SAM2, out: DecoderOutput) -> HeadOutput:
    """Each object's candidate with the highest predicted IoU, its pointer, and the visibility rule."""
    b = out.iou.shape[0]
    visible = out.object_score_logits > 0  # [B, 1]
    low = torch.where(visible[:, :, None, None], out.low_res_logits, ABSENT_LOGIT).float()
    best = out.iou.argmax(dim=-1)
    rows = torch.arange(b, device=low.device)
    low, iou, token = low[rows, best][:, None], out.iou[rows, best], out.tokens[rows, best]
    high = F.interpolate(low, size=(model.image_size,) * 2, mode="bilinear", align_corners=False)
    return HeadOutput(low, high, iou, mix_no_object(model, model.obj_ptr_proj(token), visible), out.object_score_logits)


def mix_no_object(model: SAM2, ptr: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``ptr: [B, C]``, ``visible: bool[B, 1]`` -> the pointer where visible, else the learned no-object pointer."""
    v = visible.float()
    return v * ptr + (1 - v) * model.no_obj_ptr


def mask_as_output(
    model: SAM2, raw_feat: torch.Tensor, high_res_feats: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
) -> HeadOutput:
    """A mask prompt is taken as the answer as it is; the decoder only supplies the pointer.

    ``raw_feat: float[B, 256, h, w]`` frame features without memory;
    ``mask: float[B, 1, S, S]`` in {0, 1} at model resolution.
    """
    return mask_answer(model, mask, decode_mask_prompt(model, raw_feat, high_res_feats, mask))


def decode_mask_prompt(
    model: SAM2, raw_feat: torch.Tensor, high_res_feats: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
) -> DecoderOutput:
    """The decoder's single-mask answer to ``mask: float[B, 1, S, S]`` given as a mask input (no points)."""
    coords, labels = no_points(mask.shape[0], mask.device)
    return model.decode(raw_feat, high_res_feats, coords, labels, model.mask_downsample(mask), False,
                        batch=mask.shape[0])


def mask_logits(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask: float[B, 1, S, S]`` in {0, 1} -> the logits a mask prompt's answer carries, at ``S``
    and at ``S/4`` (what a later prompt on that frame gets as its mask input)."""
    high = mask * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
    side = mask.shape[-1] // 4
    return high, F.interpolate(high, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def mask_answer(model: SAM2, mask: torch.Tensor, inner: DecoderOutput) -> HeadOutput:
    """The mask itself as the output, with the pointer of ``inner`` (:func:`decode_mask_prompt`)."""
    b = mask.shape[0]
    high, low = mask_logits(mask)
    visible = (mask.flatten(1) > 0).any(dim=1, keepdim=True)
    score = MASK_PROMPT_SCALE * visible.float() + MASK_PROMPT_BIAS
    ptr = mix_no_object(model, choose(model, inner).obj_ptr, visible)
    return HeadOutput(low, high, torch.ones(b, device=mask.device), ptr, score)


def token_major(feat: torch.Tensor, batch: int) -> torch.Tensor:
    """``float[1 or B, C, h, w]`` -> ``float[B, C, h, w]`` stored token-major ([h*w, B, C] in memory).

    Convolutions round differently depending on memory layout; the official tracker
    feeds the memory encoder this layout, and matching it keeps long streams in parity.
    """
    _, c, h, w = feat.shape
    tokens = feat.flatten(2).permute(2, 0, 1).expand(h * w, batch, c).contiguous()
    return tokens.permute(1, 2, 0).view(batch, c, h, w)


def encode_memory(
    model: SAM2, raw_feat: torch.Tensor, high_res_mask: torch.Tensor, object_score: torch.Tensor, binarize: bool
) -> torch.Tensor:
    """Memory of B objects on one frame: ``float[B, 64, h, w]``, rounded to bfloat16 as stored.

    ``high_res_mask: float[B, 1, S, S]`` logits. Prompted frames use the binarised
    mask; tracked frames its sigmoid. Both are scaled to [-10, 10].
    """
    cfg = model.cfg
    raw_feat = token_major(raw_feat, high_res_mask.shape[0])
    m = (high_res_mask > 0).float() if binarize else torch.sigmoid(high_res_mask)
    m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
    feats = model.memory_encoder(raw_feat, m)
    if model.no_obj_embed_spatial is not None:
        absent = (object_score <= 0).float()[:, :, None, None]  # [B, 1, 1, 1]
        feats = feats + absent * model.no_obj_embed_spatial[:, :, None, None]
    # The official tracker keeps memories in bfloat16; rounding here keeps parity and halves storage.
    return feats.to(torch.bfloat16)
