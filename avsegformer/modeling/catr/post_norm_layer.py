"""The skeleton CATR's encoder and decoder layers share: DETR's post-norm layer."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PostNormLayer", "activation_function"]


def activation_function(name: str):
    """The FFN activation by name ("relu", "gelu", "glu")."""
    functions = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in functions:
        raise ValueError(f"activation must be one of {sorted(functions)}, got {name!r}")
    return functions[name]


class PostNormLayer(nn.Module):
    """Sub-modules and steps of a post-norm transformer layer (DETR's ``forward_post``), under
    the released names: ``self_attn``, with ``cross_attention`` ``multihead_attn``, the FFN
    ``linear1 -> activation -> dropout -> linear2``, one LayerNorm and one dropout after each
    block (``norm1``, ``norm2`` [, ``norm3``], ``dropout1``, ...).

    The modules are created in the released order (attentions, FFN, norms, dropouts), so a
    seeded model draws the same initial weights. Sequences are ``[S, N, C]``.
    """

    def __init__(
        self,
        d_model: int,
        nheads: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        activation: str = "relu",
        *,
        cross_attention: bool = False,
    ):
        super().__init__()
        blocks = 3 if cross_attention else 2
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        if cross_attention:
            self.multihead_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        for i in range(1, blocks + 1):
            setattr(self, f"norm{i}", nn.LayerNorm(d_model))
        for i in range(1, blocks + 1):
            setattr(self, f"dropout{i}", nn.Dropout(dropout))
        self.activation = activation_function(activation)

    def self_attention_block(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``norm1(x + dropout1(self_attn(q = k = x + pos, v = x)))``; ``key_padding_mask``:
        ``[N, S]`` bool, True at padding."""
        qk = x if pos is None else x + pos
        attended = self.self_attn(qk, qk, x, key_padding_mask=key_padding_mask, need_weights=False)[
            0
        ]
        return self.norm1(x + self.dropout1(attended))

    def feed_forward_block(self, x: torch.Tensor, norm: nn.Module, dropout: nn.Module):
        """``norm(x + dropout(linear2(self.dropout(activation(linear1(x))))))``: the FFN with the
        layer's last norm and dropout."""
        return norm(x + dropout(self.linear2(self.dropout(self.activation(self.linear1(x))))))
