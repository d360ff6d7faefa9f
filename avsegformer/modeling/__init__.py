"""Model components; importing this module registers them."""

# Imported for registration: PVTv2 backbone, AVSegFormer meta-arch, pixel decoder, COMBO fusion
# blocks, masked-attention transformer decoders.
from . import (  # noqa: F401
    backbone,
    fusion,
    meta_arch,
    pixel_decoder,
    transformer,
    transformer_decoder,
)
from .audio_backbone import AUDIO_BACKBONE_REGISTRY, build_audio_backbone
from .set_criterion import SetCriterion  # noqa: F401  (mask-classification set criterion)

__all__ = ["AUDIO_BACKBONE_REGISTRY", "build_audio_backbone"]
