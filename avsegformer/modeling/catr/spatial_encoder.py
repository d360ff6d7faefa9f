"""CATR's spatial encoder: DETR post-norm self-attention layers over each frame's tokens."""

import torch
from torch import nn

from ..activation_checkpointing import checkpointed
from .post_norm_layer import PostNormLayer

__all__ = ["EncoderLayer", "SpatialEncoder"]


class EncoderLayer(PostNormLayer):
    """Post-norm transformer encoder layer (DETR's ``forward_post``).

    ``x = norm1(x + drop(MHA(q = k = x + pos, v = x)))``,
    ``x = norm2(x + drop(linear2(drop(act(linear1(x))))))``.

    Sequences are ``[S, N, C]``; constructor arguments: those of :class:`PostNormLayer`.
    """

    def forward(
        self,
        src: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            src: ``[S, N, C]``.
            key_padding_mask: ``[N, S]`` bool, True at padding tokens.
            pos: ``[S, N, C]`` added to queries and keys.

        Returns:
            ``[S, N, C]``.
        """
        src = self.self_attention_block(src, pos, key_padding_mask)
        return self.feed_forward_block(src, self.norm2, self.dropout2)


class SpatialEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` over each frame's video tokens and its clip's audio
    tokens (no final norm).

    With ``checkpoint_activations`` every layer keeps only its inputs for the backward pass in
    training (its attention weights over all tokens of a frame are recomputed).

    Shapes: ``[h*w + T_a, N, C] -> [h*w + T_a, N, C]`` for N frames.
    """

    def __init__(self, num_layers: int, *, checkpoint_activations: bool = False, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(num_layers))
        self.checkpoint_activations = checkpoint_activations

    def forward(self, src, key_padding_mask=None, pos=None):
        for layer in self.layers:
            src = checkpointed(
                layer, src, key_padding_mask, pos, enabled=self.checkpoint_activations
            )
        return src
