"""Multi-scale deformable-attention pixel decoder with a lateral stride-4 branch.

The finest backbone level (stride 4) only feeds a lateral branch; the coarser levels (strides 8,
16, 32) go through a post-norm deformable encoder. The stride-4 mask feature is the lateral
branch plus the up-sampled finest encoder output, through a 3x3 conv, GN and ReLU. Encoder width,
FFN width and activation, dropout and the positional encoding are constructor parameters (config
keys under ``MODEL.SEM_SEG_HEAD``); the defaults are AVSegFormer's. Mask2Former's variant (as COMBO
builds it) differs only by constructor flags: encoder levels coarse first, its FPN level and module
names, and a final 1x1 ``mask_features`` conv.
"""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from avsegformer.layers import MSDeformAttn

from ..activation_checkpointing import checkpointed
from ..transformer.position_encoding import PositionEmbeddingSine
from .deformable_encoder import MSDeformAttnEncoder, MSDeformAttnEncoderLayer

__all__ = ["MSDeformAttnEncoder", "MSDeformAttnEncoderLayer", "MSDeformAttnPixelDecoder"]


class Mask2FormerTransformer(nn.Module):
    """Holder of the level embedding and the encoder under Mask2Former's names
    (``transformer.level_embed``, ``transformer.encoder``)."""

    def __init__(self, level_embed: nn.Parameter, encoder: MSDeformAttnEncoder):
        super().__init__()
        self.level_embed = level_embed
        self.encoder = encoder


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: per-level 1x1 conv + GN, deformable encoder, stride-4 mask feature.

    Attribute names match the original checkpoints (``head.in_proj`` -> ``input_proj``,
    ``head.level_embed`` -> ``level_embed``, ``head.transformer.encoder`` -> ``encoder``,
    ``head.lateral_conv`` -> ``lateral_conv``, ``head.out_conv`` -> ``output_conv``); with
    ``mask2former_layout`` they match Mask2Former's (``input_proj``, ``transformer.level_embed``,
    ``transformer.encoder``, ``adapter_1``, ``layer_1``, ``mask_features``).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: List[str],
        transformer_in_features: List[str],
        conv_dim: int,
        norm: str,
        num_encoder_layers: int,
        num_heads: int,
        num_points: int,
        dim_feedforward: int,
        dropout: float,
        activation: str = "gelu",
        normalize_positions: bool = False,
        msda_impl: str = "auto",
        coarse_levels_first: bool = False,
        mask2former_layout: bool = False,
        mask_dim: int | None = None,
        checkpoint_activations: bool = False,
    ):
        """
        Args:
            input_shape: shapes of the backbone outputs.
            in_features: backbone features used, finest first; the first one feeds only the
                lateral branch and must be finer than every encoder level.
            transformer_in_features: the features that go through the encoder, finest first;
                the finest of them is up-sampled into the mask feature.
            conv_dim: width of the projected levels, the encoder and the mask feature.
            norm: normalisation after each projection and the output conv ("GN" = 32 groups).
            num_encoder_layers, num_heads, num_points, dim_feedforward, dropout: encoder.
            activation: of the encoder FFN, "gelu" (AVSegFormer) or "relu" (Mask2Former).
            normalize_positions: sine positional encoding of positions scaled to [0, 2 pi]
                (Deformable DETR, Mask2Former) instead of raw 1-based indices (AVSegFormer).
            msda_impl: deformable-attention backend ("auto", "pytorch", "compiled").
            coarse_levels_first: order the encoder levels coarse to fine (Mask2Former) instead of
                fine to coarse; this orders ``input_proj``, ``level_embed``, the memory and the
                multi-scale features.
            mask2former_layout: Mask2Former's module layout: ``input_proj`` only for the encoder
                levels, the lateral 1x1 conv (``adapter_1``) on the raw backbone feature, lateral
                and 3x3 output conv (``layer_1``) without bias, level embedding and encoder under
                ``transformer``.
            mask_dim: when set, a final 1x1 conv with bias (``mask_features``) maps the stride-4
                feature to this width (Mask2Former); None keeps the output conv's result.
            checkpoint_activations: in training, every encoder layer and the stride-4 branch
                keep only their inputs for the backward pass and recompute the rest there.
        """
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"pixel decoder features {missing} not among {sorted(input_shape)}")
        if in_features[0] in transformer_in_features or not set(transformer_in_features) <= set(
            in_features
        ):
            raise ValueError(
                f"SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {transformer_in_features} "
                f"must be a subset of IN_FEATURES {in_features} without its first (lateral) entry"
            )
        self.in_features = list(in_features)
        self.transformer_in_features = list(transformer_in_features)
        self.lateral_feature = in_features[0]
        self.mask_stride = input_shape[self.lateral_feature].stride
        self.conv_dim = conv_dim
        self.num_levels = len(transformer_in_features)
        self.mask2former_layout = mask2former_layout
        self.checkpoint_activations = checkpoint_activations
        # Encoder level order; the first entry of transformer_in_features is the finest level.
        self.encoder_features = self.transformer_in_features[:: -1 if coarse_levels_first else 1]
        self.projected_features = self.encoder_features if mask2former_layout else self.in_features

        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(input_shape[f].channels, conv_dim, kernel_size=1),
                get_norm(norm, conv_dim),
            )
            for f in self.projected_features
        )
        level_embed = nn.Parameter(torch.empty(self.num_levels, conv_dim))
        nn.init.normal_(level_embed)
        self.pe_layer = PositionEmbeddingSine(
            num_pos_feats=conv_dim // 2, normalize=normalize_positions
        )
        encoder = MSDeformAttnEncoder(
            num_layers=num_encoder_layers,
            dim=conv_dim,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
            n_levels=self.num_levels,
            n_heads=num_heads,
            n_points=num_points,
            msda_impl=msda_impl,
            checkpoint_activations=checkpoint_activations,
        )
        if mask2former_layout:
            self.transformer = Mask2FormerTransformer(level_embed, encoder)
            lateral_channels = input_shape[self.lateral_feature].channels
            self.adapter_1 = Conv2d(
                lateral_channels, conv_dim, 1, bias=False, norm=get_norm(norm, conv_dim)
            )
            self.layer_1 = Conv2d(
                conv_dim,
                conv_dim,
                3,
                padding=1,
                bias=False,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
        else:
            self.level_embed = level_embed
            self.encoder = encoder
            self.lateral_conv = nn.Sequential(
                nn.Conv2d(conv_dim, conv_dim, kernel_size=1), get_norm(norm, conv_dim)
            )
            self.output_conv = nn.Sequential(
                nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1),
                get_norm(norm, conv_dim),
                nn.ReLU(),
            )
        self.mask_features = None if mask_dim is None else Conv2d(conv_dim, mask_dim, 1)
        if mask2former_layout:
            self._init_mask2former_parameters()

    def _init_mask2former_parameters(self):
        """Mask2Former's init: projections xavier-uniform (zero bias); encoder matrices
        xavier-uniform, then each deformable attention's own reset; level embedding N(0, 1);
        lateral, output and ``mask_features`` convs Caffe2-xavier."""
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        encoder = self.transformer.encoder
        for param in (p for p in encoder.parameters() if p.dim() > 1):
            nn.init.xavier_uniform_(param)
        for module in (m for m in encoder.modules() if isinstance(m, MSDeformAttn)):
            module._reset_parameters()
        nn.init.normal_(self.transformer.level_embed)
        for conv in (self.adapter_1, self.layer_1, self.mask_features):
            if conv is None:
                continue
            weight_init.c2_xavier_fill(conv)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": input_shape,
            "in_features": head.IN_FEATURES,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "conv_dim": head.CONVS_DIM,
            "norm": head.NORM,
            "num_encoder_layers": head.TRANSFORMER_ENC_LAYERS,
            "num_heads": head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            "num_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "dim_feedforward": head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "dropout": head.DEFORMABLE_TRANSFORMER_ENCODER_DROPOUT,
            "activation": head.DEFORMABLE_TRANSFORMER_ENCODER_ACTIVATION,
            "normalize_positions": head.POSITION_ENCODING_NORMALIZE,
            "msda_impl": head.MSDA_IMPL,
            "coarse_levels_first": head.COARSE_LEVELS_FIRST,
            "mask2former_layout": head.MASK2FORMER_LAYOUT,
            "mask_dim": head.MASK_DIM or None,
            "checkpoint_activations": cfg.MODEL.ACTIVATION_CHECKPOINTING.PIXEL_DECODER,
        }

    @property
    def _transformer(self) -> nn.Module:
        """The module holding ``level_embed`` and ``encoder`` (self, or ``transformer``)."""
        return self.transformer if self.mask2former_layout else self

    def _encode(self, features: Dict[str, torch.Tensor]):
        """Project the encoder levels and run the encoder.

        Returns:
            ``(memory, spatial_shapes, level_start_index, projections)``: ``memory``
            ``[N, S, conv_dim]`` with the levels in :attr:`encoder_features` order, each flattened
            row-major; ``spatial_shapes`` ``[L, 2]`` int64; ``level_start_index`` ``[L]`` int64;
            ``projections`` ``{name: [N, conv_dim, H, W]}`` of :attr:`encoder_features`.
        """
        projections = {
            name: proj(features[name])
            for name, proj in zip(self.projected_features, self.input_proj)
            if name in self.encoder_features
        }
        srcs, pos_embeds, shapes = [], [], []
        for level, name in enumerate(self.encoder_features):
            src = projections[name]
            shapes.append(src.shape[-2:])
            srcs.append(src.flatten(2).transpose(1, 2))
            # The encoding is the same for every frame (no padding mask): keep batch 1.
            pos = self.pe_layer(src).flatten(2).transpose(1, 2)
            pos_embeds.append(pos + self._transformer.level_embed[level])
        src_flatten = torch.cat(srcs, 1)
        pos_flatten = torch.cat(pos_embeds, 1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        memory = self._transformer.encoder(
            src_flatten, pos_flatten, spatial_shapes, level_start_index
        )
        return memory, spatial_shapes, level_start_index, projections

    def _level_maps(self, memory: torch.Tensor, spatial_shapes: torch.Tensor):
        """Split the memory back into ``[N, conv_dim, H_l, W_l]`` maps, in encoder level order."""
        shapes = [tuple(s) for s in spatial_shapes.tolist()]
        tokens = memory.split([height * width for height, width in shapes], dim=1)
        return [
            level.transpose(1, 2).reshape(memory.shape[0], self.conv_dim, height, width)
            for level, (height, width) in zip(tokens, shapes)
        ]

    def _mask_feature(self, features, finest: torch.Tensor) -> torch.Tensor:
        """:meth:`_stride4_branch` of the lateral backbone feature, checkpointed when asked."""
        return checkpointed(
            self._stride4_branch,
            features[self.lateral_feature],
            finest,
            enabled=self.checkpoint_activations,
            module=self,
        )

    def _stride4_branch(self, lateral: torch.Tensor, finest: torch.Tensor) -> torch.Tensor:
        """Stride-4 feature: lateral branch (projection, 1x1 conv, GN) of the backbone feature
        ``lateral`` + up-sampled finest encoder level ``finest``, 3x3 conv, GN, ReLU (then the
        1x1 ``mask_features`` conv when configured)."""
        if self.mask2former_layout:
            lateral = self.adapter_1(lateral)
        else:
            projection = self.input_proj[self.projected_features.index(self.lateral_feature)]
            lateral = self.lateral_conv(projection(lateral))
        mask_feature = lateral + F.interpolate(
            finest, size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        output_conv = self.layer_1 if self.mask2former_layout else self.output_conv
        mask_feature = output_conv(mask_feature)
        if self.mask_features is not None:
            mask_feature = self.mask_features(mask_feature)
        return mask_feature

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone outputs, ``{name: [N, C_i, H_i, W_i]}``.

        Returns:
            A tuple ``(mask_feature, memory, spatial_shapes, level_start_index)``:
            ``mask_feature`` ``[N, mask_dim or conv_dim, H_0, W_0]`` at the lateral level's stride
            (4); ``memory`` ``[N, S, conv_dim]``, the encoder output of every level in
            :attr:`encoder_features` order (finest first by default), each flattened row-major;
            ``spatial_shapes`` ``[L, 2]`` int64 (H, W); ``level_start_index`` ``[L]`` int64.
        """
        return self.forward_features_and_levels(features)[:4]

    def forward_features_and_levels(self, features: Dict[str, torch.Tensor]):
        """:meth:`forward_features` plus the encoder's inputs: the projected levels (1x1 conv +
        GroupNorm, before positional and level embeddings), ``[N, conv_dim, H_l, W_l]`` in
        :attr:`encoder_features` order, as a fifth element."""
        memory, spatial_shapes, level_start_index, projections = self._encode(features)
        # Only the finest encoder level enters the mask feature.
        finest_level = self.encoder_features.index(self.transformer_in_features[0])
        finest = self._level_maps(memory, spatial_shapes)[finest_level]
        mask_feature = self._mask_feature(features, finest)
        levels = [projections[name] for name in self.encoder_features]
        return mask_feature, memory, spatial_shapes, level_start_index, levels

    def forward_multi_scale(self, features: Dict[str, torch.Tensor]):
        """Mask2Former's interface, in the dtype of the decoder's weights (float32, also under
        autocast; bfloat16 once converted for low-precision inference).

        Args:
            features: backbone outputs, ``{name: [N, C_i, H_i, W_i]}``.

        Returns:
            ``(mask_features, transformer_encoder_features, multi_scale_features)``:
            ``mask_features`` ``[N, mask_dim or conv_dim, H_0, W_0]``; ``multi_scale_features``
            the encoder output per level as ``[N, conv_dim, H_l, W_l]`` maps in
            :attr:`encoder_features` order (low -> high resolution with
            ``coarse_levels_first``); ``transformer_encoder_features`` its first entry.
        """
        device_type = next(iter(features.values())).device.type
        dtype = self.input_proj[0][0].weight.dtype
        with torch.autocast(device_type=device_type, enabled=False):
            features = {name: feature.to(dtype) for name, feature in features.items()}
            memory, spatial_shapes, _, _ = self._encode(features)
            multi_scale = self._level_maps(memory, spatial_shapes)
            finest_level = self.encoder_features.index(self.transformer_in_features[0])
            mask_feature = self._mask_feature(features, multi_scale[finest_level])
        return mask_feature, multi_scale[0], multi_scale

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as :meth:`forward_features`."""
        return self.forward_features(features)
