"""COMBO's audio MLP: the fused audio token mapped to the width of the decoder queries."""

import torch
from torch import nn

__all__ = ["AudioMLP"]


class AudioMLP(nn.Module):
    """``Linear(in, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU -> Linear(hidden, out)``,
    COMBO's ``audio_mlp`` (128 -> 4096 -> 4096 -> 256). PyTorch's default Linear init."""

    def __init__(self, *, in_dim: int = 128, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__()
        self.embeddings = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``[..., in_dim]`` (``[N, 1, 128]`` in COMBO) -> ``[..., out_dim]``."""
        return self.embeddings(audio)
