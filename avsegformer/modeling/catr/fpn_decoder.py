"""CATR's FPN spatial decoder: the video memory refined with the backbone levels into the
per-frame mask features."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPN_LEVELS", "FPNSpatialDecoder"]

#: Lateral levels the decoder reads for each mask-feature stride (``MODEL.CATR.MASK_STRIDE``).
FPN_LEVELS = {16: 2, 8: 3}


class FPNSpatialDecoder(nn.Module):
    """MTTR's FPN-like decoder, with the two lateral levels CATR uses or a third, finer one.

    ::

        x = relu(gn2(lay2(relu(gn1(lay1(x))))))                   # context_dim -> context_dim/2
        x = relu(gn3(lay3(adapter1(f0) + nearest(x, size(f0)))))  # -> context_dim/4
        x = relu(gn4(lay4(adapter2(f1) + nearest(x, size(f1)))))  # -> context_dim/8
        x = relu(gn5(lay5(adapter3(f2) + nearest(x, size(f2)))))  # third level only, same width
        out = out_lay(x)                                           # -> mask_kernels_dim

    CATR passes the stride-8 video memory as ``x`` and the stride-32 and stride-16 projected
    backbone levels as ``f0``, ``f1``: the first nearest resize is a **down**-sampling (it
    keeps every 4th pixel) and the output has the stride-16 size. With a third level (the
    video memory itself as ``f2``, ``MODEL.CATR.MASK_STRIDE`` 8, not from the released code)
    the output has the stride-8 size; the extra stage keeps the width context_dim/8 (MTTR's
    third stage halves it again, which leaves fewer channels than GroupNorm groups for a
    narrow transformer). GroupNorm has 8 groups; convolutions are kaiming-uniform (a = 1)
    with zero bias.
    """

    def __init__(self, context_dim: int, fpn_dims: tuple[int, ...], mask_kernels_dim: int):
        super().__init__()
        if len(fpn_dims) not in (2, 3):
            raise ValueError(
                f"FPNSpatialDecoder takes two or three lateral levels, got {list(fpn_dims)}"
            )
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
        # Names, not an nn.ModuleList: the state-dict keys stay the released ones (lay3, ...).
        self.stages = [("adapter1", "lay3", "gn3"), ("adapter2", "lay4", "gn4")]
        if len(fpn_dims) == 3:
            self.adapter3 = nn.Conv2d(fpn_dims[2], dims[3], 1)
            self.lay5 = nn.Conv2d(dims[3], dims[3], 3, padding=1)
            self.gn5 = nn.GroupNorm(8, dims[3])
            self.stages.append(("adapter3", "lay5", "gn5"))
        self.out_lay = nn.Conv2d(dims[3], mask_kernels_dim, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    @property
    def num_levels(self) -> int:
        """The lateral levels the decoder reads (2 as released, or 3)."""
        return len(self.stages)

    def forward(self, x: torch.Tensor, layer_features: list[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``[N, context_dim, h, w]``.
            layer_features: ``num_levels`` maps, coarsest first: ``f_i [N, fpn_dims[i], h_i,
                w_i]``.

        Returns:
            ``[N, mask_kernels_dim, h_last, w_last]``, the size of the last level.
        """
        if len(layer_features) != self.num_levels:
            raise ValueError(
                f"FPNSpatialDecoder reads {self.num_levels} levels, got {len(layer_features)}"
            )
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for names, feature in zip(self.stages, layer_features):
            adapter, lay, gn = (getattr(self, name) for name in names)
            lateral = adapter(feature)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(gn(lay(x)))
        return self.out_lay(x)
