"""Transformer decoder of AVSegFormer: plain multi-head attention over all encoder tokens."""

import torch
from torch import nn

from ..activation_checkpointing import checkpointed
from .activation import activation_fn

__all__ = ["AVSTransformerDecoder", "AVSTransformerDecoderLayer"]


class AVSTransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, cross-attention to the memory, FFN.

    There are no positional embeddings on queries or memory (as in the original); dropout applies
    to the attention weights and to each residual branch.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "gelu",
    ):
        super().__init__()
        self.activation = activation_fn(activation)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.dropout4 = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]``.
            memory: ``[N, S, C]`` encoder tokens of every level.

        Returns:
            ``[N, Q, C]``.
        """
        attended = self.self_attn(queries, queries, queries, need_weights=False)[0]
        queries = self.norm1(queries + self.dropout1(attended))
        attended = self.cross_attn(queries, memory, memory, need_weights=False)[0]
        queries = self.norm2(queries + self.dropout2(attended))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(queries))))
        return self.norm3(queries + self.dropout4(ffn))


class AVSTransformerDecoder(nn.Module):
    """A stack of :class:`AVSTransformerDecoderLayer`; only the last output feeds the mask head.

    With ``checkpoint_activations`` every layer keeps only its inputs for the backward pass in
    training: its ``[N, heads, Q, S]`` cross-attention weights are recomputed there.
    """

    def __init__(
        self,
        *,
        num_layers: int = 6,
        dim: int = 256,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "gelu",
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.layers = nn.ModuleList(
            AVSTransformerDecoderLayer(
                dim=dim,
                num_heads=num_heads,
                dim_feedforward=dim_feedforward,
                dropout=dropout,
                activation=activation,
            )
            for _ in range(num_layers)
        )

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, *, return_intermediates: bool = False
    ):
        """
        Args:
            queries: ``[N, Q, C]``.
            memory: ``[N, S, C]``.
            return_intermediates: also return every layer's output.

        Returns:
            ``[N, Q, C]`` output of the last layer, or ``(output, [N, Q, C] per layer)``.
        """
        intermediates = []
        for layer in self.layers:
            queries = checkpointed(layer, queries, memory, enabled=self.checkpoint_activations)
            if return_intermediates:
                intermediates.append(queries)
        if return_intermediates:
            return queries, intermediates
        return queries
