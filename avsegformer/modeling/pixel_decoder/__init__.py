"""Pixel decoders (registered in Detectron2's ``SEM_SEG_HEADS_REGISTRY``) and their builder."""

from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["MSDeformAttnPixelDecoder", "build_pixel_decoder"]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build the pixel decoder of a config, the one place that decides which key names it.

    ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`` when set (Mask2Former's layout: ``NAME`` is then
    the head holding the pixel decoder), else ``MODEL.SEM_SEG_HEAD.NAME`` (AVSegFormer's configs,
    where the pixel decoder is the head).

    Args:
        cfg: a config with the project's keys.
        input_shape: the backbone's ``output_shape()``.

    Returns:
        A module with ``forward_features(features)``.
    """
    head = cfg.MODEL.SEM_SEG_HEAD
    key = "PIXEL_DECODER_NAME" if head.PIXEL_DECODER_NAME else "NAME"
    name = head[key]
    decoder_class = SEM_SEG_HEADS_REGISTRY.get(name)
    if not callable(getattr(decoder_class, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.{key}={name!r} is not a pixel decoder: it has no forward_features"
        )
    return decoder_class(cfg, input_shape)
