"""Mask losses on sampled points (Mask2Former / PointRend style).

Predicted and target masks are compared at a few thousand points in normalised ``[0, 1]^2``
coordinates instead of on the full grid, so their resolutions may differ. Point sampling is
Detectron2's PointRend helpers; this module adds the uncertainty measure, the two per-mask
losses on the sampled values, and their pair-wise (cost-matrix) forms for Hungarian matching.
"""

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = [
    "mask_logit_uncertainty",
    "sample_uncertain_points",
    "sample_at_points",
    "point_sigmoid_ce_loss",
    "point_dice_loss",
    "pairwise_sigmoid_ce_cost",
    "pairwise_dice_cost",
]


def mask_logit_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """``-|logit|``: points whose logit is closest to the decision boundary rank highest.

    Args:
        logits: ``[M, 1, P]`` class-agnostic mask logits at P points.

    Returns:
        ``[M, 1, P]``.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"expected class-agnostic logits [M, 1, P], got {tuple(logits.shape)}")
    return -logits.abs()


def sample_uncertain_points(
    mask_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """PointRend importance sampling of ``num_points`` points per mask, without gradient.

    ``int(num_points * oversample_ratio)`` uniform candidates are drawn per mask, the
    ``int(importance_sample_ratio * num_points)`` most uncertain of them are kept
    (:func:`mask_logit_uncertainty`), and the rest are fresh uniform points. Uses the global
    generator: ``torch.rand(M, int(P * oversample_ratio), 2)``, then
    ``torch.rand(M, P - int(importance_sample_ratio * P), 2)``.

    Args:
        mask_logits: ``[M, 1, h, w]``.

    Returns:
        ``[M, P, 2]`` point coordinates (x, y) in ``[0, 1]``.
    """
    with torch.no_grad():
        return get_uncertain_point_coords_with_randomness(
            mask_logits,
            mask_logit_uncertainty,
            num_points,
            oversample_ratio,
            importance_sample_ratio,
        )


def sample_at_points(maps: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of single-channel maps at normalised points (zeros outside).

    Args:
        maps: ``[M, h, w]`` float.
        point_coords: ``[M, P, 2]`` in ``[0, 1]``.

    Returns:
        ``[M, P]``.
    """
    return point_sample(maps[:, None], point_coords, align_corners=False).squeeze(1)


def point_sigmoid_ce_loss(
    point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over points, summed over masks / ``num_masks``.

    Args:
        point_logits: ``[M, P]``.
        point_labels: ``[M, P]`` in ``[0, 1]``.

    Returns:
        scalar.
    """
    loss = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def point_dice_loss(
    point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """Dice loss ``1 - (2 sum(s t) + 1) / (sum(s) + sum(t) + 1)`` with ``s = sigmoid(logit)``,
    summed over masks / ``num_masks``.

    Args:
        point_logits: ``[M, P]``.
        point_labels: ``[M, P]`` in ``[0, 1]``.

    Returns:
        scalar.
    """
    probs = point_logits.sigmoid()
    numerator = 2 * (probs * point_labels).sum(-1)
    denominator = probs.sum(-1) + point_labels.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def pairwise_sigmoid_ce_cost(point_logits: torch.Tensor, point_labels: torch.Tensor):
    """:func:`point_sigmoid_ce_loss` (per mask) for every (prediction, target) pair.

    Args:
        point_logits: ``[Q, P]`` predictions.
        point_labels: ``[n, P]`` targets in ``[0, 1]``.

    Returns:
        ``[Q, n]``.
    """
    num_points = point_logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(
        point_logits, torch.ones_like(point_logits), reduction="none"
    )
    neg = F.binary_cross_entropy_with_logits(
        point_logits, torch.zeros_like(point_logits), reduction="none"
    )
    cost = torch.einsum("qp,np->qn", pos, point_labels) + torch.einsum(
        "qp,np->qn", neg, 1 - point_labels
    )
    return cost / num_points


def pairwise_dice_cost(point_logits: torch.Tensor, point_labels: torch.Tensor):
    """:func:`point_dice_loss` (per mask) for every (prediction, target) pair.

    Args:
        point_logits: ``[Q, P]`` predictions.
        point_labels: ``[n, P]`` targets in ``[0, 1]``.

    Returns:
        ``[Q, n]``.
    """
    probs = point_logits.sigmoid()
    numerator = 2 * torch.einsum("qp,np->qn", probs, point_labels)
    denominator = probs.sum(-1)[:, None] + point_labels.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)
