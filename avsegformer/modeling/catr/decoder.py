"""CATR's query decoder: DETR post-norm decoder layers over the spatial memory."""

import torch
from torch import nn

from ..activation_checkpointing import checkpointed
from .spatial_encoder import activation_function

__all__ = ["QueryDecoder", "QueryDecoderLayer"]


class QueryDecoderLayer(nn.Module):
    """Post-norm decoder layer (DETR's ``forward_post``): self-attention of the queries (with
    ``query_pos`` on queries and keys), cross-attention to the memory (``query_pos`` on the
    queries, ``pos`` on the keys), FFN; residual + LayerNorm after each. Sequences are
    ``[S, N, C]``."""

    def __init__(
        self,
        d_model: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = activation_function(activation)

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        """
        Args:
            tgt: ``[Q, N, C]``.
            memory: ``[S, N, C]``.
            memory_key_padding_mask: ``[N, S]`` bool, True at padding.
            pos: ``[S, N, C]``; query_pos: ``[Q, N, C]``.

        Returns:
            ``[Q, N, C]``.
        """
        qk = tgt + query_pos
        attended = self.self_attn(qk, qk, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.multihead_attn(
            tgt + query_pos,
            memory + pos,
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class QueryDecoder(nn.Module):
    """A stack of :class:`QueryDecoderLayer` with one final LayerNorm applied to every
    layer's output.

    With ``checkpoint_activations`` every layer keeps only its inputs for the backward pass in
    training.

    Returns ``[L, Q, N, C]``: the normalised output of each of the L layers.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        *,
        checkpoint_activations: bool = False,
        **layer_kwargs,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            QueryDecoderLayer(d_model, **layer_kwargs) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.checkpoint_activations = checkpoint_activations

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        outputs = []
        for layer in self.layers:
            tgt = checkpointed(
                layer,
                tgt,
                memory,
                memory_key_padding_mask,
                pos,
                query_pos,
                enabled=self.checkpoint_activations,
            )
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)
