"""CATR's matcher: which query of each clip is the sounding object."""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["ReferredQueryMatcher"]


class ReferredQueryMatcher(nn.Module):
    """Hungarian matching of each clip's single target trajectory (the sounding object's mask
    over the supervised frames) to one of its queries (MTTR's matcher, as CATR uses it).

    Cost of query q of clip b for the target of clip j, averaged over the frames given:
    ``cost_is_referred * -softmax(is_referred_q)[0] + cost_dice * -dice(sigmoid(mask_q),
    target_j)``, with the masks bilinearly upsampled to the target size and a dice smoothing of
    1. The released matcher uses ``cost_dice = 7`` whatever its config says.
    """

    def __init__(self, cost_is_referred: float = 2.0, cost_dice: float = 7.0):
        super().__init__()
        if cost_is_referred == 0 and cost_dice == 0:
            raise ValueError("ReferredQueryMatcher: both cost weights are 0")
        self.cost_is_referred = cost_is_referred
        self.cost_dice = cost_dice

    @torch.no_grad()
    def cost_matrices(
        self,
        pred_masks: torch.Tensor,
        pred_is_referred: torch.Tensor,
        target_masks: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The cost terms of every query against every clip's target.

        Args:
            pred_masks: ``[T, B, Q, h, w]`` mask logits.
            pred_is_referred: ``[T, B, Q, 2]`` logits (class 0 = referred).
            target_masks: ``[T, B, H, W]`` float in {0, 1}.

        Returns:
            ``{"cost_is_referred", "cost_dice", "cost"}``, each ``[B, Q, B]``.
        """
        t, b, q = pred_masks.shape[:3]
        masks = F.interpolate(
            pred_masks.flatten(1, 2).float(),
            size=target_masks.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        probs = masks.sigmoid().flatten(2).unsqueeze(2)  # [T, B*Q, 1, P]
        targets = target_masks.to(probs).flatten(2).unsqueeze(1)  # [T, 1, B, P]
        numerator = 2 * (probs * targets).sum(-1)
        denominator = probs.sum(-1) + targets.sum(-1)
        dice = ((numerator + 1) / (denominator + 1)).mean(0)  # [B*Q, B]
        referred = pred_is_referred.flatten(1, 2).float().softmax(-1)[..., 0].mean(0)  # [B*Q]
        cost_is_referred = (-referred)[:, None].expand(-1, b)
        cost_dice = -dice
        cost = self.cost_is_referred * cost_is_referred + self.cost_dice * cost_dice
        return {
            "cost_is_referred": cost_is_referred.reshape(b, q, b),
            "cost_dice": cost_dice.reshape(b, q, b),
            "cost": cost.reshape(b, q, b),
        }

    @torch.no_grad()
    def forward(self, pred_masks, pred_is_referred, target_masks) -> torch.Tensor:
        """``[B]`` int64: the query matched to each clip's target (arguments as
        :meth:`cost_matrices`)."""
        cost = self.cost_matrices(pred_masks, pred_is_referred, target_masks)["cost"].cpu()
        queries = [
            int(linear_sum_assignment(cost[i, :, i : i + 1])[0][0]) for i in range(cost.shape[0])
        ]
        return torch.tensor(queries, dtype=torch.int64, device=pred_masks.device)

    def extra_repr(self) -> str:
        return f"cost_is_referred={self.cost_is_referred}, cost_dice={self.cost_dice}"
