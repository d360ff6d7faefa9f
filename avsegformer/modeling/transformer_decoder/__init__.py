"""Masked-attention transformer decoders (Mask2Former style): a registry, its builder, the layers."""

from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .masked_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "MLP",
    "TRANSFORMER_DECODER_REGISTRY",
    "CrossAttentionLayer",
    "FFNLayer",
    "MultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
    "build_transformer_decoder",
]
