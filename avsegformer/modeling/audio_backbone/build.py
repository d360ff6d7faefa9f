from detectron2.utils.registry import Registry

AUDIO_BACKBONE_REGISTRY = Registry("AUDIO_BACKBONE")
AUDIO_BACKBONE_REGISTRY.__doc__ = """
Registry for audio backbones, which turn log-mel examples into one embedding per frame.

The registered object is called with ``(cfg)`` and must return an ``nn.Module`` whose forward
takes ``[N, 1, 96, 64]`` log-mel examples and returns ``[N, cfg.MODEL.AUDIO.OUT_DIM]``.
"""


def build_audio_backbone(cfg):
    """Build the audio backbone named by ``cfg.MODEL.AUDIO.NAME``."""
    return AUDIO_BACKBONE_REGISTRY.get(cfg.MODEL.AUDIO.NAME)(cfg)
