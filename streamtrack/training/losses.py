"""SAM 2's training losses: focal + dice on masks, a regression on predicted IoU, BCE on the
object score. Weights follow the official recipe (20 : 1 : 1 : 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT, SCORE_WEIGHT = 20.0, 1.0, 1.0, 1.0


def focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """``logits/target: [B, M, H, W]`` -> ``[B, M]`` mean sigmoid focal loss per mask."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * ce * (1 - p_t) ** gamma).flatten(2).mean(-1)


def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, M, H, W]`` -> ``[B, M]`` soft dice loss per mask."""
    p = torch.sigmoid(logits).flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, M, H, W]`` -> ``[B, M]`` IoU of the thresholded masks (no gradient)."""
    with torch.no_grad():
        pred = (logits > 0).flatten(2)
        t = target.flatten(2) > 0.5
        inter = (pred & t).sum(-1).float()
        union = (pred | t).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def frame_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, score_logit: torch.Tensor, target: torch.Tensor,
    absent_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of B objects on one frame.

    ``logits: [B, M, h, w]`` candidate masks (M = 1 or 3), ``iou_pred: [B, M]``,
    ``score_logit: [B, 1]``, ``target: [B, 1, h, w]`` in {0, 1}. Mask and IoU terms use the
    candidate with the lowest mask loss and count only where the object is visible. The score
    term of an object absent from the frame is weighted by ``absent_weight`` (1: plain BCE).
    """
    visible = (target.flatten(1).amax(1) > 0).float()  # [B]
    t = target.expand_as(logits)
    per_mask = FOCAL_WEIGHT * focal(logits, t) + DICE_WEIGHT * dice(logits, t)  # [B, M]
    best = per_mask.argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    mask_term = per_mask[rows, best]
    iou_term = F.mse_loss(iou_pred, mask_iou(logits, t), reduction="none").mean(1)
    score_term = F.binary_cross_entropy_with_logits(score_logit[:, 0], visible, reduction="none")
    n_vis = visible.sum().clamp(min=1)
    mask_loss = (mask_term * visible).sum() / n_vis
    iou_loss = (iou_term * visible).sum() / n_vis
    score_loss = (score_term * torch.where(visible > 0, 1.0, absent_weight)).mean()
    total = mask_loss + IOU_WEIGHT * iou_loss + SCORE_WEIGHT * score_loss
    return total, {"mask": mask_loss.item(), "iou": iou_loss.item(), "score": score_loss.item()}
