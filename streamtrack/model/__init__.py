"""SAM 2 in plain PyTorch: one module per part, composed by :func:`build_sam2`."""

from streamtrack.model.image_encoder import BackboneFeatures
from streamtrack.model.mask_decoder import DecoderOutput
from streamtrack.model.sam2 import SAM2, build_sam2

__all__ = ["SAM2", "BackboneFeatures", "DecoderOutput", "build_sam2"]
