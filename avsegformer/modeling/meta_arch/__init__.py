"""Meta-architectures (registered in Detectron2's ``META_ARCH_REGISTRY``)."""

from .avsegformer import AVSegFormer

__all__ = ["AVSegFormer"]
