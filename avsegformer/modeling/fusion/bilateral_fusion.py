"""Bilateral-Fusion block: pre-norm bi-directional attention with layer scale, per feature level."""

from typing import List, Sequence, Tuple

import torch
from timm.layers import DropPath
from torch import nn

from .bilateral_attention import BilateralAttention

__all__ = ["BilateralFusionBlock"]


class BilateralFusionBlock(nn.Module):
    """COMBO's ``BiAttentionBlock``. For every level ``l`` (own LayerNorms, attention and visual
    layer scale) and the *same* input audio token::

        v = LN_v[l](pixels_l),  a = LN_a[l](audio)
        v' = v + gamma_v[l] * delta_v,  a'_l = a + gamma_a * delta_a

    The residual is added to the LayerNormed tensors, so the returned pixels are normalised ones;
    with the layer scale at its initial 1e-4 the block starts as almost a pure LayerNorm. The
    audio result is the mean of ``a'_l`` over the levels (one level in every COMBO config).
    """

    def __init__(
        self,
        *,
        visual_dims: Sequence[int] = (256,),
        audio_dim: int = 128,
        embed_dim: int = 256,
        num_heads: int = 8,
        dropout: float = 0.1,
        drop_path: float = 0.0,
        init_values: float = 1e-4,
    ):
        super().__init__()
        self.layer_norm_v_list = nn.ModuleList()
        self.layer_norm_a_list = nn.ModuleList()
        self.attn_list = nn.ModuleList()
        self.gamma_v_list = nn.ParameterList()
        for visual_dim in visual_dims:
            self.layer_norm_v_list.append(nn.LayerNorm(visual_dim))
            self.layer_norm_a_list.append(nn.LayerNorm(audio_dim))
            self.attn_list.append(
                BilateralAttention(
                    visual_dim=visual_dim,
                    audio_dim=audio_dim,
                    embed_dim=embed_dim,
                    num_heads=num_heads,
                    dropout=dropout,
                )
            )
            self.gamma_v_list.append(nn.Parameter(torch.full((visual_dim,), init_values)))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.gamma_a = nn.Parameter(torch.full((audio_dim,), init_values))

    @property
    def num_levels(self) -> int:
        return len(self.attn_list)

    def fuse_level(
        self,
        level: int,
        pixels: torch.Tensor,
        audio: torch.Tensor,
        pos_visual: torch.Tensor | None = None,
        pos_audio: torch.Tensor | None = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One level.

        Args:
            level: index of the level's parameters.
            pixels: ``[N, H*W, C_v]``.
            audio: ``[N, 1, C_a]``.
            pos_visual, pos_audio: see :class:`BilateralAttention`.

        Returns:
            Updated pixels ``[N, H*W, C_v]`` and audio ``[N, 1, C_a]``.
        """
        v = self.layer_norm_v_list[level](pixels)
        a = self.layer_norm_a_list[level](audio)
        delta_v, delta_a = self.attn_list[level](v, a, pos_visual, pos_audio)
        v = v + self.drop_path(self.gamma_v_list[level] * delta_v)
        a = a + self.drop_path(self.gamma_a * delta_a)
        return v, a

    def forward(
        self,
        feature_maps: Sequence[torch.Tensor],
        audio: torch.Tensor,
        pos_visual: Sequence[torch.Tensor | None],
        pos_audio: torch.Tensor | None = None,
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """
        Args:
            feature_maps: one ``[N, C_v, H_l, W_l]`` map per level.
            audio: ``[N, 1, C_a]``.
            pos_visual: one ``[N or 1, H_l*W_l, C_v]`` (or None) per level.
            pos_audio: ``[N or 1, 1, C_a]`` or None.

        Returns:
            The fused maps (same shapes as ``feature_maps``) and the audio ``[N, 1, C_a]``.
        """
        if len(feature_maps) != self.num_levels or len(pos_visual) != self.num_levels:
            raise ValueError(
                f"the block has {self.num_levels} level(s), got {len(feature_maps)} feature "
                f"map(s) and {len(pos_visual)} position encoding(s)"
            )
        fused_maps, fused_audio = [], []
        for level, (feature_map, pos) in enumerate(zip(feature_maps, pos_visual)):
            n, c, h, w = feature_map.shape
            pixels = feature_map.flatten(2).transpose(1, 2)  # [N, HW, C]
            v, a = self.fuse_level(level, pixels, audio, pos, pos_audio)
            fused_maps.append(v.transpose(1, 2).reshape(n, c, h, w))
            fused_audio.append(a)
        return fused_maps, torch.stack(fused_audio, dim=1).mean(dim=1)
