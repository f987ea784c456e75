"""Exact parity with the official SAM 2 implementation, for all eight models.

Each official model gets seeded random weights (noise on every tensor), is saved
as an official checkpoint, and loaded into streamtrack. Both then see identical
inputs. Tolerance: logits within 1e-4 x the reference's max |value|; binary masks
differ in at most 0.1% of pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_image
from oracle import official_image_predictor
from streamtrack.model.image_encoder import position_encoding_like
from streamtrack.segmenter import ImageSegmenter

REL_TOL = 1e-4
MASK_TOL = 1e-3

# One config at the official 1024; the larger models at reduced sizes to keep CI fast.
CASES = [
    ("sam2.1_hiera_t", 1024),
    ("sam2_hiera_t", 512),
    ("sam2.1_hiera_s", 512),
    ("sam2_hiera_s", 384),
    ("sam2.1_hiera_b+", 384),
    ("sam2_hiera_b+", 320),
    ("sam2.1_hiera_l", 256),
    ("sam2_hiera_l", 256),
]

IMAGE_HW = (300, 440)


def rel_err(ours, ref) -> float:
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def prompt_cases(low_res_feedback: np.ndarray) -> dict[str, dict]:
    """Official ``predict`` keyword arguments for every kind of prompt."""
    return {
        "one point": dict(point_coords=np.array([[120.0, 80.0]]), point_labels=np.array([1])),
        "fg and bg points": dict(point_coords=np.array([[120.0, 80.0], [300.0, 200.0]]), point_labels=np.array([1, 0])),
        "box": dict(box=np.array([50.0, 40.0, 250.0, 200.0])),
        "box plus points": dict(
            box=np.array([50.0, 40.0, 250.0, 200.0]),
            point_coords=np.array([[100.0, 90.0], [200.0, 60.0]]),
            point_labels=np.array([1, 0]),
        ),
        "mask input plus point": dict(
            point_coords=np.array([[120.0, 80.0]]), point_labels=np.array([1]), mask_input=low_res_feedback
        ),
        "mask input alone": dict(mask_input=low_res_feedback),
        "three boxes": dict(box=np.array([[50.0, 40.0, 250.0, 200.0], [10.0, 10.0, 100.0, 290.0], [0.0, 0.0, 439.0, 299.0]])),
    }


@pytest.mark.parametrize("name,image_size", CASES, ids=[f"{n}@{s}" for n, s in CASES])
def test_image_segmentation_matches_official(pair_cache, name, image_size):
    pair = pair_cache(name, image_size)
    image = random_image(*IMAGE_HW, seed=1)
    predictor = official_image_predictor(pair.official)
    predictor.set_image(image)
    segmenter = ImageSegmenter(pair.ours)
    segmenter.set_image(image)

    emb = segmenter.embedding
    errors = {
        "image embedding": rel_err(emb.image_embed, predictor._features["image_embed"]),
        "high-res s4": rel_err(emb.features.high_res[0], predictor._features["high_res_feats"][0]),
        "high-res s8": rel_err(emb.features.high_res[1], predictor._features["high_res_feats"][1]),
    }
    # A low-res answer to feed back as mask input.
    _, _, feedback = predictor.predict(np.array([[200.0, 150.0]]), np.array([1]), multimask_output=False)
    mask_mismatch = {}
    for case, kw in prompt_cases(feedback).items():
        for multimask in (True, False):
            ref_logits, ref_iou, ref_low = predictor.predict(multimask_output=multimask, return_logits=True, **kw)
            got = segmenter.predict(
                points=kw.get("point_coords"), labels=kw.get("point_labels"), boxes=kw.get("box"),
                mask_input=kw.get("mask_input"), multimask=multimask,
            )
            if ref_logits.ndim == 3:  # the official predictor drops the batch axis for one object
                ref_logits, ref_iou, ref_low = ref_logits[None], ref_iou[None], ref_low[None]
            key = f"{case}, multimask={multimask}"
            errors[key + " low-res logits"] = rel_err(got.low_res_logits, ref_low)
            errors[key + " iou"] = rel_err(got.iou, ref_iou)
            mask_mismatch[key] = float((got.masks != (ref_logits > 0)).mean())
            assert got.masks.shape == ref_logits.shape
            assert got.masks.shape[-2:] == IMAGE_HW

    worst = max(errors, key=errors.get)
    print(f"{name}@{image_size}: worst relative error {errors[worst]:.2e} ({worst}); "
          f"worst mask mismatch {max(mask_mismatch.values()):.2e}")
    assert errors[worst] <= REL_TOL, errors
    assert max(mask_mismatch.values()) <= MASK_TOL, mask_mismatch


@pytest.mark.parametrize("name,image_size", [("sam2.1_hiera_t", 512), ("sam2_hiera_t", 512)])
def test_decoder_outputs_match_official(pair_cache, name, image_size):
    """Masks, IoU, mask tokens and the object-score head, straight from the decoders."""
    pair = pair_cache(name, image_size)
    off, ours = pair.official, pair.ours
    torch.manual_seed(3)
    images = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        ref_backbone = off.forward_image(images)
        feats = ours.encode_image(images)
        fpn = ref_backbone["backbone_fpn"]
        assert rel_err(feats.embed, fpn[2]) <= REL_TOL
        assert rel_err(feats.embed_pos, ref_backbone["vision_pos_enc"][2]) <= REL_TOL
        coords = torch.rand(2, 3, 2) * image_size
        labels = torch.tensor([[1, 0, 1], [2, 3, 1]], dtype=torch.int32)
        mask_in = torch.randn(2, 1, image_size // 4, image_size // 4)
        for multimask in (True, False):
            for mask in (None, mask_in):
                sparse, dense = off.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
                ref = off.sam_mask_decoder(
                    image_embeddings=fpn[2], image_pe=off.sam_prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                    multimask_output=multimask, repeat_image=False, high_res_features=[fpn[0], fpn[1]],
                )
                got = ours.decode(feats.embed, feats.high_res, coords, labels, mask, multimask)
                for g, r in zip((got.low_res_logits, got.iou, got.tokens, got.object_score_logits), ref):
                    assert rel_err(g, r) <= REL_TOL


def test_memory_encoder_matches_official(pair_cache):
    pair = pair_cache("sam2.1_hiera_t", 512)
    torch.manual_seed(4)
    pix = torch.randn(2, 256, 32, 32)
    mask = torch.sigmoid(torch.randn(2, 1, 512, 512) * 4) * 20 - 10
    with torch.no_grad():
        ref = pair.official.memory_encoder(pix, mask, skip_mask_sigmoid=True)
        got = pair.ours.memory_encoder(pix, mask)
    assert rel_err(got, ref["vision_features"]) <= REL_TOL
    assert rel_err(position_encoding_like(got), ref["vision_pos_enc"][0]) <= REL_TOL


@pytest.mark.parametrize("n_ptr_tokens", [0, 12])
def test_memory_attention_matches_official(pair_cache, n_ptr_tokens):
    """Two spatial memories (RoPE repeated per memory) plus unrotated object-pointer tokens."""
    pair = pair_cache("sam2.1_hiera_t", 512)
    torch.manual_seed(5)
    hw, b = 32 * 32, 2
    curr, curr_pos = torch.randn(b, hw, 256), torch.randn(b, hw, 256)
    memory = torch.randn(b, 2 * hw + n_ptr_tokens, 64)
    memory_pos = torch.randn_like(memory)
    with torch.no_grad():
        ref = pair.official.memory_attention(
            curr=[curr.transpose(0, 1)], curr_pos=[curr_pos.transpose(0, 1)],
            memory=memory.transpose(0, 1), memory_pos=memory_pos.transpose(0, 1),
            num_obj_ptr_tokens=n_ptr_tokens,
        ).transpose(0, 1)
        got = pair.ours.memory_attention(curr, curr_pos, memory, memory_pos, n_ptr_tokens)
    assert rel_err(got, ref) <= REL_TOL


def test_masked_memory_slots_are_ignored_exactly(pair_cache):
    """Fixed-capacity memory: invalid slots masked out give the same result as no slots."""
    pair = pair_cache("sam2.1_hiera_t", 512)
    torch.manual_seed(6)
    hw, b = 32 * 32, 1
    curr, curr_pos = torch.randn(b, hw, 256), torch.randn(b, hw, 256)
    mem, mem_pos, ptr, ptr_pos = torch.randn(b, hw, 64), torch.randn(b, hw, 64), torch.randn(b, 4, 64), torch.randn(b, 4, 64)
    junk = torch.randn(b, hw, 64) * 100
    with torch.no_grad():
        plain = pair.ours.memory_attention(curr, curr_pos, torch.cat((mem, ptr), 1), torch.cat((mem_pos, ptr_pos), 1), 4)
        padded_mem = torch.cat((mem, junk, ptr, ptr * 50), 1)
        padded_pos = torch.cat((mem_pos, junk, ptr_pos, ptr_pos), 1)
        valid = torch.cat((torch.ones(b, hw), torch.zeros(b, hw), torch.ones(b, 4), torch.zeros(b, 4)), 1).bool()
        masked = pair.ours.memory_attention(curr, curr_pos, padded_mem, padded_pos, 8, key_valid=valid)
    assert rel_err(masked, plain) <= 1e-5
