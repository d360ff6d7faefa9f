"""Audio backbones: a registry beside Detectron2's, and its builder."""

from .build import AUDIO_BACKBONE_REGISTRY, build_audio_backbone

__all__ = ["AUDIO_BACKBONE_REGISTRY", "build_audio_backbone"]
