"""Meta-architectures (registered in Detectron2's ``META_ARCH_REGISTRY``)."""

from .avsegformer import AVSegFormer
from .modat import MoDAT

__all__ = ["AVSegFormer", "MoDAT"]
