"""Transformer parts of AVSegFormer: positional encoding, query generator, mixer, decoder."""

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
]
