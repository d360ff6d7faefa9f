"""PVTv2 (Pyramid Vision Transformer v2) as a Detectron2 backbone.

The network is timm's ``PyramidVisionTransformerV2``; this module only adapts it to Detectron2's
:class:`~detectron2.modeling.Backbone` interface (a dict of ``res2..res5`` feature maps with their
strides and channels) and reads its hyper-parameters from ``cfg.MODEL.PVT``.

Numerics against the official PVTv2 (``whai362/PVT``, copied verbatim by the original AVSegFormer
as ``model/backbone/pvt.py``), checked line by line for timm 1.0.x:

* LayerNorm eps: the per-block ``norm1``/``norm2`` and the per-stage output norms use timm's
  ``LayerNorm`` with eps 1e-6, the official ``partial(nn.LayerNorm, eps=1e-6)``; the patch-embed
  norm and the spatial-reduction norm (``attn.norm``) are ``nn.LayerNorm`` with the default eps
  1e-5 in both.
* Stochastic depth: block ``i`` of the ``sum(depths)`` blocks gets ``rate * i / (sum(depths) - 1)``
  in both (timm's ``calculate_drop_path_rates(..., stagewise=True)`` splits that same linspace by
  stage); both use timm's ``DropPath``.
* Attention: ``softmax(q k^T / sqrt(head_dim)) v`` with spatial reduction (``sr`` conv + LayerNorm)
  for ``sr_ratio > 1``; timm may compute it with ``F.scaled_dot_product_attention``, which equals
  the explicit product up to float rounding. The MLP is fc1, depthwise 3x3 conv, GELU, fc2.
* Init: trunc-normal(0.02) Linear weights, zero biases, conv N(0, sqrt(2 / fan_out)).

``tests/test_backbones.py`` re-builds the official layout independently and checks that its
random-init weights, converted by :func:`avsegformer.checkpoint.convert_pvt_v2`, give the same
features here.

Parameter names (``patch_embed.*``, ``stages.{i}.downsample.*``, ``stages.{i}.blocks.{j}.*``,
``stages.{i}.norm.*``) are timm's; the official names map onto them as described in
:func:`avsegformer.checkpoint.convert_pvt_v2`.
"""

import logging
from collections.abc import Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from timm.models.pvt_v2 import PyramidVisionTransformerV2

__all__ = ["PVTv2Backbone", "build_pvt_v2_backbone"]

logger = logging.getLogger(__name__)

_STAGE_NAMES = ("res2", "res3", "res4", "res5")


class PVTv2Backbone(PyramidVisionTransformerV2, Backbone):
    """PVTv2 returning the outputs of its four stages as ``res2..res5`` (strides 4, 8, 16, 32).

    The ImageNet classifier is not built (``num_classes=0``), so the state dict holds only the
    feature extractor.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 3,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 6, 40, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        drop_path_rate: float = 0.1,
        out_features: Sequence[str] = _STAGE_NAMES,
    ):
        """
        Args:
            in_channels: channels of the input image.
            embed_dims: token width of each of the 4 stages (the output channels).
            depths: transformer blocks per stage.
            num_heads: attention heads per stage.
            mlp_ratios: MLP hidden width / token width, per stage.
            sr_ratios: spatial-reduction factor of the keys and values, per stage.
            drop_path_rate: stochastic-depth rate of the last block (linear from 0).
            out_features: which of ``res2..res5`` :meth:`forward` returns.
        """
        lengths = {len(embed_dims), len(depths), len(num_heads), len(mlp_ratios), len(sr_ratios)}
        if lengths != {len(_STAGE_NAMES)}:
            raise ValueError(
                "MODEL.PVT.EMBED_DIMS, DEPTHS, NUM_HEADS, MLP_RATIOS and SR_RATIOS must each have "
                f"{len(_STAGE_NAMES)} entries (one per stage)"
            )
        unknown = [name for name in out_features if name not in _STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.PVT.OUT_FEATURES must be a non-empty subset of {_STAGE_NAMES}, got "
                f"{list(out_features)}"
            )
        super().__init__(
            in_chans=in_channels,
            num_classes=0,
            global_pool="",
            depths=tuple(depths),
            embed_dims=tuple(embed_dims),
            num_heads=tuple(num_heads),
            sr_ratios=tuple(sr_ratios),
            mlp_ratios=tuple(mlp_ratios),
            qkv_bias=True,
            linear=False,
            drop_path_rate=drop_path_rate,
        )
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(_STAGE_NAMES, embed_dims))
        self._out_feature_strides = {name: 4 * 2**i for i, name in enumerate(_STAGE_NAMES)}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        p = cfg.MODEL.PVT
        return {
            "in_channels": input_shape.channels,
            "embed_dims": p.EMBED_DIMS,
            "depths": p.DEPTHS,
            "num_heads": p.NUM_HEADS,
            "mlp_ratios": p.MLP_RATIOS,
            "sr_ratios": p.SR_RATIOS,
            "drop_path_rate": p.DROP_PATH_RATE,
            "out_features": p.OUT_FEATURES,
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: images ``[N, C, H, W]``, normalised. Any ``H, W`` works; each stage output is
                ``ceil`` of the previous size over 2 (over 4 for ``res2``).

        Returns:
            ``{"res2": [N, C2, H/4, W/4], ..., "res5": [N, C5, H/32, W/32]}`` restricted to
            ``out_features``.
        """
        if x.dim() != 4:
            raise ValueError(f"PVTv2Backbone takes [N, C, H, W] images, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.patch_embed(x)
        for name, stage in zip(_STAGE_NAMES, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_pvt_v2_backbone(cfg, input_shape: ShapeSpec) -> PVTv2Backbone:
    """Build the PVTv2 backbone described by ``cfg.MODEL.PVT`` (PVTv2-B5 by default)."""
    return PVTv2Backbone(cfg, input_shape)
