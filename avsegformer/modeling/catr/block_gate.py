"""CATR's block gate: combines the temporal encoder's three layer outputs into the video memory."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlockGate"]


def _conv_bn_prelu(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.PReLU()
    )


class BlockGate(nn.Module):
    """The released gate over the video tokens E1, T1, T2 of the temporal layers 0, 1, 2.

    ::

        G1  = GAP(sigmoid(attention_feature(cat(E1, T1))))     # [N, 2, 1, 1]
        D1  = output1(G1[:, 0] * T1)
        G2  = mean over G1's 2 channels of sigmoid(G1)          # [N, 1, 1, 1]
        out = output2(D1 + G2 * T2)

    ``output1`` / ``output2`` are conv 3x3 -> BatchNorm -> PReLU. G2 is computed from G1 with a
    second sigmoid (the released code's ``adaptive_avg_pool3d(sigmoid(G1), 1)``); the released
    code also applies ``attention_feature`` to ``cat(T1, T2)`` and discards the result, which is
    not computed here. The BatchNorms use the statistics of all frames of the batch in training.
    """

    #: The number of temporal layers the gate combines.
    num_inputs = 3

    def __init__(self, d_model: int):
        super().__init__()
        self.attention_feature = nn.Sequential(nn.Conv2d(2 * d_model, 2, 3, padding=1))
        self.output1 = _conv_bn_prelu(d_model)
        self.output2 = _conv_bn_prelu(d_model)

    def gates(self, e1: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G1 [N, 2, 1, 1], G2 [N, 1, 1, 1])`` from E1, T1 ``[N, C, h, w]``."""
        g1 = F.adaptive_avg_pool2d(torch.sigmoid(self.attention_feature(torch.cat((e1, t1), 1))), 1)
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
        d1 = self.output1(g1[:, :1] * t1)
        return self.output2(d1 + g2 * t2)
