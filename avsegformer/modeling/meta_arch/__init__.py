"""Meta-architectures (registered in Detectron2's ``META_ARCH_REGISTRY``) and their heads."""

from .avsegformer import AVSegFormer
from .catr import CATR
from .combo import COMBO
from .combo_head import COMBOHead
from .modat import MoDAT

__all__ = ["AVSegFormer", "CATR", "COMBO", "COMBOHead", "MoDAT"]
