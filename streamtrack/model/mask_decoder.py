"""Mask decoder: output tokens attend to the image; hypernetworks turn tokens into masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from streamtrack.model.common import MLP, LayerNorm2d
from streamtrack.model.transformer import TwoWayTransformer

NUM_MASK_TOKENS = 4
"""Token 0 predicts a single mask; tokens 1..3 the three candidates of an ambiguous prompt."""


@dataclass
class DecoderOutput:
    """One decode for B prompts. M = 3 with multimask output, else 1."""

    low_res_logits: torch.Tensor
    """float[B, M, S/4, S/4] mask logits."""
    iou: torch.Tensor
    """float[B, M] predicted IoU (0..1)."""
    tokens: torch.Tensor
    """float[B, M, C] the mask tokens behind each mask (object pointers come from these)."""
    object_score_logits: torch.Tensor
    """float[B, 1]: > 0 means the object is visible."""


@dataclass(frozen=True)
class StabilityRule:
    """In single-mask mode, fall back to the best multimask candidate when the single
    mask is unstable (IoU of its +delta and -delta thresholded areas below ``threshold``).
    Official builds enable this; ``None`` in the decoder disables it."""

    delta: float = 0.05
    threshold: float = 0.98


class MaskDecoder(nn.Module):
    def __init__(self, dim: int = 256, stability: StabilityRule | None = StabilityRule(),
                 mlp_dim: int = 2048, high_res_proj: bool = True) -> None:
        """``high_res_proj``: own the projections of the stride-4/8 backbone maps (``conv_s0``,
        ``conv_s1``). A second decoder that reads another decoder's projected maps has none."""
        super().__init__()
        self.stability = stability
        self.transformer = TwoWayTransformer(dim, mlp_dim=mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(NUM_MASK_TOKENS, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        if high_res_proj:  # projections of the stride-4 and stride-8 backbone maps (applied once per image)
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(NUM_MASK_TOKENS))
        self.iou_prediction_head = MLP(dim, 256, NUM_MASK_TOKENS, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def forward(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        multimask: bool,
    ) -> DecoderOutput:
        """Decode B prompts against one image or B images.

        Args:
            image_embed: float[1 or B, C, h, w]; a single image is shared by all prompts.
            image_pe: float[1, C, h, w].
            sparse: float[B, N, C] prompt tokens; dense: float[B, C, h, w].
            high_res: (float[1 or B, C/8, 4h, 4w], float[1 or B, C/4, 2h, 2w]).
            multimask: return the three candidate masks instead of one.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat((self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight), 0)
        tokens = torch.cat((out_tokens[None].expand(b, -1, -1), sparse), dim=1)
        src = _per_prompt(image_embed, b) + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos, tokens)
        obj_token, iou_token = hs[:, 0], hs[:, 1]
        mask_tokens = hs[:, 2 : 2 + NUM_MASK_TOKENS]

        s0, s1 = (_per_prompt(f, b) for f in high_res)
        up1, ln, act1, up2, act2 = self.output_upscaling
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = act1(ln(up1(src) + s1))
        upscaled = act2(up2(upscaled) + s0)  # [B, C/8, 4h, 4w]

        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        _, c8, h4, w4 = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c8, h4 * w4)).reshape(b, NUM_MASK_TOKENS, h4, w4)
        iou = self.iou_prediction_head(iou_token)
        obj_logits = self.pred_obj_score_head(obj_token)

        if multimask:
            return DecoderOutput(masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], obj_logits)
        if self.stability is not None and not self.training:
            masks, iou = self._stable_single(masks, iou)
            return DecoderOutput(masks, iou, mask_tokens[:, :1], obj_logits)
        return DecoderOutput(masks[:, :1], iou[:, :1], mask_tokens[:, :1], obj_logits)

    def _stable_single(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick mask 0, or the best candidate where mask 0 is unstable. ``-> [B,1,H,W], [B,1]``."""
        rule = self.stability
        best = iou[:, 1:].argmax(dim=-1) + 1
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks, best_iou = masks[rows, best][:, None], iou[rows, best][:, None]
        single = masks[:, :1].flatten(-2)
        inter = (single > rule.delta).sum(-1).float()
        union = (single > -rule.delta).sum(-1).float()
        stability = torch.where(union > 0, inter / union, 1.0)
        stable = stability >= rule.threshold  # [B, 1]
        return (
            torch.where(stable[..., None, None], masks[:, :1], best_masks),
            torch.where(stable, iou[:, :1], best_iou),
        )


def _per_prompt(x: torch.Tensor, b: int) -> torch.Tensor:
    """Broadcast a single image's tensor ``[1, ...]`` to ``b`` prompts; pass batched ones through."""
    if x.shape[0] == b:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"expected 1 or {b} images, got {x.shape[0]}")
    return x.expand(b, *x.shape[1:])
