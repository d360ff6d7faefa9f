"""Siam-Encoder fusion: maskige-branch features added to the frame features, channel-weighted."""

from typing import Dict, Sequence

import torch
from torch import nn

__all__ = ["ChannelWeightBlock", "SiamEncoderFusion"]


class ChannelWeightBlock(nn.Module):
    """Squeeze-and-excitation weights of one feature map: ``sigmoid(fc2(relu(fc1(GAP(x)))))``
    with a hidden width of ``int(dim / reduction)`` (COMBO's ``channel_weighted_block``)."""

    def __init__(self, dim: int, *, reduction: int = 16):
        super().__init__()
        hidden = int(dim / reduction)
        if hidden < 1:
            raise ValueError(f"dim ({dim}) / reduction ({reduction}) leaves no hidden unit")
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> channel weights in (0, 1), ``[N, C, 1, 1]``."""
        pooled = x.mean(dim=(2, 3))
        weights = self.fc2(torch.relu(self.fc1(pooled))).sigmoid()
        return weights[:, :, None, None]


class SiamEncoderFusion(nn.ModuleList):
    """COMBO's Siam-Encoder fusion, one :class:`ChannelWeightBlock` per backbone stage:
    ``F_k + w_k * P_k`` with ``w_k`` computed from the maskige feature ``P_k`` alone.

    Block ``i`` serves ``feature_names[i]`` (res2..res5 order, as the original zips the blocks with
    the backbone's output dict); as a list its entries are the checkpoint's
    ``scale_factor_module.{i}``.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (256, 512, 1024, 2048),
        feature_names: Sequence[str] = ("res2", "res3", "res4", "res5"),
        reduction: int = 16,
    ):
        """
        Args:
            channels: channels of each stage (R50 256/512/1024/2048, PVTv2-B5 64/128/320/512).
            feature_names: the stages, in the order of ``channels``.
            reduction: hidden width of each block is ``channels / reduction``.
        """
        if len(channels) != len(feature_names):
            raise ValueError(
                f"{len(channels)} channel count(s) for {len(feature_names)} feature name(s)"
            )
        super().__init__(ChannelWeightBlock(c, reduction=reduction) for c in channels)
        self.feature_names = tuple(feature_names)

    def channel_weights(self, maskige_features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``{name: [N, C, 1, 1]}`` weights from the maskige features ``{name: [N, C, H, W]}``."""
        missing = [name for name in self.feature_names if name not in maskige_features]
        if missing:
            raise KeyError(
                f"the Siam-Encoder fusion needs maskige feature(s) {missing}; got "
                f"{sorted(maskige_features)}"
            )
        return {
            name: block(maskige_features[name]) for name, block in zip(self.feature_names, self)
        }

    def forward(
        self, features: Dict[str, torch.Tensor], maskige_features: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: the frame branch's backbone output ``{name: [N, C, H, W]}``.
            maskige_features: the maskige branch's output, same names and shapes.

        Returns:
            A new dict: every entry of ``features``, the ``feature_names`` ones fused.
        """
        weights = self.channel_weights(maskige_features)
        fused = dict(features)
        for name, weight in weights.items():
            if name not in features:
                raise KeyError(f"frame feature {name!r} is missing; got {sorted(features)}")
            fused[name] = features[name] + weight * maskige_features[name]
        return fused
