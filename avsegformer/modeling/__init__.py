"""Model components; importing this module registers them."""

# Imported for registration: PVTv2 backbone, AVSegFormer meta-arch, pixel decoder.
from . import backbone, fusion, meta_arch, pixel_decoder, transformer  # noqa: F401
from .audio_backbone import AUDIO_BACKBONE_REGISTRY, build_audio_backbone

__all__ = ["AUDIO_BACKBONE_REGISTRY", "build_audio_backbone"]
