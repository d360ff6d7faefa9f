"""AVSBench metric functions against hand-computed cases, one per quirk of the official code."""

import math

import pytest
import torch

from avsegformer.evaluation import metrics


def test_thresholds_are_the_float32_linspace_with_last_equal_to_one():
    thresholds = metrics.fscore_thresholds()
    assert thresholds.dtype == torch.float32 and thresholds.shape == (255,)
    assert thresholds[0].item() == 0.0
    # 1 - 1e-10 is 1.0 in float32: only saturated probabilities pass the last threshold.
    assert thresholds[-1].item() == 1.0
    assert torch.all(thresholds[1:] > thresholds[:-1])


def test_binary_iou_non_empty_frame_uses_strict_half_threshold():
    probs = torch.tensor([[[0.9, 0.6], [0.5, 0.1]]])  # 0.5 is background (strict >)
    gt = torch.tensor([[[1, 0], [0, 0]]])
    iou = metrics.binary_frame_iou(probs, gt)
    assert iou.dtype == torch.float32
    assert iou.item() == pytest.approx(1 / 2, abs=1e-6)


def test_binary_iou_empty_ground_truth_scores_true_negatives_over_all_pixels():
    probs = torch.tensor(
        [
            [[0.9, 0.2], [0.2, 0.2]],  # one false positive -> 3/4
            [[0.1, 0.2], [0.3, 0.4]],  # nothing predicted -> 1, not NaN and not 0
            [[0.9, 0.9], [0.9, 0.9]],  # everything predicted -> 0
        ]
    )
    gt = torch.zeros(3, 2, 2, dtype=torch.int64)
    iou = metrics.binary_frame_iou(probs, gt)
    assert iou.tolist() == pytest.approx([3 / 4, 1.0, 0.0], abs=1e-6)
    # The empty frames stay in the mean.
    assert metrics.binary_miou(iou.tolist()) == pytest.approx((0.75 + 1.0) / 3, abs=1e-6)


def test_binary_iou_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        metrics.binary_frame_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


def _hand_curve(probs, gt):
    """The F curve of one frame with 255 explicit comparisons (reference formula)."""
    values = []
    for theta in metrics.fscore_thresholds():
        pred = (probs >= theta).float()
        tp = (pred * gt).sum()
        precision = tp / (pred.sum() + 1e-20)
        recall = tp / (gt.sum() + 1e-20)
        f = (1 + 0.3) * precision * recall / (0.3 * precision + recall)
        values.append(0.0 if torch.isnan(f) else f.item())
    return torch.tensor(values)


def test_fscore_curve_matches_explicit_threshold_loop_bitwise():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(3, 9, 11, generator=generator)
    probs[0, 0, 0] = 1.0  # saturated probability: passes the last threshold
    probs[1, :2] = 0.0
    gt = (torch.rand(3, 9, 11, generator=generator) > 0.6).float()
    curves, kept = metrics.binary_frame_fscore_curves(probs, gt)
    assert kept.tolist() == [True, True, True]
    for frame in range(3):
        assert torch.equal(curves[frame], _hand_curve(probs[frame], gt[frame]))


def test_fscore_curve_hand_values_and_empty_frames_skipped():
    # gt = 1 pixel of 4; probabilities 0.8 (object), 0.3, 0.3, 0.0.
    probs = torch.tensor([[[0.8, 0.3], [0.3, 0.0]], [[0.9, 0.9], [0.9, 0.9]]])
    gt = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    curves, kept = metrics.binary_frame_fscore_curves(probs, gt)
    assert kept.tolist() == [True, False]
    assert curves.shape == (1, 255)
    theta = metrics.fscore_thresholds()
    curve = curves[0]
    # theta = 0: all 4 pixels positive, P = 1/4, R = 1.
    assert curve[0].item() == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1), rel=1e-6)
    # 0 < theta <= 0.3: P = 1/3.
    low = (theta > 0) & (theta <= 0.3)
    assert torch.allclose(curve[low], torch.tensor(1.3 / 3 / 1.1))
    # 0.3 < theta <= 0.8: exact prediction.
    assert torch.allclose(curve[(theta > 0.3) & (theta <= 0.8)], torch.tensor(1.0))
    # theta > 0.8: nothing predicted, P = R = 0, NaN -> 0.
    assert torch.all(curve[theta > 0.8] == 0)


def _two_clip_curves():
    """Clip A is best at a high threshold, clip B at a low one (one frame each)."""
    a_probs = torch.tensor([[[0.8, 0.3], [0.3, 0.0]]])
    a_gt = torch.tensor([[[1, 0], [0, 0]]])
    b_probs = torch.tensor([[[0.2, 0.2], [0.1, 0.0]]])
    b_gt = torch.tensor([[[1, 1], [0, 0]]])
    a, _ = metrics.binary_frame_fscore_curves(a_probs, a_gt)
    b, _ = metrics.binary_frame_fscore_curves(b_probs, b_gt)
    return a, b


def test_grouped_fscore_takes_the_max_of_the_group_mean_curve():
    a, b = _two_clip_curves()
    # Alone, each clip reaches F = 1 at its own threshold.
    assert metrics.grouped_fscore([a, b], group_size=1) == pytest.approx(1.0)
    # Together no threshold suits both: max over theta of the mean curve is at
    # 0.1 < theta <= 0.2, where A has P = 1/3 (F = 13/33) and B is exact: (1 + 13/33) / 2.
    assert metrics.grouped_fscore([a, b], group_size=2) == pytest.approx(23 / 33, rel=1e-6)


