"""Audio backbones: a registry beside Detectron2's, and its builder."""

from .build import AUDIO_BACKBONE_REGISTRY, build_audio_backbone
from .embedding_cache import DEFAULT_CACHE_SIZE, FrozenAudioEmbeddings
from .vggish import VGGish

__all__ = [
    "AUDIO_BACKBONE_REGISTRY",
    "DEFAULT_CACHE_SIZE",
    "FrozenAudioEmbeddings",
    "VGGish",
    "build_audio_backbone",
]
