"""Audio-conditioned query generator (AVSegFormer's ``AttentionGenerator``)."""

import torch
from torch import nn

from .activation import activation_module

__all__ = ["AudioQueryGenerator", "AudioQueryGeneratorLayer"]


class AudioQueryGeneratorLayer(nn.Module):
    """Post-norm layer: self-attention, cross-attention to the audio tokens, FFN.

    Both attentions are bias-free and dropout-free, as in the original. With the single audio
    token of AVSegFormer the cross-attention softmax is exactly 1, so the layer adds the same
    audio-dependent vector to every query before ``norm2``.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        hidden_dim: int = 1024,
        activation: str = "gelu",
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, bias=False, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(embed_dim, num_heads, bias=False, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            activation_module(activation),
            nn.Linear(hidden_dim, embed_dim),
        )
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm3 = nn.LayerNorm(embed_dim)

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]``.
            audio: ``[N, A, C]`` audio tokens (A = 1 in AVSegFormer).

        Returns:
            ``[N, Q, C]``.
        """
        queries = self.norm1(
            queries + self.self_attn(queries, queries, queries, need_weights=False)[0]
        )
        queries = self.norm2(
            queries + self.cross_attn(queries, audio, audio, need_weights=False)[0]
        )
        return self.norm3(queries + self.ffn(queries))


class AudioQueryGenerator(nn.Module):
    """Learned queries refined by attention to the audio token of each frame.

    Attribute names (``query``, ``layers.{i}.{self_attn,cross_attn,ffn.0,ffn.2,norm1,norm2,
    norm3}``) match the original checkpoints under ``head.query_generator.``.
    """

    def __init__(
        self,
        *,
        num_queries: int = 300,
        embed_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        hidden_dim: int = 1024,
        activation: str = "gelu",
    ):
        super().__init__()
        self.query = nn.Embedding(num_queries, embed_dim)
        self.layers = nn.ModuleList(
            AudioQueryGeneratorLayer(
                embed_dim=embed_dim,
                num_heads=num_heads,
                hidden_dim=hidden_dim,
                activation=activation,
            )
            for _ in range(num_layers)
        )
        # The original runs its own xavier pass at construction; the head re-runs it later.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, audio: torch.Tensor, *, return_intermediates: bool = False):
        """
        Args:
            audio: ``[N, A, C]`` audio tokens.
            return_intermediates: also return every layer's output.

        Returns:
            ``[N, Q, C]`` queries, or ``(queries, [N, Q, C] per layer)``.
        """
        queries = self.query.weight.unsqueeze(0).expand(audio.shape[0], -1, -1)
        intermediates = []
        for layer in self.layers:
            queries = layer(queries, audio)
            if return_intermediates:
                intermediates.append(queries)
        if return_intermediates:
            return queries, intermediates
        return queries
