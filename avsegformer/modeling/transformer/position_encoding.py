"""Sine positional encoding of a feature map (DETR style, as AVSegFormer configures it)."""

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of the (row, column) position of every pixel.

    AVSegFormer uses it with ``normalize=False``: the positions are the raw 1-based row and column
    indices, so the encoding depends on the absolute feature-map size (it differs between 224 and
    512 inputs). Channels ``[0, num_pos_feats)`` encode the row (y), the next ``num_pos_feats`` the
    column (x); within each half, even channels are ``sin(p / t_i)`` and odd channels
    ``cos(p / t_i)`` with ``t_i = temperature ** (2 * (i // 2) / num_pos_feats)``.
    """

    def __init__(
        self,
        *,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = False,
        scale: float = 2 * math.pi,
    ):
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the positions of ``x``.

        Args:
            x: ``[N, C, H, W]``; only its size, device and dtype are used.
            mask: optional ``[N, H, W]`` bool, True at padded pixels. Without a mask every pixel
                is valid and the result is the same for every image, so it is returned once
                (``[1, 2 * num_pos_feats, H, W]``) and broadcasts over the batch.

        Returns:
            ``[N or 1, 2 * num_pos_feats, H, W]`` in ``x.dtype``.
        """
        height, width = x.shape[-2:]
        if mask is None:
            not_mask = torch.ones(1, height, width, device=x.device, dtype=torch.float32)
        else:
            not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # Interleave sin (even channels) and cos (odd channels).
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        return pos.to(x.dtype)
