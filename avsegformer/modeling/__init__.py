"""Model components; importing this module registers them."""

from .audio_backbone import AUDIO_BACKBONE_REGISTRY, build_audio_backbone

__all__ = ["AUDIO_BACKBONE_REGISTRY", "build_audio_backbone"]
