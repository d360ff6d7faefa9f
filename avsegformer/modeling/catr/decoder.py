"""CATR's query decoder: DETR post-norm decoder layers over the spatial memory."""

import torch
from torch import nn

from ..activation_checkpointing import checkpointed
from .post_norm_layer import PostNormLayer

__all__ = ["QueryDecoder", "QueryDecoderLayer"]


class QueryDecoderLayer(PostNormLayer):
    """Post-norm decoder layer (DETR's ``forward_post``): self-attention of the queries (with
    ``query_pos`` on queries and keys), cross-attention to the memory (``query_pos`` on the
    queries, ``pos`` on the keys), FFN; residual + LayerNorm after each. Sequences are
    ``[S, N, C]``."""

    def __init__(self, *args, **kwargs):
        """Arguments: those of :class:`PostNormLayer` (always with cross-attention)."""
        super().__init__(*args, cross_attention=True, **kwargs)

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
        tgt = self.self_attention_block(tgt, query_pos)
        attended = self.multihead_attn(
            tgt + query_pos,
            memory + pos,
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.feed_forward_block(tgt, self.norm3, self.dropout3)


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
