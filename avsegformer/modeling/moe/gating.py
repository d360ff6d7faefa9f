"""Top-2 gating with per-expert capacity (GShard), as MoDAT routes mask-feature pixels.

Every frame (dim 0) is routed on its own: its tokens compete for the capacity of each expert.

The routing is computed in float32 whatever the tokens' dtype, also under autocast: gate
logits of tokens whose two best experts are nearly tied would, rounded to bfloat16 (8 bits of
mantissa), often swap those experts, and with them which expert's capacity a token takes. The
routing's gates and weights are therefore float32.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import outside_autocast

__all__ = ["SECOND_EXPERT_POLICIES", "Top2Gating", "Top2Routing", "expert_capacity"]

#: How a token's second expert is kept: "random" (with probability ``gate_2 / threshold``, a
#: fresh uniform draw per token from the global generator), "threshold" (``gate_2 > threshold``),
#: "all" (always) or "none" (never).
SECOND_EXPERT_POLICIES = ("random", "threshold", "all", "none")


def expert_capacity(num_tokens: int, num_experts: int, factor: float, minimum: int = 4) -> int:
    """Slots per expert and frame: ``max(minimum, min(n, floor(n * factor / num_experts)))``."""
    return max(minimum, min(num_tokens, int(num_tokens * factor / num_experts)))


@dataclass
class Top2Routing:
    """Where each token of each frame goes. Shapes ``[N, n]`` unless stated.

    Attributes:
        raw_gates: ``[N, n, E]`` softmax of the gate logits.
        expert_1, expert_2: int64 first and second expert.
        gate_1, gate_2: the two gate values renormalised over the pair.
        second_kept_by_policy: bool, the second expert survived the second-expert policy.
        kept_1, kept_2: bool, the assignment got a slot (policy and capacity).
        slot_1, slot_2: int64 slot in the expert, -1 where not kept.
        weight_1, weight_2: combine weight of each assignment (0 where not kept).
        density_1: ``[N, E]`` fraction of tokens whose first choice is each expert.
        density_1_proxy: ``[N, E]`` mean gate probability of each expert.
        balance_loss: ``[]`` ``E^2 * mean(density_1 * density_1_proxy)``, unscaled.
        capacity: slots per expert and frame.
    """

    raw_gates: torch.Tensor
    expert_1: torch.Tensor
    expert_2: torch.Tensor
    gate_1: torch.Tensor
    gate_2: torch.Tensor
    second_kept_by_policy: torch.Tensor
    kept_1: torch.Tensor
    kept_2: torch.Tensor
    slot_1: torch.Tensor
    slot_2: torch.Tensor
    weight_1: torch.Tensor
    weight_2: torch.Tensor
    density_1: torch.Tensor
    density_1_proxy: torch.Tensor
    balance_loss: torch.Tensor
    capacity: int


def _queue_positions(experts: torch.Tensor, active: torch.Tensor, num_experts: int):
    """Position of every active token in its expert's queue (the number of earlier active
    tokens of the same frame routed to the same expert), and each expert's queue length.

    Args:
        experts: ``[N, n]`` int64.
        active: ``[N, n]`` bool.

    Returns:
        ``([N, n] int64, [N, E] int64)``.
    """
    one_hot = F.one_hot(experts, num_experts) * active.unsqueeze(-1)
    earlier = one_hot.cumsum(dim=1) - one_hot
    return earlier.gather(-1, experts.unsqueeze(-1)).squeeze(-1), one_hot.sum(dim=1)


class Top2Gating(nn.Module):
    """Top-2 gating: a bias-free linear gate, softmax, the two best experts renormalised, a
    second-expert policy, then first-come slots per expert up to its capacity.

    First choices take slots in token order; the second choices kept by the policy queue behind
    every kept first choice of the same expert, again in token order. An assignment past the
    capacity is dropped and its weight lost (no renormalisation): a token may end with one or no
    expert. The balance loss uses the first choices before any drop.

    ``proj.weight`` is ``[E, dim]`` (``nn.Linear`` layout); the original stores its transpose.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        *,
        second_policy_train: str = "random",
        second_policy_eval: str = "random",
        second_threshold_train: float = 0.2,
        second_threshold_eval: float = 0.2,
        capacity_factor_train: float = 1.0,
        capacity_factor_eval: float = 2.0,
        min_capacity: int = 4,
        eps: float = 1e-9,
    ):
        super().__init__()
        for policy in (second_policy_train, second_policy_eval):
            if policy not in SECOND_EXPERT_POLICIES:
                raise ValueError(
                    f"unknown second-expert policy {policy!r}: use one of {SECOND_EXPERT_POLICIES}"
                )
        if num_experts < 2:
            raise ValueError(f"top-2 gating needs at least 2 experts, got {num_experts}")
        self.num_experts = num_experts
        self.proj = nn.Linear(dim, num_experts, bias=False)
        self.second_policy = {True: second_policy_train, False: second_policy_eval}
        self.second_threshold = {True: second_threshold_train, False: second_threshold_eval}
        self.capacity_factor = {True: capacity_factor_train, False: capacity_factor_eval}
        self.min_capacity = min_capacity
        self.eps = eps

    def forward(self, tokens: torch.Tensor) -> Top2Routing:
        """
        Args:
            tokens: ``[N, n, dim]``, any floating dtype.

        Returns:
            The routing of every token (:class:`Top2Routing`), computed in float32. The
            "random" policy draws one ``[N, n]`` float32 uniform tensor from the global
            generator, in training and in eval.
        """
        num_tokens, num_experts = tokens.shape[1], self.num_experts
        raw_gates = self.logits(tokens).softmax(dim=-1)
        gate_1, expert_1 = raw_gates.max(dim=-1)
        first = F.one_hot(expert_1, num_experts).to(raw_gates.dtype)
        gate_2, expert_2 = (raw_gates * (1.0 - first)).max(dim=-1)
        denominator = gate_1 + gate_2 + self.eps
        gate_1, gate_2 = gate_1 / denominator, gate_2 / denominator

        density_1 = first.mean(dim=1)
        density_1_proxy = raw_gates.mean(dim=1)
        balance_loss = (density_1_proxy * density_1).mean() * float(num_experts**2)

        second_kept = self._second_policy(gate_2)
        capacity = expert_capacity(
            num_tokens, num_experts, self.capacity_factor[self.training], self.min_capacity
        )
        all_tokens = torch.ones_like(second_kept)
        position_1, _ = _queue_positions(expert_1, all_tokens, num_experts)
        kept_1 = position_1 < capacity
        _, kept_count = _queue_positions(expert_1, kept_1, num_experts)
        position_2, _ = _queue_positions(expert_2, second_kept, num_experts)
        position_2 = position_2 + kept_count.gather(1, expert_2)
        kept_2 = second_kept & (position_2 < capacity)
        return Top2Routing(
            raw_gates=raw_gates,
            expert_1=expert_1,
            expert_2=expert_2,
            gate_1=gate_1,
            gate_2=gate_2,
            second_kept_by_policy=second_kept,
            kept_1=kept_1,
            kept_2=kept_2,
            slot_1=torch.where(kept_1, position_1, -1),
            slot_2=torch.where(kept_2, position_2, -1),
            weight_1=gate_1 * kept_1,
            weight_2=gate_2 * kept_2,
            density_1=density_1,
            density_1_proxy=density_1_proxy,
            balance_loss=balance_loss,
            capacity=capacity,
        )

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float32 gate logits ``[N, n, E]`` of ``tokens`` ``[N, n, dim]``: autocast off,
        tokens and weight cast to float32 (no-ops for a float32 gate and float32 tokens)."""
        return outside_autocast(F.linear, tokens, self.proj.weight)

    def _second_policy(self, gate_2: torch.Tensor) -> torch.Tensor:
        policy = self.second_policy[self.training]
        threshold = self.second_threshold[self.training]
        if policy == "all":
            return torch.ones_like(gate_2, dtype=torch.bool)
        if policy == "none":
            return torch.zeros_like(gate_2, dtype=torch.bool)
        if policy == "threshold":
            return gate_2 > threshold
        # One draw per token from the global generator, as the original does in eval too.
        draws = torch.rand(gate_2.shape, dtype=gate_2.dtype, device=gate_2.device)
        return draws < gate_2 / max(threshold, self.eps)
