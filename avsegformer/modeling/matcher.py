"""Hungarian matching of mask-classification queries to ground-truth instances (Mask2Former)."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_losses import pairwise_dice_cost, pairwise_sigmoid_ce_cost, sample_at_points

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to the target instances of each frame.

    Cost of query q for target j: ``cost_class * -softmax(logits_q)[label_j]
    + cost_mask * BCE(mask_q, mask_j) + cost_dice * dice(mask_q, mask_j)``, the mask terms on
    ``num_points`` uniform points shared by all queries and targets of the frame. The points of
    frame b are ``torch.rand(1, num_points, 2)`` from the global generator, drawn in frame
    order. Queries left unmatched are "no object".
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all three cost weights are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        target: dict,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost of one frame.

        Args:
            pred_logits: ``[Q, K+1]``.
            pred_masks: ``[Q, h, w]`` logits.
            target: ``labels`` ``[n]`` int64, ``masks`` ``[n, H, W]`` (bool or float).
            point_coords: ``[1, P, 2]`` in ``[0, 1]``, shared by predictions and targets.

        Returns:
            ``[Q, n]`` float32.
        """
        cost_class = -pred_logits.softmax(-1)[:, target["labels"]]
        target_masks = target["masks"].to(pred_masks)
        target_points = sample_at_points(
            target_masks, point_coords.repeat(target_masks.shape[0], 1, 1)
        )
        pred_points = sample_at_points(pred_masks, point_coords.repeat(pred_masks.shape[0], 1, 1))
        # Costs in float32 even under mixed precision: the assignment compares close values.
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            pred_points, target_points = pred_points.float(), target_points.float()
            cost_mask = pairwise_sigmoid_ce_cost(pred_points, target_points)
            cost_dice = pairwise_dice_cost(pred_points, target_points)
        return (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every frame.

        Args:
            outputs: ``pred_logits`` ``[N, Q, K+1]``, ``pred_masks`` ``[N, Q, h, w]``.
            targets: N dicts with ``labels`` ``[n]`` and ``masks`` ``[n, H, W]``.

        Returns:
            N pairs ``(query_indices, target_indices)``, int64 CPU tensors of length
            ``min(Q, n)``, query indices ascending.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(
                f"HungarianMatcher: {pred_logits.shape[0]} predicted frames but {len(targets)} "
                "targets; select the supervised frames first"
            )
        indices = []
        for b, target in enumerate(targets):
            point_coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], target, point_coords)
            rows, cols = linear_sum_assignment(cost.cpu())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
