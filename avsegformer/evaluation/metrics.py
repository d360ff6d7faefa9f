"""AVSBench metrics as pure functions over tensors, quirks included.

The formulas follow the official AVSBench code (``avs_scripts/*/utils/utility.py`` and
``avss/utils/compute_color_metrics.py``), which AVSegFormer copies unchanged:

* S4/MS3 **J** ("mIoU"): per-frame Jaccard of ``p > 0.5``; a frame with an empty ground truth
  scores the fraction of pixels predicted as background (I = true negatives, U = H·W) and is
  kept in the mean.
* S4/MS3 **F** (β² = 0.3): per-frame precision/recall curves at 255 thresholds, averaged over
  the frames of a *group* of clips (frames with an empty ground truth skipped), max over the
  thresholds; a group without any non-empty frame scores 0; the split value is the mean over
  groups. The group is the original test batch, so the number depends on its size and on the
  clip order (see :func:`grouped_fscore`).
* AVSS: per-frame, per-class IoU and F, summed per class over the frames where the class occurs
  in the prediction or the ground truth, then averaged over **all** classes (a class that never
  occurs counts 0).

Per-frame values are computed in float32 with the reference's operations and epsilons, so they
are bitwise equal to the reference's; sums over a split are taken in float64.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "FSCORE_BETA2",
    "NUM_FSCORE_THRESHOLDS",
    "fscore_thresholds",
    "binary_frame_iou",
    "binary_frame_fscore_curves",
    "binary_miou",
    "group_fscore",
    "grouped_fscore",
    "semantic_frame_stats",
    "semantic_scores",
]

#: β² of the F-measure in every AVSBench protocol (precision weighted more than recall).
FSCORE_BETA2 = 0.3
#: Number of binarisation thresholds of the S4/MS3 F-measure.
NUM_FSCORE_THRESHOLDS = 255
#: Added to the union of the S4/MS3 Jaccard (``mask_iou``'s ``eps``).
BINARY_IOU_EPS = 1e-7
#: Added to the predicted and ground-truth areas of the S4/MS3 F-measure.
BINARY_FSCORE_EPS = 1e-20
#: Added to the per-class union of the AVSS IoU (numpy's float64 machine epsilon).
SEMANTIC_IOU_EPS = 2.220446049250313e-16


def fscore_thresholds(num: int = NUM_FSCORE_THRESHOLDS) -> torch.Tensor:
    """The reference's F-measure thresholds: float32 ``linspace(0, 1 - 1e-10, num)``.

    In float32 ``1 - 1e-10`` rounds to exactly 1.0, so the last threshold only keeps pixels whose
    probability saturated to 1.0; the first one (0) keeps every pixel.

    Returns:
        float32 tensor [num], increasing.
    """
    return torch.linspace(0, 1 - 1e-10, num, dtype=torch.float32)


def _check_binary_inputs(probs: torch.Tensor, gt: torch.Tensor) -> None:
    if probs.dim() != 3 or probs.shape != gt.shape:
        raise ValueError(
            "expected a probability map and a ground truth of the same shape [N, H, W], got "
            f"{tuple(probs.shape)} and {tuple(gt.shape)}"
        )


def binary_frame_iou(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-frame Jaccard of the binary (S4/MS3) protocol.

    The prediction is ``probs > 0.5`` (strictly: the reference thresholds ``sigmoid(logit)``, so a
    logit of exactly 0 is background). A frame whose ground truth is empty scores the fraction of
    its pixels predicted as background (I = true negatives, U = H·W), not NaN and not 1.

    Args:
        probs: foreground probabilities [N, H, W].
        gt: ground truth [N, H, W], non-zero = foreground.

    Returns:
        float32 tensor [N]: I / (U + 1e-7) per frame.
    """
    _check_binary_inputs(probs, gt)
    pred = probs > 0.5
    target = gt != 0
    inter = (pred & target).flatten(1).sum(1)
    union = (pred | target).flatten(1).sum(1)
    empty = ~target.flatten(1).any(1)
    true_negatives = (~pred & ~target).flatten(1).sum(1)
    num_pixels = pred.shape[-1] * pred.shape[-2]
    inter = torch.where(empty, true_negatives, inter).float()
    union = torch.where(empty, torch.full_like(union, num_pixels), union).float()
    return inter / (union + BINARY_IOU_EPS)


