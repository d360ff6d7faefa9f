"""CATR's spatial encoder: DETR post-norm self-attention layers over each frame's tokens."""

import torch
import torch.nn.functional as F
from torch import nn

from ..activation_checkpointing import checkpointed

__all__ = ["EncoderLayer", "SpatialEncoder", "activation_function"]


def activation_function(name: str):
    """The FFN activation by name ("relu", "gelu", "glu")."""
    functions = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in functions:
        raise ValueError(f"activation must be one of {sorted(functions)}, got {name!r}")
    return functions[name]


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (DETR's ``forward_post``).

    ``x = norm1(x + drop(MHA(q = k = x + pos, v = x)))``,
    ``x = norm2(x + drop(linear2(drop(act(linear1(x))))))``.

    Sequences are ``[S, N, C]``.
    """

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
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation_function(activation)

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
        qk = src if pos is None else src + pos
        attended = self.self_attn(
            qk, qk, src, key_padding_mask=key_padding_mask, need_weights=False
        )[0]
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


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
