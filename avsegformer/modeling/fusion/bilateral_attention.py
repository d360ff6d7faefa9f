"""Bi-directional multi-head attention between the pixels of a feature map and one audio token."""

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BilateralAttention"]

# Attention scores are clamped to this magnitude so that half precision cannot overflow.
_SCORE_LIMIT = 50000.0


class BilateralAttention(nn.Module):
    """COMBO's ``BiMultiHeadAttention``: one score per (pixel, head) between the pixel query and
    the audio key updates both modalities.

    - pixel update: ``delta_v[n] = out_v_proj(p[n] * val_a)``, the audio value weighted by the
      pixel's attention probability;
    - audio update: ``delta_a = out_a_proj(sum_n p[n] * val_v[n])``, the pixel values pooled by the
      same probabilities.

    With a single audio key a softmax over keys would be constant, so the original normalises over
    the pixels in both directions (``p`` sums to 1 over the ``H*W`` pixels, per head); the two
    directions therefore share one distribution and differ only in their dropout masks.

    Projections are xavier-uniform with zero biases, as in the original.
    """

    def __init__(
        self,
        *,
        visual_dim: int = 256,
        audio_dim: int = 128,
        embed_dim: int = 256,
        num_heads: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        # Construction and initialisation order follow the original, so a seeded build gives the
        # same weights.
        self.v_proj = nn.Linear(visual_dim, embed_dim)
        self.a_proj = nn.Linear(audio_dim, embed_dim)
        self.values_v_proj = nn.Linear(visual_dim, embed_dim)
        self.values_a_proj = nn.Linear(audio_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, visual_dim)
        self.out_a_proj = nn.Linear(embed_dim, audio_dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for layer in (
            self.v_proj,
            self.a_proj,
            self.values_v_proj,
            self.values_a_proj,
            self.out_v_proj,
            self.out_a_proj,
        ):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L, E]`` -> ``[N, heads, L, E / heads]``."""
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, heads, L, E / heads]`` -> ``[N, L, E]``."""
        n, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(n, length, self.embed_dim)

    def forward(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        pos_visual: torch.Tensor | None = None,
        pos_audio: torch.Tensor | None = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            visual: ``[N, H*W, C_v]`` pixel features.
            audio: ``[N, 1, C_a]`` one audio token per frame.
            pos_visual: ``[N or 1, H*W, C_v]`` added to the pixels for the query only.
            pos_audio: ``[N or 1, 1, C_a]`` added to the audio for the key only.

        Returns:
            ``delta_visual`` ``[N, H*W, C_v]`` and ``delta_audio`` ``[N, 1, C_a]``.
        """
        query_in = visual if pos_visual is None else visual + pos_visual
        key_in = audio if pos_audio is None else audio + pos_audio
        query = self._split_heads(self.v_proj(query_in) * self.scale)  # [N, h, HW, d]
        key = self._split_heads(self.a_proj(key_in))  # [N, h, 1, d]
        value_visual = self._split_heads(self.values_v_proj(visual))  # [N, h, HW, d]
        value_audio = self._split_heads(self.values_a_proj(audio))  # [N, h, 1, d]

        scores = torch.matmul(query, key.transpose(-1, -2))  # [N, h, HW, 1]
        scores = scores.clamp(min=-_SCORE_LIMIT, max=_SCORE_LIMIT)
        probs = scores.softmax(dim=2)  # over the pixels

        probs_visual = F.dropout(probs, p=self.dropout, training=self.training)
        probs_audio = F.dropout(
            probs.transpose(-1, -2).contiguous(), p=self.dropout, training=self.training
        )  # [N, h, 1, HW]
        out_visual = torch.matmul(probs_visual, value_audio)  # [N, h, HW, d]
        out_audio = torch.matmul(probs_audio, value_visual)  # [N, h, 1, d]
        return (
            self.out_v_proj(self._merge_heads(out_visual)),
            self.out_a_proj(self._merge_heads(out_audio)),
        )
