"""COMBO's fusion parts: Bilateral-Fusion of mask features and audio, the audio MLP, and the
Siam-Encoder fusion of maskige features into the frame features."""

from .audio_mlp import AudioMLP
from .audio_visual_fusion import AudioVisualFusion
from .bilateral_attention import BilateralAttention
from .bilateral_fusion import BilateralFusionBlock
from .siam_fusion import ChannelWeightBlock, SiamEncoderFusion

__all__ = [
    "AudioMLP",
    "AudioVisualFusion",
    "BilateralAttention",
    "BilateralFusionBlock",
    "ChannelWeightBlock",
    "SiamEncoderFusion",
]
