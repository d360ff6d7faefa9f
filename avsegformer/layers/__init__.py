"""Neural-network layers shared by the models."""

from .ms_deform_attn import MSDeformAttn
from .ms_deform_attn_function import (
    MSDeformAttnFunction,
    compiled_op_available,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)

__all__ = [
    "MSDeformAttn",
    "MSDeformAttnFunction",
    "compiled_op_available",
    "ms_deform_attn",
    "ms_deform_attn_core_pytorch",
]
