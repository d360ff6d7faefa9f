"""Transformer parts: activations, positional encoding, query generators, mixer, decoder."""

from .activation import activation_fn, activation_module
from .decoder import AVSTransformerDecoder, AVSTransformerDecoderLayer
from .early_fusion import (
    AudioVisualFusionLayer,
    EncoderDecoderQueryGenerator,
    MultiScaleAudioFusion,
)
from .mixer import CrossModalMixer
from .position_encoding import PositionEmbeddingSine
from .query_generator import AudioQueryGenerator, AudioQueryGeneratorLayer

__all__ = [
    "AVSTransformerDecoder",
    "AVSTransformerDecoderLayer",
    "AudioQueryGenerator",
    "AudioQueryGeneratorLayer",
    "AudioVisualFusionLayer",
    "CrossModalMixer",
    "EncoderDecoderQueryGenerator",
    "MultiScaleAudioFusion",
    "PositionEmbeddingSine",
    "activation_fn",
    "activation_module",
]
