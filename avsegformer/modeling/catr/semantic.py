"""CATR with a class head (AVSBench-semantic): designed here, not from the released code.

The released CATR finds one sounding object per clip: a 2-way "referred / not referred" head,
one target trajectory per clip, one query selected per frame. For K classes the same parts are
generalised the way Mask2Former classifies masks, keeping CATR's clip-level queries:

* the head gives ``K + 1`` logits per query (the released one is the case K = 1: class 0 =
  the object, the last class = "no object");
* each clip has one target per class present in its supervised frames, a class *trajectory*
  (its mask on every supervised frame, empty where the class is absent), matched to one query
  of the clip for all its frames (:class:`ClassTrajectoryMatcher`, the released matcher's cost
  with the class probability in place of the "referred" one);
* the loss (:class:`SemanticSetCriterion`) is the released one with a (K + 1)-way
  cross-entropy: matched queries learn their target's class, the others "no object" with
  weight ``eos_coef``; focal, dice and "BCE" on the matched masks;
* inference combines every query's class probabilities and mask (Mask2Former's semantic
  inference) instead of selecting one query per frame.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..mask_classification import class_probabilities, semantic_inference
from .criterion import CATRLayerwiseCriterion

__all__ = [
    "ClassTrajectoryMatcher",
    "SemanticSetCriterion",
    "class_trajectory_targets",
    "semantic_clip_probabilities",
]


def class_trajectory_targets(
    labels: torch.Tensor, supervised: torch.Tensor, ignore_label: int = 255
) -> list[dict]:
    """One target per class present in a clip's supervised frames.

    Args:
        labels: ``[T, B, H, W]`` int64 label maps.
        supervised: ``[T, B]`` bool, the frames the loss sees.
        ignore_label: label of unannotated pixels (no class, no loss).

    Returns:
        B dicts: ``"frames"`` ``[T']`` int64 supervised frame indices, ``"labels"`` ``[n]``
        int64 ascending class ids, ``"masks"`` ``[T', n, H, W]`` float in {0, 1}, ``"valid"``
        ``[T', H, W]`` float, 1 where annotated.
    """
    targets = []
    for b in range(labels.shape[1]):
        frames = supervised[:, b].nonzero().squeeze(1)
        clip = labels[frames, b]
        classes = torch.unique(clip)
        classes = classes[classes != ignore_label]
        targets.append(
            {
                "frames": frames,
                "labels": classes,
                "masks": (clip[:, None] == classes[None, :, None, None]).float(),
                "valid": (clip != ignore_label).float(),
            }
        )
    return targets


def _upsampled(pred_masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[..., h, w]`` mask logits bilinearly resized to ``size`` (float32)."""
    lead = pred_masks.shape[:-2]
    masks = F.interpolate(
        pred_masks.flatten(0, -3)[:, None].float(),
        size=tuple(size),
        mode="bilinear",
        align_corners=False,
    )
    return masks.view(*lead, *masks.shape[-2:])


class ClassTrajectoryMatcher(nn.Module):
    """Hungarian matching of each clip's class trajectories to its queries.

    Cost of query q for target j of the same clip, averaged over the clip's supervised frames:
    ``cost_class * -softmax(logits_q)[label_j] + cost_dice * -dice(sigmoid(mask_q), mask_j)``,
    masks bilinearly upsampled to the target size, dice smoothed by 1 (the released matcher's
    terms, with the class probability in place of the "referred" one).
    """

    def __init__(self, cost_class: float = 2.0, cost_dice: float = 7.0):
        super().__init__()
        if cost_class == 0 and cost_dice == 0:
            raise ValueError("ClassTrajectoryMatcher: both cost weights are 0")
        self.cost_class = cost_class
        self.cost_dice = cost_dice

    @torch.no_grad()
    def cost_matrix(
        self, pred_masks: torch.Tensor, pred_logits: torch.Tensor, target: dict
    ) -> torch.Tensor:
        """``[Q, n]`` cost of one clip.

        Args:
            pred_masks: ``[T', Q, h, w]`` logits on the clip's supervised frames.
            pred_logits: ``[T', Q, K + 1]``.
            target: one dict of :func:`class_trajectory_targets`.
        """
        probs = pred_logits.float().softmax(-1)[..., target["labels"]].mean(0)  # [Q, n]
        masks = _upsampled(pred_masks, target["masks"].shape[-2:]).sigmoid().flatten(2)
        truth = target["masks"].to(masks).flatten(2)  # [T', n, P]
        numerator = 2 * torch.einsum("tqp,tnp->tqn", masks, truth)
        denominator = masks.sum(-1)[:, :, None] + truth.sum(-1)[:, None, :]
        dice = ((numerator + 1) / (denominator + 1)).mean(0)
        return -self.cost_class * probs - self.cost_dice * dice

    @torch.no_grad()
    def forward(self, pred_masks, pred_logits, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every clip.

        Args:
            pred_masks: ``[T, B, Q, h, w]`` logits.
            pred_logits: ``[T, B, Q, K + 1]``.
            targets: B dicts of :func:`class_trajectory_targets`.

        Returns:
            B pairs ``(query_indices, target_indices)`` (int64, CPU), ``min(Q, n)`` long.
        """
        indices = []
        for b, target in enumerate(targets):
            frames = target["frames"]
            cost = self.cost_matrix(pred_masks[frames, b], pred_logits[frames, b], target)
            rows, cols = linear_sum_assignment(cost.cpu())
            indices.append((torch.as_tensor(rows), torch.as_tensor(cols)))
        return indices

    def extra_repr(self) -> str:
        return f"cost_class={self.cost_class}, cost_dice={self.cost_dice}"


class SemanticSetCriterion(CATRLayerwiseCriterion):
    """The released CATR loss with a (K + 1)-way class term, per decoder layer (auxiliary layers
    get ``_0``, ``_1``, ... in layer order):

    * ``loss_class``: cross-entropy over the K + 1 classes on every supervised frame; a matched
      query's target is its trajectory's class, every other query's "no object" (the last class)
      with weight ``eos_coef``; summed, divided by the number of supervised (frame, clip) pairs;
    * ``loss_sigmoid_focal``, ``loss_dice``, ``bce_loss``: on every (frame, matched query)
      pair, the mask bilinearly upsampled to the target size, unannotated pixels left out of
      focal and "BCE"; focal and dice divided by the number of such pairs.
    """

    class_loss_name = "loss_class"
    logits_key = "pred_logits"

    def __init__(self, matcher: ClassTrajectoryMatcher, *, num_classes: int, **weights):
        """``weights``: those of :class:`CATRLayerwiseCriterion`. The model outputs carry
        ``pred_logits`` ``[T, B, Q, K + 1]``; the targets are B dicts of
        :func:`class_trajectory_targets`."""
        super().__init__(matcher, **weights)
        self.num_classes = num_classes

    def layer_losses(self, pred_masks, pred_logits, targets) -> dict[str, torch.Tensor]:
        """The four losses of one decoder layer (shapes as in :meth:`forward`)."""
        if pred_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"SemanticSetCriterion: {pred_logits.shape[-1]} class logits for "
                f"{self.num_classes} classes + no object"
            )
        indices = self.matcher(pred_masks, pred_logits, targets)
        class_terms, masks, truths, valids = [], [], [], []
        num_pairs = 0
        for b, (target, (queries, columns)) in enumerate(zip(targets, indices)):
            frames = target["frames"]
            num_pairs += len(frames)
            logits = pred_logits[frames, b].float()  # [T', Q, K + 1]
            classes = torch.full(logits.shape[:2], self.num_classes, device=logits.device)
            queries, columns = queries.to(logits.device), columns.to(logits.device)
            classes[:, queries] = target["labels"][columns]
            weights = torch.full(logits.shape[:2], self.eos_coef, device=logits.device)
            weights[:, queries] = 1.0
            nll = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), reduction="none")
            class_terms.append((nll * weights.flatten()).sum())
            masks.append(pred_masks[frames, b][:, queries].flatten(0, 1))
            truths.append(target["masks"][:, columns].flatten(0, 1))
            valids.append(target["valid"][:, None].expand(-1, len(columns), -1, -1).flatten(0, 1))
        loss_class = torch.stack(class_terms).sum() / max(num_pairs, 1)
        truth = torch.cat(truths)
        mask = _upsampled(torch.cat(masks), truth.shape[-2:])
        valid = torch.cat(valids).to(mask)
        num_masks = max(float(mask.shape[0]), 1.0)
        flat_mask, flat_truth = mask.flatten(1), truth.to(mask).flatten(1)
        # Unannotated pixels count neither as object nor as background.
        ignored = valid.flatten(1) == 0
        flat_mask = flat_mask.masked_fill(ignored, -1e4)
        flat_truth = flat_truth.masked_fill(ignored, 0.0)
        return {
            "loss_class": loss_class,
            **self.mask_losses(
                flat_mask, flat_truth, num_masks, flat_mask[~ignored], flat_truth[~ignored]
            ),
        }

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, " + super().extra_repr()


def semantic_clip_probabilities(
    pred_masks: torch.Tensor, pred_logits: torch.Tensor, size: Sequence[int]
) -> torch.Tensor:
    """One clip's class probabilities by Mask2Former's semantic inference.

    Args:
        pred_masks: ``[T, Q, h, w]`` mask logits of one clip.
        pred_logits: ``[T, Q, K + 1]`` class logits, the last class "no object".
        size: ``(height, width)`` of the output.

    Returns:
        ``[T, K, height, width]``: softmax over K of ``sum_q p(k | q) sigmoid(mask_q)``, the
        masks bilinearly upsampled first.
    """
    masks = _upsampled(pred_masks, size)
    return class_probabilities(semantic_inference(pred_logits.float(), masks))
