"""CATR beyond the release: the class head, class-trajectory matching, the semantic loss and
inference (AVSS), all-frame supervision (MS3), the R50 variant and the task configs."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from helpers import load_config, tiny_catr_cfg

from avsegformer.modeling.catr.semantic import (
    ClassTrajectoryMatcher,
    SemanticSetCriterion,
    class_trajectory_targets,
    semantic_clip_probabilities,
)

IGNORE = 255


def labels_with_two_classes(t=3, b=1, size=8):
    """``[T, B, H, W]``: class 2 in the top half, class 5 in the bottom-left quarter, 0 else."""
    labels = torch.zeros(t, b, size, size, dtype=torch.long)
    labels[:, :, : size // 2] = 2
    labels[:, :, size // 2 :, : size // 2] = 5
    return labels


def test_class_trajectories_follow_each_clips_supervised_frames():
    labels = labels_with_two_classes(t=3, b=2)
    labels[2, 0] = 7  # class 7 only on frame 2 of clip 0
    labels[1, 1] = IGNORE  # clip 1, frame 1 not annotated
    supervised = torch.tensor([[True, True], [True, False], [True, True]])
    first, second = class_trajectory_targets(labels, supervised, IGNORE)
    assert first["frames"].tolist() == [0, 1, 2] and second["frames"].tolist() == [0, 2]
    assert first["labels"].tolist() == [0, 2, 5, 7] and second["labels"].tolist() == [0, 2, 5]
    # Class 7's trajectory is empty on frames 0 and 1 and full on frame 2.
    assert first["masks"].shape == (3, 4, 8, 8)
    assert first["masks"][:, 3].flatten(1).sum(1).tolist() == [0, 0, 64]
    assert torch.equal(first["masks"].sum(1), torch.ones(3, 8, 8))
    assert bool((first["valid"] == 1).all())


def perfect_predictions(targets, t, b, q, num_classes, order):
    """Logits and masks where query ``order[j]`` predicts target j of every clip exactly."""
    masks = torch.full((t, b, q, 8, 8), -20.0)
    logits = torch.zeros(t, b, q, num_classes + 1)
    logits[..., num_classes] = 10.0  # "no object" for the other queries
    for i, target in enumerate(targets):
        for j, label in enumerate(target["labels"].tolist()):
            masks[target["frames"], i, order[j]] = target["masks"][:, j] * 40 - 20
            logits[:, i, order[j], label] = 20.0
    return masks, logits


def test_matcher_finds_the_query_of_each_class_trajectory():
    labels = labels_with_two_classes(t=3, b=2)
    targets = class_trajectory_targets(labels, torch.ones(3, 2, dtype=torch.bool), IGNORE)
    order = [4, 0, 2]
    masks, logits = perfect_predictions(targets, 3, 2, 6, num_classes=6, order=order)
    for queries, columns in ClassTrajectoryMatcher()(masks, logits, targets):
        assert {int(q): int(c) for q, c in zip(queries, columns)} == {4: 0, 0: 1, 2: 2}


def test_matching_ignores_frames_the_clip_does_not_supervise():
    labels = labels_with_two_classes(t=2, b=1)
    supervised = torch.tensor([[True], [False]])
    targets = class_trajectory_targets(labels, supervised, IGNORE)
    masks, logits = perfect_predictions(targets, 2, 1, 4, num_classes=6, order=[1, 2, 3])
    masks[1] = -masks[1]  # frame 1 predicts the opposite: no effect, it is not supervised
    ((queries, columns),) = ClassTrajectoryMatcher()(masks, logits, targets)
    assert dict(zip(queries.tolist(), columns.tolist())) == {1: 0, 2: 1, 3: 2}


def criterion(num_classes=6, **kwargs):
    return SemanticSetCriterion(
        ClassTrajectoryMatcher(), num_classes=num_classes, num_aux_layers=1, **kwargs
    )


def test_loss_is_low_for_the_right_answer_and_learns_classes_and_masks():
    labels = labels_with_two_classes(t=2, b=2)
    targets = class_trajectory_targets(labels, torch.ones(2, 2, dtype=torch.bool), IGNORE)
    masks, logits = perfect_predictions(targets, 2, 2, 5, num_classes=6, order=[3, 1, 0])
    good = criterion(bce_weight=0.0, double_sigmoid_bce=False)(
        {"pred_masks": masks, "pred_logits": logits}, targets
    )
    assert set(good) == {"loss_class", "loss_sigmoid_focal", "loss_dice", "bce_loss"}
    assert good["loss_class"] < 1e-3 and good["loss_dice"] < 1e-3
    assert good["loss_sigmoid_focal"] < 1e-6 and good["bce_loss"] < 1e-6

    wrong_class = logits.clone()
    wrong_class[..., 2], wrong_class[..., 5] = logits[..., 5], logits[..., 2]
    swapped = criterion()({"pred_masks": masks, "pred_logits": wrong_class}, targets)
    assert swapped["loss_class"] > 1.0

    zero_masks = torch.zeros_like(masks, requires_grad=True)
    zero_logits = torch.zeros_like(logits, requires_grad=True)
    outputs = {"pred_masks": zero_masks, "pred_logits": zero_logits}
    outputs["aux_outputs"] = [dict(outputs)]
    c = criterion()
    losses = c(outputs, targets)
    assert set(losses) == set(c.weight_dict) and len(losses) == 8
    sum(c.weighted(losses).values()).backward()
    assert zero_masks.grad.abs().sum() > 0 and zero_logits.grad.abs().sum() > 0
    # The no-object class gets a gradient from the unmatched queries.
    assert zero_logits.grad[..., -1].abs().sum() > 0


def test_unannotated_pixels_and_unsupervised_frames_get_no_gradient():
    labels = labels_with_two_classes(t=2, b=1)
    labels[0, 0, :, -2:] = IGNORE
    supervised = torch.tensor([[True], [False]])
    targets = class_trajectory_targets(labels, supervised, IGNORE)
    masks = torch.zeros(2, 1, 4, 8, 8, requires_grad=True)
    logits = torch.zeros(2, 1, 4, 7, requires_grad=True)
    c = criterion()
    sum(c.weighted(c({"pred_masks": masks, "pred_logits": logits}, targets)).values()).backward()
    assert masks.grad[1].abs().sum() == 0 and logits.grad[1].abs().sum() == 0
    assert masks.grad[0, 0, :, :, -2:].abs().sum() == 0
    assert masks.grad[0, 0, :, :, :-2].abs().sum() > 0


def test_semantic_inference_is_mask2formers_over_upsampled_masks():
    masks = torch.randn(3, 4, 5, 5)
    logits = torch.randn(3, 4, 8)
    probs = semantic_clip_probabilities(masks, logits, (10, 12))
    assert probs.shape == (3, 7, 10, 12)
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 10, 12))
    up = F.interpolate(masks, size=(10, 12), mode="bilinear", align_corners=False)
    scores = torch.einsum("tqk,tqhw->tkhw", logits.softmax(-1)[..., :-1], up.sigmoid())
    torch.testing.assert_close(probs, scores.softmax(1))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
def make_clip(seed, frames=5, classes=1, annotated=None, valid=None, size=32):
    g = torch.Generator().manual_seed(seed)
    clip = {
        "frames": torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g),
        "log_mel": torch.randn(frames, 96, 64, generator=g),
        "video_id": f"clip{seed}",
    }
    labels = torch.randint(0, max(classes, 2), (frames, size, size), generator=g)
    for t in range(frames):
        if annotated is not None and t not in annotated:
            labels[t] = IGNORE
    clip["sem_seg"] = labels
    if valid is not None:
        clip["frame_valid"] = torch.tensor(valid)
    return clip


def tiny_model(num_frames=5, *opts, seed=0):
    cfg = tiny_catr_cfg(num_frames)
    cfg.merge_from_list(list(opts))
    torch.manual_seed(seed)
    return build_model(cfg)


def test_avss_model_trains_on_ten_frame_clips_with_padding_and_outputs_classes():
    model = tiny_model(
        10, "MODEL.CATR.NUM_CLASSES", 71, "MODEL.CATR.SUPERVISED_FRAMES", "annotated"
    )
    assert model.is_referred_head.out_features == 72
    model.train()
    v1 = make_clip(1, frames=10, classes=71, annotated=range(5), valid=[True] * 5 + [False] * 5)
    v2 = make_clip(2, frames=10, classes=71)
    losses = model([v1, v2])
    assert len(losses) == 12 and {"loss_class", "loss_class_0", "loss_class_1"} <= set(losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.is_referred_head.weight.grad.abs().sum() > 0

    model.eval()
    v2["height"], v2["width"] = 40, 48
    with torch.no_grad():
        outputs = model([v1, v2])
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(10, 71, 32, 32), (10, 71, 40, 48)]
    torch.testing.assert_close(outputs[0]["sem_seg"].sum(1), torch.ones(10, 32, 32))


def test_ms3_supervises_every_annotated_frame():
    model = tiny_model(5, "MODEL.CATR.SUPERVISED_FRAMES", "annotated").train()
    clips = [make_clip(3), make_clip(4)]
    torch.manual_seed(0)
    before = model(clips)
    clips[1]["sem_seg"][3] = 1 - clips[1]["sem_seg"][3]  # only frame 3 changes
    torch.manual_seed(0)
    after = model(clips)
    assert before["loss_dice"] != after["loss_dice"]
    first = tiny_model(5).train()  # the released S4 supervision: frame 0 only
    clips = [make_clip(3), make_clip(4)]
    torch.manual_seed(0)
    before = first(clips)
    clips[1]["sem_seg"][3] = 1 - clips[1]["sem_seg"][3]
    torch.manual_seed(0)
    assert first(clips)["loss_dice"] == before["loss_dice"]


@pytest.mark.parametrize("task", ["s4", "ms3", "avss"])
def test_task_configs(task):
    pvt, r50 = load_config(f"{task}/catr_pvtv2_b5.yaml"), load_config(f"{task}/catr_R50.yaml")
    for cfg in (pvt, r50):
        c = cfg.MODEL.CATR
        assert cfg.MODEL.META_ARCHITECTURE == "CATR"
        assert ((10, 71) if task == "avss" else (5, 1)) == (c.NUM_FRAMES, c.NUM_CLASSES)
        assert ("first" if task == "s4" else "annotated") == c.SUPERVISED_FRAMES
        assert tuple(c.INPUT_SIZE) == (448, 448)
        assert (f"avsbench_{task}_train",) == cfg.DATASETS.TRAIN
    assert pvt.MODEL.BACKBONE.NAME == "build_pvt_v2_backbone"
    assert r50.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert (r50.MODEL.RESNETS.DEPTH, r50.MODEL.RESNETS.NORM) == (50, "BN")
    assert r50.MODEL.WEIGHTS == "pretrained/R-50.pth"


def test_r50_variant_projects_resnet_stages_into_the_same_projections():
    cfg = load_config("s4/catr_R50.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.AUDIO.NAME", "TinyAudioBackbone"])
    cfg.MODEL.CATR.INPUT_SIZE = (64, 64)
    model = build_model(cfg).eval()
    assert model.in_features == ["res3", "res4", "res5"]
    channels = [conv.conv2d_list[0].in_channels for conv in (model.conv2, model.conv3, model.conv4)]
    assert channels == [512, 1024, 2048]
    assert model.backbone.stem.conv1.weight.shape == (64, 3, 7, 7)
    with torch.no_grad():
        (out,) = model([make_clip(5)])
    assert out["sem_seg"].shape == (5, 1, 32, 32)
