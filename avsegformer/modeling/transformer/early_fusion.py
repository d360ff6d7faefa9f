"""MoDAT's query generator: early fusion of the audio token with the multi-scale visual
features (the original ``MTA``), then encoder-decoder layers over the fused audio components."""

from typing import List, Sequence

import torch
from torch import nn

from .activation import activation_module
from .query_generator import AudioQueryGeneratorLayer

__all__ = ["AudioVisualFusionLayer", "EncoderDecoderQueryGenerator", "MultiScaleAudioFusion"]


class AudioVisualFusionLayer(nn.Module):
    """The audio token attends over one visual level (post-norm, bias-free attention, ReLU FFN).

    ``o = norm1(a + MHA(a, F, F))``; ``out = norm2(o + linear2(relu(linear1(o))))``, with ``F``
    the level's pixels in row-major order, without positional encoding.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        hidden_dim: int = 1024,
        activation: str = "relu",
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(
            embed_dim, num_heads, bias=False, batch_first=True
        )
        self.norm1 = nn.LayerNorm(embed_dim)
        self.linear1 = nn.Linear(embed_dim, hidden_dim)
        self.activation = activation_module(activation)
        self.linear2 = nn.Linear(hidden_dim, embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, audio: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """
        Args:
            audio: ``[N, A, C]`` audio tokens.
            level: ``[N, C, H, W]`` projected visual feature.

        Returns:
            ``[N, A, C]``.
        """
        pixels = level.flatten(2).transpose(1, 2)
        fused = self.norm1(
            audio + self.multihead_attn(audio, pixels, pixels, need_weights=False)[0]
        )
        return self.norm2(fused + self.linear2(self.activation(self.linear1(fused))))


class MultiScaleAudioFusion(nn.Module):
    """One :class:`AudioVisualFusionLayer` per visual level, all from the same audio token (not
    chained); their outputs are the audio components ``[N, L, C]`` in level order.

    Attribute names follow the original checkpoints (``layers.{l}``). The original also holds a
    3x3 stride-2 conv + BatchNorm for a fourth level that no configuration uses; it is not built.
    """

    def __init__(
        self,
        *,
        num_levels: int = 3,
        embed_dim: int = 256,
        num_heads: int = 8,
        hidden_dim: int = 1024,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            AudioVisualFusionLayer(embed_dim=embed_dim, num_heads=num_heads, hidden_dim=hidden_dim)
            for _ in range(num_levels)
        )

    def forward(self, levels: Sequence[torch.Tensor], audio: torch.Tensor) -> torch.Tensor:
        """
        Args:
            levels: ``num_levels`` maps ``[N, C, H_l, W_l]`` (finest first in MoDAT).
            audio: ``[N, 1, C]``.

        Returns:
            ``[N, num_levels, C]``.
        """
        if len(levels) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} visual levels, got {len(levels)}")
        return torch.cat([layer(audio, level) for layer, level in zip(self.layers, levels)], 1)


class EncoderDecoderQueryGenerator(nn.Module):
    """Queries from the audio components: the audio token, repeated ``num_queries`` times,
    goes through AVSegFormer's generator layers with the components as keys and values; a 1x1
    conv (with bias) over the layers' outputs blends them.

    Every step is row-wise or a self-attention among identical rows, so all queries are equal;
    one row is computed and broadcast. Attribute names follow the original checkpoints
    (``early_fusion``, ``decoder.{i}``, ``conv``).
    """

    def __init__(
        self,
        *,
        num_queries: int = 300,
        embed_dim: int = 256,
        num_layers: int = 3,
        num_heads: int = 8,
        hidden_dim: int = 1024,
        num_levels: int = 3,
    ):
        super().__init__()
        self.num_queries = num_queries
        self.early_fusion = MultiScaleAudioFusion(
            num_levels=num_levels, embed_dim=embed_dim, num_heads=num_heads, hidden_dim=hidden_dim
        )
        self.decoder = nn.ModuleList(
            AudioQueryGeneratorLayer(
                embed_dim=embed_dim, num_heads=num_heads, hidden_dim=hidden_dim
            )
            for _ in range(num_layers)
        )
        self.conv = nn.Conv2d(num_layers, 1, 1)

    def forward(
        self,
        audio: torch.Tensor,
        levels: Sequence[torch.Tensor],
        *,
        return_intermediates: bool = False,
    ):
        """
        Args:
            audio: ``[N, 1, C]`` the audio token.
            levels: the projected visual levels ``[N, C, H_l, W_l]``.
            return_intermediates: also return every decoder layer's output (``[N, Q, C]``).

        Returns:
            ``(queries [N, Q, C], audio components [N, L, C])``, plus the list of layer outputs
            if asked.
        """
        components = self.early_fusion(levels, audio)
        # Self-attention among identical rows returns that row: one row stands for all.
        query = audio
        outputs: List[torch.Tensor] = []
        for layer in self.decoder:
            query = layer(query, components)
            outputs.append(query)
        query = self.conv(torch.stack(outputs, dim=1)).squeeze(1)
        queries = query.expand(-1, self.num_queries, -1)
        if return_intermediates:
            expanded = [out.expand(-1, self.num_queries, -1) for out in outputs]
            return queries, components, expanded
        return queries, components
