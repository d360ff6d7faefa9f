"""COMBO's audio-visual fusion of the mask features: the Bilateral-Fusion block or none."""

from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..transformer.position_encoding import PositionEmbeddingSine
from .bilateral_fusion import BilateralFusionBlock

__all__ = ["AudioVisualFusion"]


class AudioVisualFusion(nn.Module):
    """COMBO's ``AVFuse`` in its two released variants.

    Every fused map first gets its learnable level embedding (one row per level) added per
    channel. Then, by ``fusion_type``:

    - ``"MHA-B"`` (every training config): :class:`BilateralFusionBlock` with a normalised sine
      position encoding of the map (``visual_dim / 2`` features per axis) on the pixel queries
      and a learnable audio position embedding on the audio key.
    - ``"MHA-None"`` (the released R50-AVSS test config): nothing more; the maps are returned
      with their level embedding and the audio unchanged. ``audio_pos`` is still built, as in the
      original, so checkpoints keep their layout (it receives no gradient).

    COMBO applies it "late", to the pixel decoder's mask features under the name ``"res2"``. The
    original builds a single level-embedding row, so it only ever runs one level and uses that
    level's position encoding; with several levels each gets its own encoding here.
    """

    FUSION_TYPES = ("MHA-B", "MHA-None")

    def __init__(
        self,
        *,
        fusion_type: str = "MHA-B",
        feature_names: Sequence[str] = ("res2",),
        visual_dim: int = 256,
        audio_dim: int = 128,
        num_heads: int = 8,
        dropout: float = 0.1,
        drop_path: float = 0.0,
        init_values: float = 1e-4,
    ):
        """
        Args:
            fusion_type: ``"MHA-B"`` or ``"MHA-None"``.
            feature_names: keys of the maps to fuse, all with ``visual_dim`` channels.
            visual_dim: channels of the fused maps (also the attention width).
            audio_dim: width of the audio token.
            num_heads, dropout: of the attention (dropout acts on its probabilities).
            drop_path: stochastic depth on both residual updates.
            init_values: initial layer scale of both residual updates.
        """
        super().__init__()
        if fusion_type not in self.FUSION_TYPES:
            raise ValueError(
                f"unknown fusion_type {fusion_type!r}; expected one of {self.FUSION_TYPES}"
            )
        if not feature_names:
            raise ValueError("feature_names must name at least one feature map")
        self.fusion_type = fusion_type
        self.feature_names = tuple(feature_names)
        self.audio_dim = audio_dim
        # Built in the original's order so that a seeded build gives the same initial weights.
        self.audio_pos = nn.Embedding(1, audio_dim)
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=visual_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(len(self.feature_names), visual_dim)
        if fusion_type == "MHA-B":
            self.b_attn = BilateralFusionBlock(
                visual_dims=[visual_dim] * len(self.feature_names),
                audio_dim=audio_dim,
                embed_dim=visual_dim,
                num_heads=num_heads,
                dropout=dropout,
                drop_path=drop_path,
                init_values=init_values,
            )

    def forward(
        self, visual_features: Dict[str, torch.Tensor], audio: torch.Tensor
    ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """
        Args:
            visual_features: at least the ``feature_names`` maps, ``[N, C, H, W]`` each, with
                N = frames; it is not modified.
            audio: ``[N, 1, audio_dim]``, one audio token per frame.

        Returns:
            ``(fused, audio)``: a new dict with every input entry, the fused ones replaced
            (same shapes), and the fused audio ``[N, 1, audio_dim]``.
        """
        missing = [name for name in self.feature_names if name not in visual_features]
        if missing:
            raise KeyError(
                f"the fusion needs feature map(s) {missing}; got {sorted(visual_features)}"
            )
        n = audio.shape[0]
        if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[2] != self.audio_dim:
            raise ValueError(
                f"audio must be [N, 1, {self.audio_dim}] (one token per frame), got "
                f"{list(audio.shape)}"
            )
        maps = []
        for level, name in enumerate(self.feature_names):
            feature_map = visual_features[name]
            if feature_map.shape[0] != n:
                raise ValueError(
                    f"feature map {name!r} has {feature_map.shape[0]} frames, audio has {n}"
                )
            maps.append(feature_map + self.level_embed.weight[level][None, :, None, None])

        fused = dict(visual_features)
        if self.fusion_type == "MHA-None":
            fused.update(zip(self.feature_names, maps))
            return fused, audio

        pos_visual = [self.pe_layer(m).flatten(2).transpose(1, 2) for m in maps]  # [1, HW, C]
        pos_audio = self.audio_pos.weight[None]  # [1, 1, audio_dim]
        fused_maps, fused_audio = self.b_attn(maps, audio, pos_visual, pos_audio)
        fused.update(zip(self.feature_names, fused_maps))
        return fused, fused_audio
