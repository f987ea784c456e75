"""The SAM 2 model: a container of parts plus the few learned tensors that glue them.

It holds no per-video state; the tracker and the image segmenter own that.
Attribute names follow the official checkpoint layout so official files load
strictly without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from streamtrack.config import ModelConfig
from streamtrack.model.common import MLP
from streamtrack.model.image_encoder import BackboneFeatures, ImageEncoder, position_encoding_like
from streamtrack.model.mask_decoder import DecoderOutput, MaskDecoder, StabilityRule
from streamtrack.model.memory_attention import MemoryAttention
from streamtrack.model.memory_encoder import MemoryEncoder
from streamtrack.model.prompt_encoder import PromptEncoder


class PromptDecoder(nn.Module):
    """A second prompt encoder and mask decoder for prompts on frames without memory.

    It reads the same image features as the shared decoder, including that decoder's projected
    stride-4/8 maps, so it has no projections of its own. Official models have none.
    """

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder


class SAM2(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        image_encoder: ImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        memory_encoder: MemoryEncoder,
        memory_attention: MemoryAttention,
        prompt_decoder: PromptDecoder | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        c, m = cfg.hidden_dim, cfg.mem_dim
        self.image_encoder = image_encoder
        self.sam_prompt_encoder = prompt_encoder
        self.sam_mask_decoder = mask_decoder
        self.memory_encoder = memory_encoder
        self.memory_attention = memory_attention

        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        """Temporal encoding of memory slot t (0 = conditioning frames, t = t frames ago)."""
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        """Added to frame features when there is no memory to attend to."""
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        """The object pointer of a frame where the object is not visible."""
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m)) if cfg.no_obj_embed_spatial else None
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        """Shrinks a full-resolution mask prompt to the decoder's mask-input size."""
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, m) if cfg.obj_ptr_temporal_encoding else None
        self.prompt_decoder = prompt_decoder
        """Answers boxes and clicks on frames without memory when present (``cfg.prompt_decoder``)."""

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def encode_image(self, images: torch.Tensor) -> BackboneFeatures:
        """``float[B, 3, S, S]`` normalised images -> :class:`BackboneFeatures`."""
        s4, s8, s16 = self.image_encoder(images)
        dec = self.sam_mask_decoder
        return BackboneFeatures(
            embed=s16,
            embed_pos=position_encoding_like(s16),
            high_res=(dec.conv_s0(s4), dec.conv_s1(s8)),
        )

    def decode(
        self,
        image_embed: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
        batch: int | None = None,
    ) -> DecoderOutput:
        """Prompt-encode and mask-decode against (memory-conditioned) image features.

        Args:
            image_embed: float[1 or B, 256, S/16, S/16].
            high_res: the decoder's stride-4/8 features, batch 1 or B.
            coords: float[B, N, 2] (x, y) in model-input pixels; labels: int[B, N].
            mask_input: float[B, 1, S/4, S/4] low-res mask logits, or None.
            batch: B when there are neither points nor a mask.
        """
        return _decode(self.sam_prompt_encoder, self.sam_mask_decoder, image_embed, high_res, coords, labels,
                       mask_input, multimask, batch)

    def decode_prompt(
        self,
        image_embed: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
        batch: int | None = None,
    ) -> DecoderOutput:
        """:meth:`decode` for a prompt on a frame without memory (``image_embed`` is the raw
        features plus ``no_mem_embed``): by the :class:`PromptDecoder` when the model has one."""
        if self.prompt_decoder is None:
            return self.decode(image_embed, high_res, coords, labels, mask_input, multimask, batch)
        head = self.prompt_decoder
        return _decode(head.prompt_encoder, head.mask_decoder, image_embed, high_res, coords, labels, mask_input,
                       multimask, batch)


def _decode(pe: PromptEncoder, decoder: MaskDecoder, image_embed: torch.Tensor,
            high_res: tuple[torch.Tensor, torch.Tensor], coords: torch.Tensor | None, labels: torch.Tensor | None,
            mask_input: torch.Tensor | None, multimask: bool, batch: int | None) -> DecoderOutput:
    if batch is None:
        batch = (coords if coords is not None else mask_input if mask_input is not None else image_embed).shape[0]
    sparse, dense = pe(batch, coords, labels, mask_input)
    return decoder(image_embed, pe.dense_pe(), sparse, dense, high_res, multimask)


def build_sam2(cfg: ModelConfig, stability: bool = True) -> SAM2:
    """Compose a model from its parts (randomly initialised; load weights afterwards).

    ``stability``: the official builds' single-mask stability fallback (on by default).
    """
    c = cfg.hidden_dim
    prompt_decoder = None
    if cfg.prompt_decoder:
        prompt_decoder = PromptDecoder(
            PromptEncoder(c, cfg.embed_size, cfg.image_size),
            MaskDecoder(c, StabilityRule() if stability else None, cfg.decoder_mlp_dim, high_res_proj=False),
        )
    return SAM2(
        cfg,
        image_encoder=ImageEncoder(cfg.trunk, c),
        prompt_encoder=PromptEncoder(c, cfg.embed_size, cfg.image_size),
        mask_decoder=MaskDecoder(c, StabilityRule() if stability else None, cfg.decoder_mlp_dim),
        memory_encoder=MemoryEncoder(c, cfg.mem_dim),
        memory_attention=MemoryAttention(c, cfg.mem_dim, cfg.memory_attention_layers, cfg.memory_attention_ffn_dim),
        prompt_decoder=prompt_decoder,
    ).eval()
