"""CATR's projection of a backbone level to the transformer width: a sum of dilated 3x3 convs."""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DilatedConvSum"]


class DilatedConvSum(nn.Module):
    """``sum_i conv_i(x)`` over 3x3 convolutions with dilation = padding = ``dilations[i]``.

    CATR projects every PVT level to 256 channels this way (dilations 3, 6, 12, 18), an
    ASPP-like block without the image pooling branch. The sum is accumulated in the order of
    ``dilations``, like the released block, so float32 results agree to the last bit.

    Shapes: ``[N, in_channels, H, W] -> [N, out_channels, H, W]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dilations: Sequence[int] = (3, 6, 12, 18)
    ):
        super().__init__()
        if not dilations:
            raise ValueError("DilatedConvSum needs at least one dilation")
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d) for d in dilations
        )
        for conv in self.conv2d_list:
            # The released initialisation; biases keep PyTorch's default.
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out
