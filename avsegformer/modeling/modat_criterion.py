"""MoDAT's training loss: AVSegFormer's losses combined with the mixer's balance loss as each
original training script does."""

from typing import Dict

import torch

from .criterion import AVSegFormerCriterion

__all__ = ["MoDATCriterion"]


class MoDATCriterion(AVSegFormerCriterion):
    """:class:`AVSegFormerCriterion` plus the balance loss of the mixture-of-experts mixer.

    S4/MS3 (and AVSS with ``double_main_loss=False``): ``{"loss_mask", "loss_mix",
    "loss_balance"}``, the balance loss as the model returns it (already weighted).
    ``double_main_loss=True`` (the released AVSS script, which adds the loss to itself and never
    uses the balance loss): ``loss_mask`` and ``loss_mix`` are doubled and there is no
    ``loss_balance``.
    """

    def __init__(self, *, double_main_loss: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.double_main_loss = double_main_loss

    def forward(
        self,
        pred_logits: torch.Tensor,
        mask_feature: torch.Tensor,
        targets: torch.Tensor,
        balance_loss: torch.Tensor | None = None,
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            pred_logits, mask_feature, targets: as :meth:`AVSegFormerCriterion.forward`.
            balance_loss: ``[]`` the model's weighted balance loss.

        Returns:
            The loss dict (see the class docstring).
        """
        losses = super().forward(pred_logits, mask_feature, targets)
        if self.double_main_loss:
            return {name: 2 * loss for name, loss in losses.items()}
        if balance_loss is None:
            raise ValueError("MoDATCriterion needs the balance loss of the model")
        return {**losses, "loss_balance": balance_loss}
