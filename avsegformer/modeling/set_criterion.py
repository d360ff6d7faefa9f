"""Set criterion of mask-classification models (Mask2Former), with COMBO's temporal term.

Losses per prediction level (the final one and each auxiliary one, suffix ``_i`` for
``aux_outputs[i]``), after Hungarian matching (:class:`~.matcher.HungarianMatcher`) of that
level's queries to the targets:

- ``loss_ce``: cross-entropy over K+1 classes, unmatched queries labelled "no object" (index K),
  whose class weight is ``no_object_weight``;
- ``loss_mask`` / ``loss_dice``: BCE and dice of each matched mask on points chosen by PointRend
  importance sampling (:mod:`.point_losses`), summed and divided by the number of target
  instances in the batch;

plus ``loss_cosine_i`` (:mod:`.temporal_consistency`) for each of the decoder's intermediate
mask predictions (``intermediate_mask_logits[i]``). Frames are the batch (dim 0). Only the
frames named by ``supervised_frames`` take part in the matched losses; the temporal term uses
every frame.
"""

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils.comm import get_world_size
from torch import nn

from .matcher import HungarianMatcher
from .point_losses import (
    point_dice_loss,
    point_sigmoid_ce_loss,
    sample_at_points,
    sample_uncertain_points,
)
from .temporal_consistency import temporal_consistency_loss

__all__ = ["SetCriterion", "mask_classification_weight_dict"]


def mask_classification_weight_dict(
    *,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    cosine_weight: float = 10.0,
    num_aux_outputs: int = 9,
) -> dict[str, float]:
    """Weight of every loss the criterion can return: ``loss_{ce,mask,dice,cosine}`` and the same
    names with suffixes ``_0 .. _{num_aux_outputs - 1}`` (one weight per term, whatever the level).
    """
    base = {
        "loss_ce": class_weight,
        "loss_mask": mask_weight,
        "loss_dice": dice_weight,
        "loss_cosine": cosine_weight,
    }
    weights = dict(base)
    for i in range(num_aux_outputs):
        weights.update({f"{name}_{i}": w for name, w in base.items()})
    return weights


