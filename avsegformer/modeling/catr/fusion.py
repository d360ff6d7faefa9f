"""CATR's multiplicative cross-modal attention."""

import torch
from torch import nn

__all__ = ["MultiplicativeCrossAttention"]


class MultiplicativeCrossAttention(nn.Module):
    """``tgt * a * a`` with ``a = MHA(q = tgt, k = memory + pos, v = memory)``.

    The released temporal encoder updates the video tokens from the audio tokens (and back)
    this way: the attention output gates the target squared instead of being added to it, and
    no residual, normalisation or projection follows.

    Sequences are ``[S, N, C]`` (``batch_first=False``), as ``nn.MultiheadAttention`` is used
    by the released code.

    Args:
        d_model, nhead, dropout: the attention's.
        unused_conv: ``(in, out)`` channels of the 1x1 convolution ``vid_embed_proj`` every
            released module of this kind carries and never calls (released: ``(5, 15680)``),
            built only so that a released checkpoint loads with every key; None = not built.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        unused_conv: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        if unused_conv is not None:
            self.vid_embed_proj = nn.Conv2d(*unused_conv, 1)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            tgt: ``[S_q, N, C]`` the tokens updated (queries, no positional encoding).
            memory: ``[S_k, N, C]`` the tokens attended to (values).
            memory_key_padding_mask: ``[N, S_k]`` bool, True where ``memory`` is padding.
            pos: ``[S_k, N, C]`` positional encoding added to the keys only.

        Returns:
            ``[S_q, N, C]``.
        """
        key = memory if pos is None else memory + pos
        attended = self.multihead_attn(
            tgt, key, memory, key_padding_mask=memory_key_padding_mask, need_weights=False
        )[0]
        return tgt * attended * attended
