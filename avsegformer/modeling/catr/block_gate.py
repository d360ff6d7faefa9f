"""CATR's block gate: combines the temporal encoder's three layer outputs into the video memory."""

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from torch import nn

__all__ = ["GATE_NORMS", "BlockGate"]

#: Normalisations of the gate's two outputs (``MODEL.CATR.GATE_NORM``): "BN" as released
#: (batch statistics over all frames of the batch in training), "FrozenBN" (fixed statistics
#: and affine), "GN" (32 groups: per frame, batch-independent).
GATE_NORMS = ("BN", "FrozenBN", "GN")


def _conv_norm_prelu(channels: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), get_norm(norm, channels), nn.PReLU()
    )


class BlockGate(nn.Module):
    """The released gate over the video tokens E1, T1, T2 of the temporal layers 0, 1, 2.

    ::

        G1  = GAP(sigmoid(attention_feature(cat(E1, T1))))     # [N, 2, 1, 1]
        D1  = output1(G1[:, 0] * T1)
        G2  = mean over G1's 2 channels of sigmoid(G1)          # [N, 1, 1, 1]
        out = output2(D1 + G2 * T2)

    ``output1`` / ``output2`` are conv 3x3 -> norm -> PReLU. G2 is computed from G1 with a
    second sigmoid (the released code's ``adaptive_avg_pool3d(sigmoid(G1), 1)``); the released
    code also applies ``attention_feature`` to ``cat(T1, T2)`` and discards the result.

    Args:
        d_model: C.
        norm: one of :data:`GATE_NORMS`; "BN" (released) uses the statistics of all frames of
            the batch in training.
        g2_from_layers: G2 from the layers it gates, as G1 is:
            ``G2 = GAP(sigmoid(attention_feature(cat(T1, T2))))[:, 0]``, with the convolution
            the released code computes and discards (not the released values).
        compute_discarded: compute that discarded convolution, as the released code does,
            when ``g2_from_layers`` is off (for timing the release; no output changes).
    """

    #: The number of temporal layers the gate combines.
    num_inputs = 3

    def __init__(
        self,
        d_model: int,
        *,
        norm: str = "BN",
        g2_from_layers: bool = False,
        compute_discarded: bool = False,
    ):
        super().__init__()
        if norm not in GATE_NORMS:
            raise ValueError(f"MODEL.CATR.GATE_NORM must be one of {GATE_NORMS}, got {norm!r}")
        self.attention_feature = nn.Sequential(nn.Conv2d(2 * d_model, 2, 3, padding=1))
        self.output1 = _conv_norm_prelu(d_model, norm)
        self.output2 = _conv_norm_prelu(d_model, norm)
        self.g2_from_layers = g2_from_layers
        self.compute_discarded = compute_discarded

    def gate(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``[N, 2, 1, 1]``: ``GAP(sigmoid(attention_feature(cat(first, second))))``."""
        logits = self.attention_feature(torch.cat((first, second), 1))
        return F.adaptive_avg_pool2d(torch.sigmoid(logits), 1)

    def gates(self, e1: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The released ``(G1 [N, 2, 1, 1], G2 [N, 1, 1, 1])`` from E1, T1 ``[N, C, h, w]``."""
        g1 = self.gate(e1, t1)
        g2 = torch.sigmoid(g1).mean(dim=(1, 2, 3), keepdim=True)
        return g1, g2

    def forward(self, video_tokens: list[torch.Tensor]) -> torch.Tensor:
        """See :meth:`combine`."""
        return self.combine(video_tokens)

    def combine(self, video_tokens: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            video_tokens: ``[E1, T1, T2]``, each ``[N, C, h, w]``.

        Returns:
            ``[N, C, h, w]`` the video memory.
        """
        e1, t1, t2 = video_tokens
        g1, g2 = self.gates(e1, t1)
        if self.g2_from_layers:
            g2 = self.gate(t1, t2)[:, :1]
        elif self.compute_discarded:
            self.attention_feature(torch.cat((t1, t2), 1))  # the released, overwritten G2
        d1 = self.output1(g1[:, :1] * t1)
        return self.output2(d1 + g2 * t2)