def binary_frame_fscore_curves(
    probs: torch.Tensor, gt: torch.Tensor, num_thresholds: int = NUM_FSCORE_THRESHOLDS
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-frame F-measure curves of the binary (S4/MS3) protocol.

    At each threshold θ of :func:`fscore_thresholds` the prediction is ``probs >= θ``;
    P = TP / (#pred + 1e-20), R = TP / (#gt + 1e-20), F = (1 + β²)·P·R / (β²·P + R) with NaN set
    to 0. Frames with an empty ground truth have no curve (the reference skips them).

    The counts come from one bucketing pass per frame instead of 255 comparisons; the comparisons
    are the same float32 ``>=`` the reference makes, so the curves are bitwise the reference's.

    Args:
        probs: foreground probabilities [N, H, W].
        gt: ground truth [N, H, W], non-zero = foreground.
        num_thresholds: number of thresholds (255 in every protocol).

    Returns:
        ``(curves, kept)``: float32 curves [M, num_thresholds] of the M frames with a non-empty
        ground truth, in frame order, and the bool mask [N] of those frames.
    """
    _check_binary_inputs(probs, gt)
    thresholds = fscore_thresholds(num_thresholds)
    target = (gt != 0).flatten(1)
    kept = target.any(1)
    values = probs.float().flatten(1)[kept]
    target = target[kept]
    if values.shape[0] == 0:
        return torch.zeros(0, num_thresholds, dtype=torch.float32), kept
    # Number of thresholds <= p: pixel p is predicted positive at threshold i iff i < that number.
    passed = torch.searchsorted(thresholds, values, right=True)
    frame_offset = torch.arange(values.shape[0]).unsqueeze(1) * (num_thresholds + 1)
    bins = (passed + frame_offset).flatten()
    size = values.shape[0] * (num_thresholds + 1)
    hist_all = torch.bincount(bins, minlength=size).view(-1, num_thresholds + 1)
    hist_tp = torch.bincount(bins[target.flatten()], minlength=size).view(-1, num_thresholds + 1)
    # Pixels positive at threshold i = pixels whose count of passed thresholds is > i.
    num_pred = hist_all.flip(1).cumsum(1).flip(1)[:, 1:].float()
    true_pos = hist_tp.flip(1).cumsum(1).flip(1)[:, 1:].float()
    num_gt = target.sum(1, keepdim=True).float()
    precision = true_pos / (num_pred + BINARY_FSCORE_EPS)
    recall = true_pos / (num_gt + BINARY_FSCORE_EPS)
    curves = (1 + FSCORE_BETA2) * precision * recall / (FSCORE_BETA2 * precision + recall)
    curves[torch.isnan(curves)] = 0
    return curves, kept


def binary_miou(frame_ious: Sequence[float]) -> float:
    """S4/MS3 J over a split: the mean of the per-frame values of :func:`binary_frame_iou`.

    The reference averages per-batch means, which is the same number when every batch holds the
    same number of frames (true of the S4/MS3 test splits with batches of 1, 2 or 4 clips).
    Returns 0.0 for no frame.
    """
    values = np.asarray(frame_ious, dtype=np.float64)
    return float(values.mean()) if values.size else 0.0


def group_fscore(curves: Sequence[torch.Tensor]) -> float:
    """F-measure of one group (one reference test batch) of frames.

    The curves of the group's non-empty frames are summed one frame after the other in float32
    and divided by their number, as the reference does, then maximised over the thresholds. A
    group without any non-empty frame scores 0.0 (and still counts in the split mean).

    Args:
        curves: float32 F curves, each [M_i, T] (M_i may be 0), in frame order.
    """
    total = None
    count = 0
    for block in curves:
        for curve in block:
            total = curve.clone() if total is None else total + curve
            count += 1
    if count == 0:
        return 0.0
    return (total / count).max().item()


def grouped_fscore(curves_per_clip: Sequence[torch.Tensor], group_size: int) -> float:
    """S4/MS3 F-measure over a split: the mean over consecutive groups of ``group_size`` clips.

    ``group_size`` is the reference's test batch in clips: 2 for AVSegFormer, 4 for the official
    AVSBench ``test.sh``, 1 for COMBO. The last group may be shorter, like the last batch.

    Args:
        curves_per_clip: per clip, in dataset order, the F curves [M_i, T] of its non-empty frames.
        group_size: clips per group (>= 1).

    Returns:
        The mean of the group values (0.0 for no clip).
    """
    if group_size < 1:
        raise ValueError(f"the F-score group size must be >= 1, got {group_size}")
    values: List[float] = []
    for start in range(0, len(curves_per_clip), group_size):
        values.append(group_fscore(curves_per_clip[start : start + group_size]))
    # Summed in order as Python floats, like the reference's average meter.
    return sum(values) / len(values) if values else 0.0


def semantic_frame_stats(
    pred_labels: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    ignore_label: int | None = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame, per-class IoU and F of the AVSS protocol.

    Every pixel counts (AVSBench-semantic has no ignore label). For frame f and class c:
    I = |pred = c ∧ gt = c|, U = |pred = c| + |gt = c| − I, IoU = I / (U + 2.22e-16) (0 when
    the class is absent from both), F = (1 + β²)·P·R / (β²·P + R) with P = I/|pred = c|,
    R = I/|gt = c| and NaN set to 0, and the class *occurs* in the frame when U > 0.

    Args:
        pred_labels: predicted class indices [N, H, W] (argmax of the class scores).
        gt_labels: ground-truth class indices [N, H, W].
        num_classes: K.
        ignore_label: ground-truth value whose pixels are left out of every count (AVSBench
            has none; user datasets with index masks may use 255).

    Returns:
        ``(iou, fscore, occurs)``: float32 [N, K], float32 [N, K], bool [N, K].
    """
    if pred_labels.dim() != 3 or pred_labels.shape != gt_labels.shape:
        raise ValueError(
            "expected predicted and ground-truth label maps of the same shape [N, H, W], got "
            f"{tuple(pred_labels.shape)} and {tuple(gt_labels.shape)}"
        )
    counted = None
    if ignore_label is not None:
        counted = (gt_labels != ignore_label).flatten(1)
        gt_labels = torch.where(gt_labels == ignore_label, 0, gt_labels)
    for name, labels in (("predicted", pred_labels), ("ground-truth", gt_labels)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
    num_frames = pred_labels.shape[0]
    pred = pred_labels.long().flatten(1)
    gt = gt_labels.long().flatten(1)
    offset = torch.arange(num_frames).unsqueeze(1) * num_classes
    size = num_frames * num_classes

    def per_frame_histogram(bins: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if counted is not None:
            keep = keep & counted
        return torch.bincount(bins[keep], minlength=size).view(num_frames, num_classes)

    everything = torch.ones_like(pred, dtype=torch.bool)
    area_pred = per_frame_histogram(pred + offset, everything).float()
    area_gt = per_frame_histogram(gt + offset, everything).float()
    area_inter = per_frame_histogram(pred + offset, pred == gt).float()
    area_union = area_pred + area_gt - area_inter
    iou = 1.0 * area_inter / (SEMANTIC_IOU_EPS + area_union)
    precision = area_inter / area_pred
    recall = area_inter / area_gt
    fscore = (1 + FSCORE_BETA2) * precision * recall / (FSCORE_BETA2 * precision + recall)
    fscore[torch.isnan(fscore)] = 0.0
    return iou, fscore, area_union > 0


def semantic_scores(
    iou_sum: Sequence[float], fscore_sum: Sequence[float], occurrences: Sequence[int]
) -> Dict[str, object]:
    """AVSS split scores from the per-class sums of :func:`semantic_frame_stats`.

    Args:
        iou_sum: Σ_f IoU_fc per class [K].
        fscore_sum: Σ_f F_fc per class [K].
        occurrences: n_c, the number of frames where class c occurs, per class [K].

    Returns:
        A dict with:

        * ``mIoU``, ``Fscore``: the official numbers, means over **all** K classes of
          S_c / n_c, a class with n_c = 0 counting 0;
        * ``mIoU_no_background``, ``Fscore_no_background``: the same means without class 0
          (background), the correct "no background" figure;
        * ``mIoU_noBg_official``, ``Fscore_noBg_official``: what the reference logs as "noBg",
          which drops the *last* class (70) instead of background: a bug, kept for comparison;
        * ``per_class_iou``, ``per_class_fscore``: lists [K].
    """
    iou_sum = np.asarray(iou_sum, dtype=np.float64)
    fscore_sum = np.asarray(fscore_sum, dtype=np.float64)
    occurrences = np.asarray(occurrences, dtype=np.float64)
    if iou_sum.size < 2:
        raise ValueError(f"the semantic scores need >= 2 classes, got {iou_sum.size}")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_iou = np.nan_to_num(iou_sum / occurrences, nan=0.0)
        per_class_fscore = np.nan_to_num(fscore_sum / occurrences, nan=0.0)
    return {
        "mIoU": float(per_class_iou.mean()),
        "Fscore": float(per_class_fscore.mean()),
        "mIoU_no_background": float(per_class_iou[1:].mean()),
        "Fscore_no_background": float(per_class_fscore[1:].mean()),
        "mIoU_noBg_official": float(per_class_iou[:-1].mean()),
        "Fscore_noBg_official": float(per_class_fscore[:-1].mean()),
        "per_class_iou": per_class_iou.tolist(),
        "per_class_fscore": per_class_fscore.tolist(),
    }
