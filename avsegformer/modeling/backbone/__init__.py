"""Visual backbones. ResNet-50 is Detectron2's own ``build_resnet_backbone``; importing this
package registers PVTv2 (``build_pvt_v2_backbone``) in Detectron2's ``BACKBONE_REGISTRY``."""

from .pvt_v2 import PVTv2Backbone, build_pvt_v2_backbone

__all__ = ["PVTv2Backbone", "build_pvt_v2_backbone"]
