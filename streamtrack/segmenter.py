"""Single-image segmentation: embed an image once, then answer many prompts.

Two layers: :meth:`ImageSegmenter.predict` takes and returns numpy arrays in
source-image pixels; :meth:`ImageSegmenter.predict_tensors` works on tensors in
model-input pixels and is what the pipeline and benchmarks call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamtrack.model import SAM2, BackboneFeatures, DecoderOutput
from streamtrack.preprocess import image_to_input, logits_to_source, to_model_coords

LOW_RES_CLAMP = 32.0
"""Returned low-res logits are clamped to +-32 (as the official predictor does) before feeding back."""


@dataclass
class ImageEmbedding:
    """One embedded image, ready for prompts."""

    features: BackboneFeatures
    image_embed: torch.Tensor
    """float[1, 256, S/16, S/16]: top-level features plus the no-memory embedding."""
    orig_hw: tuple[int, int]


@dataclass
class Segmentation:
    """Answers to B prompts (objects); M = 3 candidates with multimask, else 1."""

    masks: np.ndarray
    """bool[B, M, H, W] at the source image's resolution."""
    iou: np.ndarray
    """float32[B, M] predicted IoU of each mask."""
    low_res_logits: np.ndarray
    """float32[B, M, S/4, S/4] logits, clamped to +-32; pass one back as ``mask_input``."""


class ImageSegmenter:
    def __init__(self, model: SAM2, mask_threshold: float = 0.0) -> None:
        self.model = model
        self.mask_threshold = mask_threshold
        self._embedding: ImageEmbedding | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            raise RuntimeError("no image is set: call set_image(image) before predict()")
        return self._embedding

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, orig_hw: tuple[int, int]) -> ImageEmbedding:
        """Tensor layer: ``float[1, 3, S, S]`` normalised model input -> :class:`ImageEmbedding`."""
        feats = self.model.encode_image(images)
        return ImageEmbedding(feats, feats.embed + self.model.no_mem_embed.view(1, -1, 1, 1), tuple(orig_hw))

    def set_image(self, image: np.ndarray) -> None:
        """Embed an ``uint8[H, W, 3]`` RGB image."""
        x = image_to_input(image, self.model.image_size, self.device)
        self._embedding = self.embed(x, image.shape[:2])

    @torch.inference_mode()
    def predict_tensors(
        self,
        emb: ImageEmbedding,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> DecoderOutput:
        """Tensor layer. ``coords: float[B, N, 2]`` in model-input pixels (box corners first,
        labels 2 and 3), ``labels: int[B, N]``, ``mask_input: float[B, 1, S/4, S/4]``. The model's
        prompt decoder answers when it has one (nano), else its shared decoder."""
        return self.model.decode_prompt(emb.image_embed, emb.features.high_res, coords, labels, mask_input, multimask)

    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> Segmentation:
        """Segment the set image.

        Args:
            points: float[N, 2] or float[B, N, 2] (x, y) in source pixels.
            labels: int[N] or int[B, N]; 1 foreground, 0 background.
            boxes: float[4] or float[B, 4] (x0, y0, x1, y1) in source pixels; B boxes
                segment B objects in one call.
            mask_input: float[1, S/4, S/4] or float[B, 1, S/4, S/4] low-res logits
                from an earlier answer.
            multimask: three candidates per object (for ambiguous prompts) or one.
        """
        emb = self.embedding
        coords_t, labels_t, mask_t = self._prompt_tensors(emb, points, labels, boxes, mask_input)
        out = self.predict_tensors(emb, coords_t, labels_t, mask_t, multimask)
        logits = logits_to_source(out.low_res_logits, emb.orig_hw)
        return Segmentation(
            masks=(logits > self.mask_threshold).cpu().numpy(),
            iou=out.iou.float().cpu().numpy(),
            low_res_logits=out.low_res_logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).float().cpu().numpy(),
        )

    def _prompt_tensors(self, emb, points, labels, boxes, mask_input):
        size = self.model.image_size
        dev = self.device
        coords_t = labels_t = mask_t = None
        if points is not None:
            pts = _as_float(points, "points")
            if labels is None:
                raise ValueError("labels are required with points (1 foreground, 0 background)")
            lab = np.asarray(labels)
            if pts.ndim == 2:
                pts, lab = pts[None], lab[None]
            if pts.ndim != 3 or pts.shape[-1] != 2:
                raise ValueError(f"points must have shape [N, 2] or [B, N, 2], got {list(np.shape(points))}")
            if lab.shape != pts.shape[:2]:
                raise ValueError(f"labels must have shape {list(pts.shape[:2])}, got {list(np.shape(labels))}")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point labels must be 0 (background) or 1 (foreground)")
            coords_t = to_model_coords(torch.from_numpy(pts).to(dev), emb.orig_hw, size)
            labels_t = torch.from_numpy(lab.astype(np.int32)).to(dev)
        if boxes is not None:
            bx = _as_float(boxes, "boxes")
            bx = bx[None] if bx.ndim == 1 else bx
            if bx.ndim != 2 or bx.shape[1] != 4:
                raise ValueError(f"boxes must have shape [4] or [B, 4], got {list(np.shape(boxes))}")
            if (bx[:, 2] < bx[:, 0]).any() or (bx[:, 3] < bx[:, 1]).any():
                raise ValueError("each box must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            corners = to_model_coords(torch.from_numpy(bx).to(dev).reshape(-1, 2, 2), emb.orig_hw, size)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=dev).repeat(len(bx), 1)
            if coords_t is not None:
                if coords_t.shape[0] != corners.shape[0]:
                    raise ValueError(
                        f"{corners.shape[0]} box(es) but {coords_t.shape[0]} point set(s); give one point set per box"
                    )
                coords_t, labels_t = torch.cat((corners, coords_t), 1), torch.cat((corner_labels, labels_t), 1)
            else:
                coords_t, labels_t = corners, corner_labels
        if mask_input is not None:
            m = _as_float(mask_input, "mask_input")
            m = m[None] if m.ndim == 3 else m
            side = self.model.sam_prompt_encoder.mask_input_size
            if m.ndim != 4 or m.shape[1:] != (1, side, side):
                raise ValueError(f"mask_input must have shape [1, {side}, {side}] or [B, 1, {side}, {side}]")
            mask_t = torch.from_numpy(m).to(dev)
            if coords_t is not None and coords_t.shape[0] != mask_t.shape[0] and mask_t.shape[0] != 1:
                raise ValueError(f"{mask_t.shape[0]} mask inputs for {coords_t.shape[0]} prompts")
        return coords_t, labels_t, mask_t


def _as_float(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite numbers")
    return arr
