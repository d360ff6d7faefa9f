"""COMBO's temporal-consistency loss: consecutive frames' mask logits should point the same way."""

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["temporal_consistency_loss"]


def temporal_consistency_loss(
    mask_logits: torch.Tensor, group_lengths: Sequence[int]
) -> torch.Tensor:
    """Mean over groups of the mean over consecutive frame pairs of ``d * exp(-d)``, with
    ``d = 1 - cos(m_t, m_{t+1})`` the cosine distance of the two frames' flattened mask logits.

    Frames are grouped consecutively along dim 0 (``group_lengths`` sums to N); pairs never
    cross a group boundary and groups of one frame are left out. With equal groups of L frames
    this is ``sum_{g,t} d e^{-d} / G / (L - 1)``.

    Args:
        mask_logits: ``[N, Q, h*w]`` (any trailing shape; flattened per frame).
        group_lengths: frames per group, in order.

    Returns:
        scalar; 0 (still attached to ``mask_logits``) when no group has two frames.
    """
    lengths = [int(n) for n in group_lengths]
    if sum(lengths) != mask_logits.shape[0] or any(n < 1 for n in lengths):
        raise ValueError(
            f"temporal_consistency_loss: group lengths {lengths} do not partition "
            f"{mask_logits.shape[0]} frames"
        )
    frames = mask_logits.flatten(1)
    num_groups = sum(1 for n in lengths if n > 1)
    if num_groups == 0:
        return frames.sum() * 0
    ones = frames.new_ones(frames.shape[0] - 1)
    distance = F.cosine_embedding_loss(frames[:-1], frames[1:], ones, reduction="none")
    # Weight of each consecutive pair: 1 / ((L - 1) * groups with a pair), 0 across boundaries.
    weights = []
    for n in lengths:
        if n > 1:
            weights += [1.0 / ((n - 1) * num_groups)] * (n - 1)
        weights.append(0.0)
    weights = torch.tensor(weights[:-1], dtype=distance.dtype, device=distance.device)
    return (distance * torch.exp(-distance) * weights).sum()