class SetCriterion(nn.Module):
    """Matched classification and point-sampled mask losses, plus the temporal-consistency term.

    Args:
        num_classes: K, without "no object".
        matcher: defaults to a :class:`HungarianMatcher` with costs ``class_weight``,
            ``mask_weight``, ``dice_weight`` and ``num_points``.
        class_weight, mask_weight, dice_weight, cosine_weight: loss weights (also the matching
            costs), see :func:`mask_classification_weight_dict`.
        no_object_weight: cross-entropy weight of the "no object" class.
        num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
        num_aux_outputs: auxiliary prediction levels the weight dict knows (decoder layers).
        temporal_group_size: the temporal term groups frames in consecutive runs of this many,
            whatever the clips are (COMBO hard-codes 5, also for 10-frame AVSS clips).
        temporal_groups_by_clip: group by the real clips instead; ``forward`` then needs
            ``clip_lengths``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        matcher: nn.Module | None = None,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        cosine_weight: float = 10.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        num_aux_outputs: int = 9,
        temporal_group_size: int = 5,
        temporal_groups_by_clip: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(
            cost_class=class_weight,
            cost_mask=mask_weight,
            cost_dice=dice_weight,
            num_points=num_points,
        )
        self.weight_dict = mask_classification_weight_dict(
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            cosine_weight=cosine_weight,
            num_aux_outputs=num_aux_outputs,
        )
        self.no_object_weight = no_object_weight
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.temporal_group_size = temporal_group_size
        self.temporal_groups_by_clip = temporal_groups_by_clip

    def forward(
        self,
        outputs: dict,
        targets: list[dict],
        supervised_frames: torch.Tensor | Sequence[int] | None = None,
        clip_lengths: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses (weight them with :meth:`weighted`).

        Args:
            outputs: ``pred_logits`` ``[N, Q, K+1]``, ``pred_masks`` ``[N, Q, h, w]``, optional
                ``aux_outputs`` (list of dicts with the same two keys) and
                ``intermediate_mask_logits`` (list of ``[N, Q, h*w]``). Not modified.
            targets: one dict per supervised frame, in frame order: ``labels`` ``[n]`` int64,
                ``masks`` ``[n, H, W]``.
            supervised_frames: the frames ``targets`` belong to: a bool mask ``[N]`` or frame
                indices (e.g. every clip's first frame for S4 training, the ground-truth flags
                for AVSS). ``None``: every frame.
            clip_lengths: frames per clip, in order; needed with ``temporal_groups_by_clip``.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice``, their ``_i`` copies for ``aux_outputs[i]``,
            and ``loss_cosine_i`` for ``intermediate_mask_logits[i]``.
        """
        frames = self._frame_indices(outputs["pred_logits"], targets, supervised_frames)
        levels = [outputs, *outputs.get("aux_outputs", [])]
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)

        losses = {}
        for level, prediction in enumerate(levels):
            pred_logits = prediction["pred_logits"].index_select(0, frames)
            pred_masks = prediction["pred_masks"].index_select(0, frames)
            indices = self.matcher({"pred_logits": pred_logits, "pred_masks": pred_masks}, targets)
            suffix = "" if level == 0 else f"_{level - 1}"
            losses["loss_ce" + suffix] = self.loss_labels(pred_logits, targets, indices)
            loss_mask, loss_dice = self.loss_masks(pred_masks, targets, indices, num_masks)
            losses["loss_mask" + suffix] = loss_mask
            losses["loss_dice" + suffix] = loss_dice

        for i, mask_logits in enumerate(outputs.get("intermediate_mask_logits", [])):
            groups = self._temporal_groups(mask_logits.shape[0], clip_lengths)
            losses[f"loss_cosine_{i}"] = temporal_consistency_loss(mask_logits, groups)
        return losses

    def weighted(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss times its weight; a loss without a weight is an error (a silently dropped
        term would change training without notice)."""
        unknown = sorted(set(losses) - set(self.weight_dict))
        if unknown:
            raise KeyError(
                f"SetCriterion: no weight for loss(es) {unknown}; the weight dict knows "
                f"{len(self.weight_dict)} names (num_aux_outputs too small?)"
            )
        return {name: value * self.weight_dict[name] for name, value in losses.items()}

    def loss_labels(self, pred_logits, targets, indices) -> torch.Tensor:
        """Weighted cross-entropy of ``pred_logits`` ``[n_frames, Q, K+1]`` (mean over queries,
        divided by the sum of their class weights)."""
        logits = pred_logits.float()
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        frame_idx, query_idx = self._matched_queries(indices, logits.device)
        matched_labels = [
            t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices)
        ]
        target_classes[frame_idx, query_idx] = torch.cat(matched_labels).to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)

    def loss_masks(self, pred_masks, targets, indices, num_masks):
        """``(loss_mask, loss_dice)`` of the matched masks of ``pred_masks`` ``[n_frames, Q, h, w]``
        at ``num_points`` importance-sampled points each."""
        frame_idx, query_idx = self._matched_queries(indices, pred_masks.device)
        src_masks = pred_masks[frame_idx, query_idx]
        target_masks = self._matched_target_masks(targets, indices).to(src_masks)
        point_coords = sample_uncertain_points(
            src_masks[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio
        )
        with torch.no_grad():
            point_labels = sample_at_points(target_masks, point_coords)
        point_logits = sample_at_points(src_masks, point_coords)
        return (
            point_sigmoid_ce_loss(point_logits, point_labels, num_masks),
            point_dice_loss(point_logits, point_labels, num_masks),
        )

    @staticmethod
    def _matched_queries(indices, device):
        frame_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return frame_idx.to(device), query_idx.to(device)

    @staticmethod
    def _matched_target_masks(targets, indices) -> torch.Tensor:
        """``[M, H, W]`` matched target masks, zero-padded at the bottom/right to the largest
        target size of the batch (point coordinates are relative to that padded frame)."""
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        matched = []
        for target, (_, tgt) in zip(targets, indices):
            masks = target["masks"][tgt.to(target["masks"].device)]
            pad = (0, width - masks.shape[-1], 0, height - masks.shape[-2])
            matched.append(F.pad(masks.float(), pad))
        return torch.cat(matched)

    def _frame_indices(self, pred_logits, targets, supervised_frames) -> torch.Tensor:
        num_frames, device = pred_logits.shape[0], pred_logits.device
        if supervised_frames is None:
            frames = torch.arange(num_frames, device=device)
        else:
            frames = torch.as_tensor(supervised_frames, device=device)
            if frames.numel() == 0 and frames.dim() == 1:  # torch.as_tensor([]) is float
                frames = frames.long()
            if frames.dtype == torch.bool:
                if frames.shape != (num_frames,):
                    raise ValueError(
                        f"SetCriterion: supervised_frames mask has shape {tuple(frames.shape)}, "
                        f"expected ({num_frames},)"
                    )
                frames = frames.nonzero().squeeze(1)
            elif frames.is_floating_point() or frames.dim() != 1:
                raise ValueError(
                    "SetCriterion: supervised_frames must be a bool mask [N] or 1-D frame "
                    f"indices, got {frames.dtype} {tuple(frames.shape)}"
                )
            elif len(frames) and (frames.min() < 0 or frames.max() >= num_frames):
                raise ValueError(
                    f"SetCriterion: supervised frame indices {frames.tolist()} out of range for "
                    f"{num_frames} frames"
                )
        if len(frames) == 0:
            raise ValueError("SetCriterion: no supervised frame in the batch (no targets)")
        if len(frames) != len(targets):
            raise ValueError(
                f"SetCriterion: {len(targets)} targets for {len(frames)} supervised frames "
                f"(of {num_frames}); pass supervised_frames naming the frames with ground truth"
            )
        return frames.long()

    @staticmethod
    def _num_masks(targets, device) -> float:
        """Target instances in the batch, averaged over processes, at least 1."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / get_world_size(), min=1).item()

    def _temporal_groups(self, num_frames: int, clip_lengths) -> list[int]:
        if self.temporal_groups_by_clip:
            if clip_lengths is None:
                raise ValueError(
                    "SetCriterion: temporal_groups_by_clip needs clip_lengths in forward()"
                )
            return list(clip_lengths)
        size = self.temporal_group_size
        if num_frames % size:
            raise ValueError(
                f"SetCriterion: {num_frames} frames cannot be split into groups of {size} for the "
                "temporal loss; use temporal_groups_by_clip"
            )
        return [size] * (num_frames // size)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, no_object_weight={self.no_object_weight}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, "
            f"temporal_group_size={self.temporal_group_size}, "
            f"temporal_groups_by_clip={self.temporal_groups_by_clip}"
        )
