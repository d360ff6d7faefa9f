"""Modules of the released CATR that no output depends on, for strict compatibility
(``MODEL.CATR.STRICT_COMPAT``): with them a released checkpoint loads with every key, and the
model spends what the released code spends (the benchmark's "as released" figure).

By default none of them is built: the four ``FeatureFusionBlock``s ``path1``-``path4`` and the
``fusion_module`` are never called; ``conv1``, the stride-4 projection, is computed and its
output never read; the temporal encoder's own cross-attentions, the last temporal layer's audio
update and the 1x1 convs inside every cross-attention module are covered by
:class:`~avsegformer.modeling.catr.TemporalEncoder`'s ``released_unused``.
"""

from torch import nn

from .fusion import MultiplicativeCrossAttention

__all__ = ["RELEASED_UNUSED_CONV", "FeatureFusionBlockWeights", "released_unused_modules"]


class _ResidualConvUnitWeights(nn.Module):
    """The weights of a released ``ResidualConvUnit``: two 3x3 convs (``conv1``, ``conv2``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)


class FeatureFusionBlockWeights(nn.Module):
    """The weights of a released ``FeatureFusionBlock`` (``resConfUnit1``, ``resConfUnit2``),
    which the released model never calls: no forward."""

    def __init__(self, channels: int):
        super().__init__()
        self.resConfUnit1 = _ResidualConvUnitWeights(channels)
        self.resConfUnit2 = _ResidualConvUnitWeights(channels)


#: ``(in, out)`` channels of the never-called 1x1 conv ``vid_embed_proj`` in every released
#: cross-attention module: ``Conv2d(5, 15680, 1)`` whatever the input size or clip length.
RELEASED_UNUSED_CONV = (5, 15680)


def released_unused_modules(
    d_model: int, nheads: int, unused_conv: tuple[int, int] = RELEASED_UNUSED_CONV
) -> dict[str, nn.Module]:
    """The never-called top-level modules of the released model, by attribute name, in the
    released order: ``path4`` ... ``path1`` and ``fusion_module``."""
    modules: dict[str, nn.Module] = {
        f"path{i}": FeatureFusionBlockWeights(d_model) for i in (4, 3, 2, 1)
    }
    modules["fusion_module"] = MultiplicativeCrossAttention(
        d_model, nheads, unused_conv=unused_conv
    )
    return modules
