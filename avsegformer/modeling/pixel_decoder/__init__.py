"""Pixel decoders (registered in Detectron2's ``SEM_SEG_HEADS_REGISTRY``) and their builder."""

from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["MSDeformAttnPixelDecoder", "build_pixel_decoder"]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.NAME``.

    Args:
        cfg: a config with the AVSegFormer keys.
        input_shape: the backbone's ``output_shape()``.

    Returns:
        A module with ``forward_features(features)``.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NAME={name!r} is not a pixel decoder: it has no forward_features"
        )
    return model
