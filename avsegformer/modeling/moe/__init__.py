"""Mixture-of-experts layers (MoDAT): top-2 gating with expert capacity, channel and spatial
experts, and the layer that routes feature-map pixels through them."""

from .dual_attention import DualAttentionMixer
from .experts import EXPERT_TYPES, ChannelExpert, SpatialExpert
from .gating import SECOND_EXPERT_POLICIES, Top2Gating, Top2Routing, expert_capacity
from .layer import MixtureOfExperts

__all__ = [
    "EXPERT_TYPES",
    "SECOND_EXPERT_POLICIES",
    "ChannelExpert",
    "DualAttentionMixer",
    "MixtureOfExperts",
    "SpatialExpert",
    "Top2Gating",
    "Top2Routing",
    "expert_capacity",
]
