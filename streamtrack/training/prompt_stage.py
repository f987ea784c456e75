"""A training stage for the model's prompt decoder (``ModelConfig.prompt_decoder``) alone.

The nano model's one small decoder, trained to track, answers any box or click with a
salient-object guess; trained for prompts as well, it stops tracking (docs/nano-model.md, "The
decoder serves tracking or prompts, not both"). A second prompt encoder and decoder, trained
here on boxes and clicks over the fixed image features of a trained model, answers prompts on
frames without memory instead. Everything else stays as it was, so the tracking is unchanged.

The image encoder is fixed, so each training frame's features are computed once
(:func:`cache_frames`); every step then draws objects and fresh prompts from the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from streamtrack.model import SAM2, DecoderOutput
from streamtrack.preprocess import normalize
from streamtrack.tracker import heads
from streamtrack.tracker.tracker import PREV_LOGITS_CLAMP
from streamtrack.training.clips import PointPrompt, correction_click, first_frame_prompt, pad_prompts, sample_clip
from streamtrack.training.unroll import decode_loss

MIN_AREA = 20
"""Objects with fewer visible pixels than this on a cached frame are not prompted."""

CORRECTION_SHARE = 0.5
"""Share of steps that also train a correction of the first answer (:func:`_correct`)."""


@dataclass
class FrameCache:
    """Training frames' image features and the objects visible on them."""

    embed: torch.Tensor
    """float[N, C, h, w]: each frame's stride-16 features plus the no-memory embedding."""
    high_res: tuple[torch.Tensor, torch.Tensor]
    """The shared decoder's projected stride-4 and stride-8 maps, float[N, C/8, 4h, 4w] and [N, C/4, 2h, 2w]."""
    masks: np.ndarray
    """bool[K, S, S]: every visible object of every frame."""
    frame: np.ndarray
    """int[K]: the frame each object is on."""


def cache_frames(model: SAM2, rng: np.random.Generator, clips: int, per_clip: int = 2, objects: int = 3,
                 on_clip: Callable[[], None] | None = None) -> FrameCache:
    """Features of ``per_clip`` random frames from each of ``clips`` training clips (scenes from
    ``procgen.TRAIN_SEEDS`` only), computed without gradient. ``on_clip()`` is called after each clip."""
    size = model.image_size
    embeds, hr0, hr1, masks, frame = [], [], [], [], []
    nme = model.no_mem_embed.detach().view(1, -1, 1, 1)
    with torch.no_grad():
        for _ in range(clips):
            clip = sample_clip(rng, size, 8, objects)
            ts = np.sort(rng.choice(len(clip.images), size=per_clip, replace=False))
            images = torch.from_numpy(clip.images[ts]).permute(0, 3, 1, 2).float().div(255)
            feats = model.encode_image(normalize(images))
            for j, t in enumerate(ts):
                for m in clip.masks[:, t] > 0.5:
                    if m.sum() >= MIN_AREA:
                        masks.append(m)
                        frame.append(len(embeds))
                embeds.append(feats.embed[j] + nme[0])
                hr0.append(feats.high_res[0][j])
                hr1.append(feats.high_res[1][j])
            if on_clip is not None:
                on_clip()
    if not masks:
        raise ValueError(f"no object of at least {MIN_AREA} pixels in {clips} clips")
    return FrameCache(torch.stack(embeds), (torch.stack(hr0), torch.stack(hr1)), np.stack(masks),
                      np.asarray(frame, np.int64))


SHARED_PREFIXES = {"sam_prompt_encoder.": "prompt_decoder.prompt_encoder.",
                   "sam_mask_decoder.": "prompt_decoder.mask_decoder."}
"""Where each shared weight goes in the prompt decoder (its decoder has no ``conv_s0``/``conv_s1``)."""

STORED_DTYPE = torch.float16
"""The prompt decoder's weights as written to nano.pt: half the bytes (0.5M weights, 1 MB), which
keeps the shipped file under the 10 MB the package allows. They load into float32 parameters."""


