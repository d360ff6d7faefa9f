"""MoDAT's audio-visual mixer: channel and spatial mixtures of experts, blended per pixel."""

import torch
from torch import nn

from .layer import MixtureOfExperts

__all__ = ["DualAttentionMixer"]


class DualAttentionMixer(nn.Module):
    """The original ``CSA``: the mean of the audio components drives a channel-expert MoE and a
    spatial-expert MoE over the mask feature; a two-way softmax over two 1x1 convs of their
    concatenation blends them per pixel. No residual: a pixel both layers dropped is zero.

    The channel layer runs first, so with the "random" policy it draws first.
    Attribute names follow the original checkpoints (``channel_attn``, ``spatial_attn``,
    ``gate_c``, ``gate_s``).
    """

    def __init__(self, *, dim: int = 256, num_experts: int = 16, num_heads: int = 8, **moe_kwargs):
        """
        Args:
            dim: channels of the mask feature and the audio components.
            num_experts: experts per MoE layer.
            num_heads: attention heads of every expert.
            moe_kwargs: further :class:`MixtureOfExperts` options (dropout, loss weight, gating).
        """
        super().__init__()
        # Registered spatial first, like the original (its state-dict order).
        self.spatial_attn = MixtureOfExperts(
            dim=dim,
            num_experts=num_experts,
            expert_type="spatial",
            num_heads=num_heads,
            **moe_kwargs,
        )
        self.channel_attn = MixtureOfExperts(
            dim=dim,
            num_experts=num_experts,
            expert_type="channel",
            num_heads=num_heads,
            **moe_kwargs,
        )
        self.gate_s = nn.Conv2d(2 * dim, 1, 1)
        self.gate_c = nn.Conv2d(2 * dim, 1, 1)

    def forward(self, mask_feature: torch.Tensor, audio_components: torch.Tensor):
        """
        Args:
            mask_feature: ``[N, dim, H, W]``.
            audio_components: ``[N, K, dim]`` (K = 3 from the MoDAT query generator).

        Returns:
            ``(mixed [N, dim, H, W], balance loss [])``, the loss the mean of both layers'
            (each already weighted).
        """
        audio = audio_components.mean(dim=1, keepdim=True)
        channel, loss_c = self.channel_attn(mask_feature, audio)
        spatial, loss_s = self.spatial_attn(mask_feature, audio)
        both = torch.cat((channel, spatial), dim=1)
        alpha = torch.cat((self.gate_c(both), self.gate_s(both)), dim=1).softmax(dim=1)
        mixed = channel * alpha[:, 0:1] + spatial * alpha[:, 1:2]
        return mixed, (loss_c + loss_s) / 2
