"""CATR's FPN spatial decoder: the video memory refined with two backbone levels into the
per-frame mask features."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPNSpatialDecoder"]


class FPNSpatialDecoder(nn.Module):
    """MTTR's FPN-like decoder with two lateral levels, as CATR uses it.

    ::

        x = relu(gn2(lay2(relu(gn1(lay1(x))))))                   # context_dim -> context_dim/2
        x = relu(gn3(lay3(adapter1(f0) + nearest(x, size(f0)))))  # -> context_dim/4
        x = relu(gn4(lay4(adapter2(f1) + nearest(x, size(f1)))))  # -> context_dim/8
        out = out_lay(x)                                           # -> mask_kernels_dim

    CATR passes the stride-8 video memory as ``x`` and the stride-32 and stride-16 projected
    backbone levels as ``f0``, ``f1``: the first nearest resize is a **down**-sampling (it
    keeps every 4th pixel) and the output has the stride-16 size. GroupNorm has 8 groups;
    convolutions are kaiming-uniform (a = 1) with zero bias.
    """

    def __init__(self, context_dim: int, fpn_dims: tuple[int, int], mask_kernels_dim: int):
        super().__init__()
        if len(fpn_dims) != 2:
            raise ValueError(f"FPNSpatialDecoder takes two lateral levels, got {list(fpn_dims)}")
        dims = [context_dim, context_dim // 2, context_dim // 4, context_dim // 8]
        self.lay1 = nn.Conv2d(context_dim, dims[0], 3, padding=1)
        self.gn1 = nn.GroupNorm(8, dims[0])
        self.lay2 = nn.Conv2d(dims[0], dims[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, dims[1])
        self.lay3 = nn.Conv2d(dims[1], dims[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, dims[2])
        self.lay4 = nn.Conv2d(dims[2], dims[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, dims[3])
        self.adapter1 = nn.Conv2d(fpn_dims[0], dims[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], dims[2], 1)
        self.out_lay = nn.Conv2d(dims[3], mask_kernels_dim, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, layer_features: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``[N, context_dim, h, w]``.
            layer_features: ``[f0 [N, fpn_dims[0], h0, w0], f1 [N, fpn_dims[1], h1, w1]]``.

        Returns:
            ``[N, mask_kernels_dim, h1, w1]``.
        """
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn, feature in (
            (self.adapter1, self.lay3, self.gn3, layer_features[0]),
            (self.adapter2, self.lay4, self.gn4, layer_features[1]),
        ):
            lateral = adapter(feature)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(gn(lay(x)))
        return self.out_lay(x)
