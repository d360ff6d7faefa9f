"""Checkpoint conversion: original AVSegFormer and pretrained backbone weights to our names."""

from .convert import (
    convert_avsegformer_checkpoint,
    convert_avsegformer_head,
    convert_pvt_v2,
    convert_torchvision_resnet,
    convert_vggish,
    unwrap_state_dict,
)

__all__ = [
    "convert_avsegformer_checkpoint",
    "convert_avsegformer_head",
    "convert_pvt_v2",
    "convert_torchvision_resnet",
    "convert_vggish",
    "unwrap_state_dict",
]
