"""Audio-visual mixer: a channel gate on the mask feature computed from the audio token."""

import torch
from torch import nn

__all__ = ["CrossModalMixer"]


class CrossModalMixer(nn.Module):
    """AVSegFormer's ``CrossModalMixer``: the audio token attends over every pixel of the feature
    map, and the attended vector, through a linear layer and a sigmoid, scales each channel.

    There is no residual: the output is ``feature_map * gate``. The original squeezes the gate
    with ``squeeze()``, which fails for a single frame; this uses ``squeeze(1)``.

    The keys and values are never materialised: with one query per head, ``q . (W_k x)`` equals
    ``(W_k^T q) . x`` and ``sum_p a_p W_v x_p`` equals ``W_v sum_p a_p x_p``, which turns the
    ``[N, H*W, 2C]`` projection into two ``[N, heads, H*W]`` products. The key/value projection
    has no bias (as in every original config), so this is exact up to rounding.
    """

    def __init__(self, *, dim: int = 256, num_heads: int = 8):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def gate_logits(self, feature_map: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Channel-gate logits before the sigmoid.

        Args:
            feature_map: ``[N, C, H, W]``.
            audio: ``[N, 1, C]`` one audio token per frame.

        Returns:
            ``[N, 1, C]``.
        """
        return self._attend(feature_map.flatten(2), audio)

    def token_gate_logits(self, tokens: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """:meth:`gate_logits` of a token sequence.

        Args:
            tokens: ``[N, L, C]``.
            audio: ``[N, 1, C]``.

        Returns:
            ``[N, 1, C]``.
        """
        return self._attend(tokens.transpose(1, 2), audio)

    def _attend(self, pixels: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The audio query attends over ``pixels`` ``[N, C, L]``; returns ``[N, 1, C]``."""
        n, dim = pixels.shape[:2]
        head_dim = dim // self.num_heads
        w_k, w_v = self.kv_proj.weight.view(2, self.num_heads, head_dim, dim).unbind(0)
        query = self.q_proj(audio).view(n, self.num_heads, head_dim)
        # Fold the key projection into the query: [N, heads, C].
        query_in_pixel_space = torch.einsum("nmd,mdc->nmc", query, w_k) * self.scale
        attn = torch.bmm(query_in_pixel_space, pixels).softmax(dim=-1)  # [N, heads, L]
        attended_pixels = torch.bmm(attn, pixels.transpose(1, 2))  # [N, heads, C]
        attended = torch.einsum("nmc,mdc->nmd", attended_pixels, w_v).reshape(n, 1, dim)
        return self.proj(attended)

    def forward(self, feature_map: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """
        Args:
            feature_map: ``[N, C, H, W]``.
            audio: ``[N, 1, C]``.

        Returns:
            ``[N, C, H, W]``, the gated feature map.
        """
        gate = self.gate_logits(feature_map, audio).squeeze(1).sigmoid()
        return feature_map * gate[:, :, None, None]