def with_shared_prompt_decoder(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` (a model's state dict) with each ``prompt_decoder.*`` entry replaced by a copy of
    the shared prompt encoder's or decoder's: a prompt decoder that answers as the shared one does.
    This is the prompt stage's starting point, and what stages that do not train it save."""
    out = dict(weights)
    for name, value in weights.items():
        for shared, own in SHARED_PREFIXES.items():
            if name.startswith(shared) and own + name[len(shared):] in weights:
                out[own + name[len(shared):]] = value.clone()
    return out


def stored(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` as nano.pt holds them: the prompt decoder's in :data:`STORED_DTYPE`."""
    return {k: v.to(STORED_DTYPE) if k.startswith("prompt_decoder.") and v.is_floating_point() else v
            for k, v in weights.items()}


def trainable(model: SAM2) -> list[torch.nn.Parameter]:
    """The prompt decoder's parameters; every other parameter of ``model`` is frozen."""
    model.requires_grad_(False)
    params = list(model.prompt_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def prompt_loss(model: SAM2, cache: FrameCache, rng: np.random.Generator, batch: int
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`~streamtrack.training.losses.frame_loss` of ``batch`` cached objects, each decoded by
    the prompt decoder from one box (half the steps) or 1-3 clicks drawn from its mask, as
    :func:`~streamtrack.training.clips.first_frame_prompt` draws a training clip's first prompt.
    One click each gives the three candidates, as the tracker asks for. On a share of the steps
    (:data:`CORRECTION_SHARE`) each object is then corrected with one more click, and that
    decode is scored too (``parts["correction"]``: its mask loss).

    The loss is taken at the decoder's own resolution (S/4), against the share of each cell that
    the object covers, not on logits upsampled to S: a step costs about 0.6 times as much, and in
    the same minutes clicks were answered better and boxes about as well (docs/nano-model.md)."""
    pick = rng.choice(len(cache.masks), size=min(batch, len(cache.masks)), replace=False)
    kind = "box" if rng.random() < 0.5 else "points"
    prompts = [first_frame_prompt(rng, cache.masks[i], kind) for i in pick]
    coords, labels = (torch.from_numpy(a) for a in pad_prompts(prompts))
    single_click = kind == "points" and bool((labels >= 0).sum(1).eq(1).all())
    rows = torch.from_numpy(cache.frame[pick])
    embed, high_res = cache.embed[rows], (cache.high_res[0][rows], cache.high_res[1][rows])
    out = model.decode_prompt(embed, high_res, coords, labels, None, single_click)
    target = torch.from_numpy(cache.masks[pick]).float()[:, None]
    target = F.avg_pool2d(target, target.shape[-1] // out.low_res_logits.shape[-1])
    loss, parts = decode_loss(out, target)
    if rng.random() < CORRECTION_SHARE:
        again, more = decode_loss(_correct(model, embed, high_res, cache.masks[pick], out, rng), target)
        loss = loss + again
        parts["correction"] = more["mask"]
    return loss, parts


def _correct(model: SAM2, embed: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor], masks: np.ndarray,
             first: DecoderOutput, rng: np.random.Generator) -> DecoderOutput:
    """Each object decoded again from one click on the larger error of its first answer (the
    candidate of highest predicted IoU, binarised), with that answer as the mask input: the logits
    the tracker keeps for a new object's answer and passes with a second prompt on its frame.
    ``embed``/``high_res``: the objects' frames' features, as for the first decode; ``masks: bool[B, S, S]``."""
    best = first.iou.detach().argmax(1)
    low = first.low_res_logits.detach()[torch.arange(len(masks)), best][:, None]
    size = masks.shape[-1]
    pred = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) > 0
    clicks = [correction_click(rng, p, g) or PointPrompt(np.zeros((1, 2), np.float32), np.array([-1], np.int32))
              for p, g in zip(pred[:, 0].numpy(), masks)]
    coords, labels = (torch.from_numpy(a) for a in pad_prompts(clicks))
    prev = heads.mask_logits(pred.float())[1].clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
    return model.decode_prompt(embed, high_res, coords, labels, prev, False)
