"""Losses of AVSegFormer: the main mask loss and the auxiliary "mix" loss.

Which frames are supervised is decided by :func:`~avsegformer.modeling.clip_io.supervised_frames`
(frames with an annotated pixel), which the meta-architecture also uses to run its head only on
those frames. Ignored pixels inside an annotated frame are left out of every sum; they never
count as background.
"""

import logging
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .clip_io import supervised_frames

__all__ = ["AVSegFormerCriterion", "dice_loss"]

logger = logging.getLogger(__name__)

# Added to each sum of the dice denominator, as in the original.
_DICE_EPS = 0.001


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None):
    """V-Net dice loss per frame, on ``sigmoid(logits)``.

    ``1 - 2 sum(p g) / ((sum(p^2) + 0.001) + (sum(g^2) + 0.001))``. A frame with an empty target
    gives 1 with zero gradient.

    Args:
        logits: ``[n, H, W]``.
        targets: ``[n, H, W]`` float in {0, 1}.
        valid: optional ``[n, H, W]`` float, 0 at ignored pixels.

    Returns:
        ``[n]``.
    """
    probs = logits.sigmoid()
    if valid is not None:
        probs = probs * valid
        targets = targets * valid
    probs, targets = probs.flatten(1), targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = (probs.square().sum(-1) + _DICE_EPS) + (targets.square().sum(-1) + _DICE_EPS)
    return 1 - numerator / denominator


class AVSegFormerCriterion(nn.Module):
    """Main mask loss plus ``mix_loss_weight`` times the dice of the mask-feature channel mean.

    Main loss, by ``mask_loss``:
        "dice": :func:`dice_loss` on the single-channel logits (S4, MS3), mean over frames;
        "bce": binary cross-entropy on the sigmoid (log clamped at -100 like ``nn.BCELoss``),
            mean over pixels; the original's unused alternative;
        "ce": per-pixel cross-entropy over the classes (AVSS), mean per frame then over frames.
    With ``empty_frame_weight`` > 0 ("dice" only), a frame whose target has no foreground pixel
    (where the dice loss is 1 with no gradient) scores ``empty_frame_weight`` times its binary
    cross-entropy against background instead, in the main loss.
    Mix loss: the channel mean of the mixed mask feature, up-sampled (bilinear) to the target
    size, taken as a logit map against the foreground (label > 0): :func:`dice_loss` (mean over
    frames) for "dice" and "ce", binary cross-entropy for "bce" (the original uses its main
    binary loss there).
    """

    def __init__(
        self,
        *,
        mask_loss: str = "dice",
        mask_loss_weight: float = 1.0,
        mix_loss_weight: float = 0.1,
        ignore_label: int = 255,
        empty_frame_weight: float = 0.0,
    ):
        super().__init__()
        if empty_frame_weight < 0:
            raise ValueError(f"empty_frame_weight must be >= 0, got {empty_frame_weight}")
        self.empty_frame_weight = empty_frame_weight
        if mask_loss not in ("dice", "bce", "ce"):
            raise ValueError(f"mask loss must be 'dice', 'bce' or 'ce', got {mask_loss!r}")
        self.mask_loss = mask_loss
        self.mask_loss_weight = mask_loss_weight
        self.mix_loss_weight = mix_loss_weight
        self.ignore_label = ignore_label

    def forward(
        self, pred_logits: torch.Tensor, mask_feature: torch.Tensor, targets: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            pred_logits: ``[N, K, H, W]`` (K = 1 for "dice"/"bce").
            mask_feature: ``[N, C, h, w]`` mixed mask feature.
            targets: ``[N, H, W]`` int64 labels, ``ignore_label`` where not annotated.

        Returns:
            ``{"loss_mask": ..., "loss_mix": ...}`` scalars, weights applied.
        """
        if pred_logits.shape[0] != targets.shape[0] or pred_logits.shape[-2:] != targets.shape[-2:]:
            raise ValueError(
                f"predictions {tuple(pred_logits.shape)} do not match targets "
                f"{tuple(targets.shape)}"
            )
        if self.mask_loss != "ce" and pred_logits.shape[1] != 1:
            raise ValueError(
                f"the {self.mask_loss} loss needs 1 channel, got {pred_logits.shape[1]}"
            )

        valid = targets != self.ignore_label
        supervised = supervised_frames(targets, self.ignore_label)
        if supervised.numel() == 0:
            # Keep both outputs in the graph so that every rank runs the same backward.
            zero = pred_logits.sum() * 0.0 + mask_feature.sum() * 0.0
            return {"loss_mask": zero, "loss_mix": zero.clone()}
        if supervised.numel() < targets.shape[0]:
            pred_logits = pred_logits.index_select(0, supervised)
            mask_feature = mask_feature.index_select(0, supervised)
            targets = targets.index_select(0, supervised)
            valid = valid.index_select(0, supervised)
        pred_logits = pred_logits.float()
        # No pixel-level mask needed (and none applied) when whole frames are annotated.
        pixel_weights = None if bool(valid.all()) else valid.float()
        foreground = ((targets > 0) & valid).float()

        if self.mask_loss == "ce":
            loss_mask = self._cross_entropy(pred_logits, targets, pixel_weights)
        elif self.mask_loss == "dice":
            loss_mask = self._dice_or_empty(pred_logits[:, 0], foreground, pixel_weights)
        else:
            loss_mask = self._binary_cross_entropy(pred_logits[:, 0], foreground, pixel_weights)

        channel_mean = mask_feature.float().mean(1, keepdim=True)
        channel_mean = F.interpolate(
            channel_mean, size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        if self.mask_loss == "bce":
            loss_mix = self._binary_cross_entropy(channel_mean[:, 0], foreground, pixel_weights)
        else:
            loss_mix = dice_loss(channel_mean[:, 0], foreground, pixel_weights).mean()
        return {
            "loss_mask": self.mask_loss_weight * loss_mask,
            "loss_mix": self.mix_loss_weight * loss_mix,
        }

    def _dice_or_empty(self, logits, foreground, pixel_weights):
        """Mean over frames of the dice loss, or of the weighted BCE for empty frames."""
        per_frame = dice_loss(logits, foreground, pixel_weights)
        if self.empty_frame_weight > 0:
            empty = foreground.flatten(1).sum(1) == 0
            if bool(empty.any()):
                bce = F.binary_cross_entropy_with_logits(
                    logits, foreground, reduction="none"
                ).flatten(1)
                if pixel_weights is None:
                    bce = bce.mean(1)
                else:
                    weights = pixel_weights.flatten(1)
                    bce = (bce * weights).sum(1) / weights.sum(1).clamp(min=1)
                per_frame = torch.where(empty, self.empty_frame_weight * bce, per_frame)
        return per_frame.mean()

    def _cross_entropy(self, logits, targets, pixel_weights):
        per_pixel = F.cross_entropy(
            logits, targets, ignore_index=self.ignore_label, reduction="none"
        ).flatten(1)
        if pixel_weights is None:
            return per_pixel.mean(1).mean()
        pixel_weights = pixel_weights.flatten(1)
        return (per_pixel.sum(1) / pixel_weights.sum(1)).mean()

    @staticmethod
    def _binary_cross_entropy(logits, foreground, pixel_weights):
        per_pixel = F.binary_cross_entropy(logits.sigmoid(), foreground, reduction="none")
        if pixel_weights is None:
            return per_pixel.mean()
        return (per_pixel * pixel_weights).sum() / pixel_weights.sum()
