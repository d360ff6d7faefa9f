"""The two expert types of MoDAT's mixture-of-experts layers.

An expert maps the ``C`` slots routed to it in each frame, ``[N, C, dim]`` (unfilled slots are
zero vectors), and the frame's audio token ``[N, 1, dim]`` to ``[N, C, dim]``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..transformer.mixer import CrossModalMixer

__all__ = ["EXPERT_TYPES", "ChannelExpert", "SpatialExpert"]


class ChannelExpert(CrossModalMixer):
    """AVSegFormer's channel gate (:class:`CrossModalMixer`) over an expert's slots, with dropout
    on the gate logits in training.

    The audio token attends over all ``C`` slots, the unfilled ones included: their keys are
    zero, so they take part in the softmax with logit 0 and dilute the attention. Every slot is
    then scaled by the same per-frame channel gate.
    """

    def __init__(self, *, dim: int = 256, num_heads: int = 8, dropout: float = 0.4):
        super().__init__(dim=dim, num_heads=num_heads)
        self.dropout = nn.Dropout(dropout)

    def forward(self, slots: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[N, C, dim]``, ``[N, 1, dim]`` -> ``[N, C, dim]``."""
        gate = self.dropout(self.token_gate_logits(slots, audio)).sigmoid()
        return slots * gate


class SpatialExpert(nn.Module):
    """Bias-free multi-head attention from each slot to the frame's single audio token.

    With one key the softmax is 1, so in eval every slot gets ``W_o W_v a``, computed here in
    closed form. In training the attention dropout zeroes each (slot, head) share of ``W_v a``
    independently; then the attention runs as such (same draws as ``nn.MultiheadAttention``).
    """

    def __init__(self, *, dim: int = 256, num_heads: int = 8, dropout: float = 0.4):
        super().__init__()
        self.attn = nn.MultiheadAttention(
            dim, num_heads, bias=False, batch_first=True, dropout=dropout
        )

    def forward(self, slots: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``[N, C, dim]``, ``[N, 1, dim]`` -> ``[N, C, dim]``."""
        if self.training and self.attn.dropout > 0:
            return self.attn(slots, audio, audio)[0]
        dim = audio.shape[-1]
        w_v = self.attn.in_proj_weight[2 * dim :]
        vector = F.linear(F.linear(audio, w_v), self.attn.out_proj.weight)
        return vector.expand(-1, slots.shape[1], -1)


#: Expert type name (config value) -> class.
EXPERT_TYPES = {"channel": ChannelExpert, "spatial": SpatialExpert}
