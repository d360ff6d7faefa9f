"""Per-clip statistics of the AVSBench metrics and their combination over a split.

A clip's statistics are small (per-frame IoUs and F curves, or per-class sums) so they can be
gathered from every process and recombined in dataset order: the split's numbers then do not
depend on the number of processes or on the test batch size.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.masks import IGNORE_LABEL
from . import metrics

__all__ = [
    "binary_clip_stats",
    "binary_results",
    "padded_frame_stats",
    "semantic_clip_stats",
    "semantic_results",
]

#: Binary F-score groupings always reported: COMBO (1 clip), AVSegFormer (2), official (4).
COMPARED_GROUP_SIZES = (1, 2, 4)


def binary_clip_stats(probs: torch.Tensor, gt: torch.Tensor) -> dict[str, Any]:
    """Statistics of one clip's scored frames: ``probs`` float32 [F, H, W] foreground
    probabilities, ``gt`` int64 [F, H, W] in {0, 1}."""
    ious = metrics.binary_frame_iou(probs, gt)
    curves, _ = metrics.binary_frame_fscore_curves(probs, gt)
    return {"frame_ious": ious.numpy(), "fscore_curves": curves.numpy()}


def semantic_clip_stats(
    pred_labels: torch.Tensor, gt: torch.Tensor, num_classes: int, num_padded_frames: int
) -> dict[str, Any]:
    """Per-class sums of one clip's scored frames (``pred_labels``, ``gt``: int64 [F, H, W]),
    with the number of padded frames the clip lacks to reach the dataset's clip length."""
    iou, fscore, occurs = metrics.semantic_frame_stats(
        pred_labels, gt, num_classes, ignore_label=IGNORE_LABEL
    )
    return {
        "iou_sum": iou.double().sum(0).numpy(),
        "fscore_sum": fscore.double().sum(0).numpy(),
        "occurrences": occurs.long().sum(0).numpy(),
        "num_padded_frames": num_padded_frames,
    }


def padded_frame_stats(num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (IoU, F, occurrence) of one padded frame as the official code scores it: its
    logits are zeroed, the argmax is class 0 and the label is 0, a perfect background frame."""
    zeros = torch.zeros(1, 1, 1, dtype=torch.int64)
    iou, fscore, occurs = metrics.semantic_frame_stats(zeros, zeros, num_classes)
    return iou[0].double().numpy(), fscore[0].double().numpy(), occurs[0].long().numpy()


def binary_results(
    clips: Sequence[dict[str, Any]], fscore_group_size: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """S4/MS3 J and F of clips in dataset order; F over groups of ``fscore_group_size`` clips,
    plus ``Fscore_group{1,2,4}`` for comparison. Returns (results, details)."""
    frame_ious = np.concatenate([c["frame_ious"] for c in clips])
    curves = [torch.from_numpy(c["fscore_curves"]) for c in clips]
    results = {
        "mIoU": metrics.binary_miou(frame_ious),
        "Fscore": metrics.grouped_fscore(curves, fscore_group_size),
    }
    for group_size in COMPARED_GROUP_SIZES:
        results[f"Fscore_group{group_size}"] = metrics.grouped_fscore(curves, group_size)
    details = {
        "num_frames": int(frame_ious.size),
        "num_empty_gt_frames": int(frame_ious.size - sum(len(c) for c in curves)),
        "fscore_group_size": fscore_group_size,
    }
    return results, details


def _without_per_class(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if not k.startswith("per_class")}


def semantic_results(
    clips: Sequence[dict[str, Any]], num_classes: int, padded_frames: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """AVSS mIoU and F over all classes, with the padded frames scored as perfect background
    (``padded_frames="official"``) or left out (``"real"``); both variants are in the
    details. Returns (results, details)."""
    iou_sum = np.zeros(num_classes, dtype=np.float64)
    fscore_sum = np.zeros(num_classes, dtype=np.float64)
    occurrences = np.zeros(num_classes, dtype=np.int64)
    for c in clips:
        iou_sum += c["iou_sum"]
        fscore_sum += c["fscore_sum"]
        occurrences += c["occurrences"]
    num_padded = sum(c["num_padded_frames"] for c in clips)
    pad_iou, pad_fscore, pad_occurs = padded_frame_stats(num_classes)
    with_padding = metrics.semantic_scores(
        iou_sum + num_padded * pad_iou,
        fscore_sum + num_padded * pad_fscore,
        occurrences + num_padded * pad_occurs,
    )
    real_only = metrics.semantic_scores(iou_sum, fscore_sum, occurrences)
    chosen = with_padding if padded_frames == "official" else real_only
    details = {
        "num_frames": int(sum(c["num_scored_frames"] for c in clips)),
        "num_padded_frames": int(num_padded),
        "padded_frames": padded_frames,
        "per_class_iou": chosen["per_class_iou"],
        "per_class_fscore": chosen["per_class_fscore"],
        "with_padded_frames": _without_per_class(with_padding),
        "real_frames_only": _without_per_class(real_only),
    }
    return _without_per_class(chosen), details
