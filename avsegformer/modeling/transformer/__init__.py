"""Transformer parts: activations, positional encoding, query generator, mixer, decoder."""

from .activation import activation_fn, activation_module
from .decoder import AVSTransformerDecoder, AVSTransformerDecoderLayer
from .mixer import CrossModalMixer
from .position_encoding import PositionEmbeddingSine
from .query_generator import AudioQueryGenerator, AudioQueryGeneratorLayer

__all__ = [
    "AVSTransformerDecoder",
    "AVSTransformerDecoderLayer",
    "AudioQueryGenerator",
    "AudioQueryGeneratorLayer",
    "CrossModalMixer",
    "PositionEmbeddingSine",
    "activation_fn",
    "activation_module",
]
