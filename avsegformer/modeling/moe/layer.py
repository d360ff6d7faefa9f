"""A mixture-of-experts layer over the pixels of a feature map, conditioned on audio."""

import torch
from torch import nn

from ..transformer.position_encoding import PositionEmbeddingSine
from .experts import EXPERT_TYPES
from .gating import Top2Gating, Top2Routing

__all__ = ["MixtureOfExperts"]


class MixtureOfExperts(nn.Module):
    """MoDAT's MoE layer: pixels (plus a sine positional encoding) are routed by top-2 gating to
    ``num_experts`` experts of one type, each expert runs on its slots, and each pixel gets the
    weighted sum of its kept assignments' outputs.

    Tokens are dispatched to and gathered from the ``[N, E, C, dim]`` slots by index; a dense
    one-hot dispatch gives the same result. A pixel with no kept assignment gets a zero vector:
    there is no residual.

    Attribute names: ``gate.proj`` (the original's ``gate.w_gating``, transposed) and
    ``experts.{e}`` (the original's ``experts.experts.{e}``).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_experts: int = 16,
        expert_type: str = "channel",
        num_heads: int = 8,
        expert_dropout: float = 0.4,
        loss_weight: float = 1e-2,
        **gating_kwargs,
    ):
        """
        Args:
            dim: channels of the feature map and the audio token.
            num_experts: E.
            expert_type: "channel" (:class:`ChannelExpert`) or "spatial" (:class:`SpatialExpert`).
            num_heads: attention heads of every expert.
            expert_dropout: dropout inside the experts (training only).
            loss_weight: factor of the balance loss returned by :meth:`forward`.
            gating_kwargs: :class:`Top2Gating` options (second-expert policies and thresholds,
                capacity factors, minimum capacity, eps).
        """
        super().__init__()
        if expert_type not in EXPERT_TYPES:
            raise ValueError(
                f"unknown expert type {expert_type!r}: use one of {list(EXPERT_TYPES)}"
            )
        self.gate = Top2Gating(dim, num_experts, **gating_kwargs)
        expert_cls = EXPERT_TYPES[expert_type]
        self.experts = nn.ModuleList(
            expert_cls(dim=dim, num_heads=num_heads, dropout=expert_dropout)
            for _ in range(num_experts)
        )
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=dim // 2, normalize=False)
        self.loss_weight = loss_weight

    def forward(
        self, feature_map: torch.Tensor, audio: torch.Tensor, *, return_routing: bool = False
    ):
        """
        Args:
            feature_map: ``[N, dim, H, W]``.
            audio: ``[N, 1, dim]``.
            return_routing: also return the :class:`Top2Routing`.

        Returns:
            ``(output [N, dim, H, W], loss_weight * balance loss [])``, plus the routing if asked.
        """
        n, dim, height, width = feature_map.shape
        tokens = (feature_map + self.pe_layer(feature_map)).flatten(2).transpose(1, 2)
        routing = self.gate(tokens)
        output = self.route(tokens, audio, routing)
        output = output.transpose(1, 2).reshape(n, dim, height, width)
        loss = routing.balance_loss * self.loss_weight
        if return_routing:
            return output, loss, routing
        return output, loss

    def route(self, tokens: torch.Tensor, audio: torch.Tensor, routing: Top2Routing):
        """Dispatch ``tokens`` ``[N, n, dim]`` to the experts' slots, run the experts and combine
        their outputs: ``[N, n, dim]``."""
        n, num_tokens, dim = tokens.shape
        num_experts, capacity = len(self.experts), routing.capacity
        frame = torch.arange(n, device=tokens.device)[:, None]
        # Flat slot index (frame, expert, slot) of every assignment; 0 for dropped ones, whose
        # weight is 0.
        index_1 = (frame * num_experts + routing.expert_1) * capacity + routing.slot_1.clamp(min=0)
        index_2 = (frame * num_experts + routing.expert_2) * capacity + routing.slot_2.clamp(min=0)
        kept = torch.cat((routing.kept_1.flatten(), routing.kept_2.flatten()))
        flat_tokens = tokens.reshape(-1, dim)
        sources = torch.cat((flat_tokens, flat_tokens))
        indices = torch.cat((index_1.flatten(), index_2.flatten()))
        slots = tokens.new_zeros(n * num_experts * capacity, dim).index_copy(
            0, indices[kept], sources[kept]
        )
        slots = slots.view(n, num_experts, capacity, dim)
        outputs = torch.stack(
            [expert(slots[:, e], audio) for e, expert in enumerate(self.experts)], dim=1
        ).reshape(-1, dim)
        combined = routing.weight_1.unsqueeze(-1) * outputs[index_1.flatten()].view(
            n, num_tokens, dim
        )
        combined = combined + routing.weight_2.unsqueeze(-1) * outputs[index_2.flatten()].view(
            n, num_tokens, dim
        )
        # The float32 routing weights promote the sum: back to the tokens' dtype.
        return combined.to(tokens.dtype)