def test_all_empty_group_counts_zero_and_empty_frames_do_not_dilute():
    a, b = _two_clip_curves()
    empty = torch.zeros(0, 255)
    # Group 2 = (empty, empty): 0, and it still counts in the mean.
    assert metrics.grouped_fscore([a, b, empty, empty], group_size=2) == pytest.approx(
        (23 / 33 + 0.0) / 2, rel=1e-6
    )
    # An empty-GT clip inside a group adds no frame to the group mean.
    assert metrics.grouped_fscore([a, empty, b], group_size=3) == pytest.approx(23 / 33, rel=1e-6)
    # The last, shorter group is a group like the others.
    assert metrics.grouped_fscore([a, b, a], group_size=2) == pytest.approx(
        (23 / 33 + 1.0) / 2, rel=1e-6
    )
    assert metrics.grouped_fscore([], group_size=2) == 0.0
    with pytest.raises(ValueError, match=">= 1"):
        metrics.grouped_fscore([a], group_size=0)


def _semantic_case():
    gt = torch.tensor([[[0, 0, 1], [0, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    pred = torch.tensor([[[0, 1, 1], [0, 2, 0]], [[3, 0, 0], [0, 0, 0]]])
    return pred, gt


def test_semantic_frame_stats_hand_values():
    pred, gt = _semantic_case()
    iou, fscore, occurs = metrics.semantic_frame_stats(pred, gt, num_classes=5)
    assert iou.dtype == torch.float32 and iou.shape == (2, 5)
    # Frame 0. class 0: I = 2, |pred| = 3, |gt| = 3; class 1: I = 1, 2, 1; class 2: I = 1, 1, 2.
    assert iou[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.0, 0.0], abs=1e-6)
    f_p_eq_r = 2 / 3
    f_class1 = 1.3 * 0.5 * 1 / (0.3 * 0.5 + 1)
    f_class2 = 1.3 * 1 * 0.5 / (0.3 * 1 + 0.5)
    assert fscore[0].tolist() == pytest.approx([f_p_eq_r, f_class1, f_class2, 0, 0], abs=1e-6)
    assert occurs[0].tolist() == [True, True, True, False, False]
    # Frame 1: a stray pixel of class 3 (absent from the GT) -> IoU 0, F 0, but it occurs.
    assert iou[1].tolist() == pytest.approx([5 / 6, 0, 0, 0, 0], abs=1e-6)
    assert fscore[1, 0].item() == pytest.approx(1.3 * (5 / 6) / (0.3 + 5 / 6), abs=1e-6)
    assert fscore[1, 3].item() == 0.0
    assert occurs[1].tolist() == [True, False, False, True, False]


def test_semantic_scores_average_over_all_classes_absent_ones_count_zero():
    pred, gt = _semantic_case()
    iou, fscore, occurs = metrics.semantic_frame_stats(pred, gt, num_classes=5)
    scores = metrics.semantic_scores(iou.sum(0), fscore.sum(0), occurs.sum(0))
    per_class = [(0.5 + 5 / 6) / 2, 0.5, 0.5, 0.0, 0.0]  # class 4 never occurs: 0/0 -> 0
    assert scores["per_class_iou"] == pytest.approx(per_class, abs=1e-6)
    assert scores["mIoU"] == pytest.approx(sum(per_class) / 5, abs=1e-6)
    assert scores["mIoU_no_background"] == pytest.approx(sum(per_class[1:]) / 4, abs=1e-6)
    # The reference's "noBg" drops the last class, not background.
    assert scores["mIoU_noBg_official"] == pytest.approx(sum(per_class[:-1]) / 4, abs=1e-6)
    assert not any(math.isnan(v) for v in scores["per_class_fscore"])


def test_semantic_padded_frames_are_perfect_background():
    # A padded frame: zero logits -> argmax 0, label 0.
    zeros = torch.zeros(1, 4, 4, dtype=torch.int64)
    iou, fscore, occurs = metrics.semantic_frame_stats(zeros, zeros, num_classes=3)
    assert iou[0].tolist() == [1.0, 0.0, 0.0]
    assert fscore[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert occurs[0].tolist() == [True, False, False]


def test_semantic_stats_reject_out_of_range_labels():
    labels = torch.tensor([[[0, 5]]])
    with pytest.raises(ValueError, match="ground-truth labels must lie in"):
        metrics.semantic_frame_stats(torch.zeros_like(labels), labels, num_classes=3)


def test_semantic_ignore_label_pixels_are_left_out():
    pred, gt = _semantic_case()
    ignored_gt = gt.clone()
    ignored_gt[0, 0, 1] = 255  # was background, predicted class 1
    iou, _, _ = metrics.semantic_frame_stats(pred, ignored_gt, num_classes=5, ignore_label=255)
    # class 0: I = 2, |pred| = 3, |gt| = 2 (the ignored pixel leaves the GT count) -> 2/3;
    # class 1: the ignored pixel was its false positive: I = 1, |pred| = 1, |gt| = 1 -> 1.
    assert iou[0, :3].tolist() == pytest.approx([2 / 3, 1.0, 0.5], abs=1e-6)
