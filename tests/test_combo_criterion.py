"""COMBO's Hungarian matcher, set criterion and target conversion against the original's fixtures."""

from unittest import mock

import pytest
import torch
from helpers import load_fixture, read_key_list

from avsegformer.modeling import point_losses
from avsegformer.modeling import set_criterion as set_criterion_module
from avsegformer.modeling.mask_targets import semantic_to_mask_targets
from avsegformer.modeling.matcher import HungarianMatcher
from avsegformer.modeling.set_criterion import SetCriterion, mask_classification_weight_dict
from avsegformer.modeling.temporal_consistency import temporal_consistency_loss

# Suggested tolerances of the fixture README (rtol 1e-4).
COST_ATOL = 2e-5
LOSS_ATOL = {"s4": 4e-6, "ms3": 2e-6, "avss": 9e-6}
TOTAL_ATOL = {"s4": 6e-5, "ms3": 2e-5, "avss": 2e-4}
# The README measures second runs of the reference differing by up to 1.9e-9 in the mask gradient.
GRAD_ATOL = 1e-7


@pytest.fixture(scope="module")
def matcher_fixture():
    return load_fixture("combo/fixtures/matcher.pt")


@pytest.fixture(scope="module")
def criterion_fixture():
    return load_fixture("combo/fixtures/criterion.pt")


def _fixture_matcher(fixture):
    config = fixture["config"]
    return HungarianMatcher(
        cost_class=config["cost_class"],
        cost_mask=config["cost_mask"],
        cost_dice=config["cost_dice"],
        num_points=config["num_points"],
    )


def _fixture_criterion(fixture, case, **overrides):
    config = fixture["config"]
    return SetCriterion(
        case["num_classes"],
        no_object_weight=config["eos_coef"],
        num_points=config["num_points"],
        oversample_ratio=config["oversample_ratio"],
        importance_sample_ratio=config["importance_sample_ratio"],
        num_aux_outputs=len(case["inputs"]["outputs"]["aux_outputs"]),
        **overrides,
    )


def _criterion_inputs(case, name):
    """Decoder outputs under the project's key names (leaf final predictions, for gradients),
    and the supervised frames as the original selects them."""
    raw = case["inputs"]["outputs"]
    outputs = {
        "pred_logits": raw["pred_logits"].clone().requires_grad_(),
        "pred_masks": raw["pred_masks"].clone().requires_grad_(),
        "aux_outputs": [dict(aux) for aux in raw["aux_outputs"]],
        "intermediate_mask_logits": list(raw["middles_attn_mask"]),
    }
    num_frames = case["num_frames_N"]
    if name == "s4":  # the original keeps frames 0, 5, 10, ... when targets are fewer
        supervised = torch.arange(0, num_frames, 5)
    elif name == "avss":
        supervised = case["inputs"]["gt_temporal_mask_flag"] == 1
    else:
        supervised = None
    return outputs, supervised


# ---------------------------------------------------------------------------------- matcher


@pytest.mark.parametrize("name", ["binary", "avss"])
def test_matcher_cost_matrices_at_the_reference_points(matcher_fixture, name):
    case = matcher_fixture["cases"][name]
    matcher = _fixture_matcher(matcher_fixture)
    inputs = case["inputs"]
    for b, target in enumerate(inputs["targets"]):
        cost = matcher.cost_matrix(
            inputs["pred_logits"][b], inputs["pred_masks"][b], target, case["point_coords"][b]
        )
        torch.testing.assert_close(cost, case["cost_matrices"][b], atol=COST_ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", ["binary", "avss"])
def test_matcher_draws_the_reference_points_and_assignment(matcher_fixture, name):
    case = matcher_fixture["cases"][name]
    matcher = _fixture_matcher(matcher_fixture)
    inputs = case["inputs"]
    torch.manual_seed(case["rng"]["seed"])
    with mock.patch.object(matcher, "cost_matrix", wraps=matcher.cost_matrix) as spy:
        indices = matcher(
            {"pred_logits": inputs["pred_logits"], "pred_masks": inputs["pred_masks"]},
            inputs["targets"],
        )
    drawn = [call.args[3] for call in spy.call_args_list]
    assert len(drawn) == len(case["point_coords"])
    for points, expected in zip(drawn, case["point_coords"]):
        torch.testing.assert_close(points, expected, atol=0, rtol=0)
    for (src, tgt), expected in zip(indices, case["indices"]):
        assert src.dtype == tgt.dtype == torch.int64
        assert src.tolist() == expected["src"].tolist()
        assert tgt.tolist() == expected["tgt"].tolist()


def test_matcher_rejects_frame_target_count_mismatch(matcher_fixture):
    inputs = matcher_fixture["cases"]["binary"]["inputs"]
    with pytest.raises(ValueError, match="3 predicted frames but 2 targets"):
        _fixture_matcher(matcher_fixture)(
            {"pred_logits": inputs["pred_logits"], "pred_masks": inputs["pred_masks"]},
            inputs["targets"][:2],
        )


# ---------------------------------------------------------------------------------- targets


@pytest.mark.parametrize("name", ["binary", "avss"])
def test_semantic_targets_match_the_mappers(matcher_fixture, name):
    inputs = matcher_fixture["cases"][name]["inputs"]
    for label_map, expected in zip(inputs["label_maps"], inputs["targets"]):
        target = semantic_to_mask_targets(label_map)
        assert target["labels"].dtype == torch.int64 and target["masks"].dtype == torch.bool
        assert torch.equal(target["labels"], expected["labels"])
        assert torch.equal(target["masks"], expected["masks"])


def test_semantic_targets_skip_ignored_pixels_and_pad():
    label_map = torch.tensor([[0, 3], [255, 3]])
    target = semantic_to_mask_targets(label_map, padded_size=(3, 4))
    assert target["labels"].tolist() == [0, 3]
    assert target["masks"].shape == (2, 3, 4)
    assert target["masks"][:, :2, :2].tolist() == [
        [[True, False], [False, False]],
        [[False, True], [False, True]],
    ]
    assert not target["masks"][:, 2:].any() and not target["masks"][:, :, 2:].any()
    with pytest.raises(ValueError, match="smaller than the label map"):
        semantic_to_mask_targets(label_map, padded_size=(1, 4))
    with pytest.raises(ValueError, match="integer"):
        semantic_to_mask_targets(label_map.float())


# ---------------------------------------------------------------------------------- criterion


def _record_sampled_points(monkeypatch) -> list:
    """Points returned by every importance-sampling call of the criterion, in call order."""
    recorded = []

    def recording(*args, **kwargs):
        points = point_losses.sample_uncertain_points(*args, **kwargs)
        recorded.append(points)
        return points

    monkeypatch.setattr(set_criterion_module, "sample_uncertain_points", recording)
    return recorded


@pytest.mark.parametrize("name", ["s4", "ms3", "avss"])
def test_criterion_reproduces_every_loss_term_points_and_gradients(
    criterion_fixture, monkeypatch, name
):
    case = criterion_fixture["cases"][name]
    criterion = _fixture_criterion(criterion_fixture, case)
    outputs, supervised = _criterion_inputs(case, name)
    sampled = _record_sampled_points(monkeypatch)

    torch.manual_seed(case["rng"]["seed"])
    losses = criterion(outputs, case["inputs"]["targets"], supervised_frames=supervised)

    assert sorted(losses) == sorted(case["losses"])
    for key, expected in case["losses"].items():
        torch.testing.assert_close(losses[key], expected, atol=LOSS_ATOL[name], rtol=1e-4)
    assert len(sampled) == len(case["loss_point_coords"])
    for points, expected in zip(sampled, case["loss_point_coords"]):
        torch.testing.assert_close(points, expected, atol=0, rtol=0)

    total = sum(criterion.weighted(losses).values())
    torch.testing.assert_close(total, case["total_weighted"], atol=TOTAL_ATOL[name], rtol=1e-4)
    total.backward()
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(outputs[key].grad, case["grads"][key], atol=GRAD_ATOL, rtol=1e-4)


def test_criterion_leaves_outputs_untouched_and_takes_a_frame_mask(criterion_fixture):
    case = criterion_fixture["cases"]["s4"]
    criterion = _fixture_criterion(criterion_fixture, case)
    outputs, supervised = _criterion_inputs(case, "s4")
    shapes = {k: outputs[k].shape for k in ("pred_logits", "pred_masks")}
    aux_shapes = [aux["pred_masks"].shape for aux in outputs["aux_outputs"]]

    torch.manual_seed(0)
    by_index = criterion(outputs, case["inputs"]["targets"], supervised_frames=supervised)
    mask = torch.zeros(case["num_frames_N"], dtype=torch.bool)
    mask[supervised] = True
    torch.manual_seed(0)
    by_mask = criterion(outputs, case["inputs"]["targets"], supervised_frames=mask)

    assert {k: outputs[k].shape for k in shapes} == shapes
    assert [aux["pred_masks"].shape for aux in outputs["aux_outputs"]] == aux_shapes
    for key in by_index:
        torch.testing.assert_close(by_mask[key], by_index[key], atol=0, rtol=0)


def test_criterion_rejects_unnamed_or_malformed_supervised_frames(criterion_fixture):
    case = criterion_fixture["cases"]["s4"]
    criterion = _fixture_criterion(criterion_fixture, case)
    outputs, _ = _criterion_inputs(case, "s4")
    targets = case["inputs"]["targets"]
    with pytest.raises(ValueError, match="2 targets for 10 supervised frames"):
        criterion(outputs, targets)
    with pytest.raises(ValueError, match="bool mask"):
        criterion(outputs, targets, supervised_frames=torch.tensor([0.0, 5.0]))
    with pytest.raises(ValueError, match="out of range"):
        criterion(outputs, targets, supervised_frames=[0, 10])
    with pytest.raises(ValueError, match="no supervised frame"):
        criterion(outputs, [], supervised_frames=[])
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        criterion(outputs, targets, supervised_frames=torch.ones(5, dtype=torch.bool))


def test_weight_dict_and_weighting_raise_on_unknown_losses(criterion_fixture):
    weights = mask_classification_weight_dict()
    base = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_cosine": 10.0}
    expected = dict(base)
    for i in range(9):
        expected.update({f"{k}_{i}": v for k, v in base.items()})
    assert weights == expected
    assert SetCriterion(2).weight_dict == expected

    case = criterion_fixture["cases"]["ms3"]
    assert _fixture_criterion(criterion_fixture, case).weight_dict == case["weight_dict"]
    too_few_levels = SetCriterion(2, num_aux_outputs=2)
    with pytest.raises(KeyError, match="loss_ce_2"):
        too_few_levels.weighted({"loss_ce": torch.tensor(1.0), "loss_ce_2": torch.tensor(1.0)})
    weighted = too_few_levels.weighted({"loss_dice_1": torch.tensor(0.5)})
    assert weighted == {"loss_dice_1": torch.tensor(2.5)}


# ---------------------------------------------------------------------------- temporal term


def _reference_temporal_loss(mask_logits, clip_lengths):
    """Per clip: mean over consecutive pairs of d*exp(-d), d = 1 - cos; mean over clips."""
    per_clip = []
    for clip in torch.split(mask_logits.flatten(1).double(), clip_lengths):
        d = 1 - torch.cosine_similarity(clip[:-1], clip[1:], dim=1)
        per_clip.append((d * torch.exp(-d)).mean())
    return torch.stack(per_clip).mean().float()


def test_temporal_groups_of_five_and_by_clip(criterion_fixture):
    case = criterion_fixture["cases"]["avss"]  # a 5-frame clip then a 10-frame clip
    middles = case["inputs"]["outputs"]["middles_attn_mask"]
    released = _fixture_criterion(criterion_fixture, case)
    by_clip = _fixture_criterion(criterion_fixture, case, temporal_groups_by_clip=True)
    outputs, supervised = _criterion_inputs(case, "avss")
    targets = case["inputs"]["targets"]
    clip_lengths = [5, 10]
    grouped_in_fives = released(outputs, targets, supervised, clip_lengths=clip_lengths)
    grouped_by_clip = by_clip(outputs, targets, supervised, clip_lengths=clip_lengths)
    for i, mask_logits in enumerate(middles):
        key = f"loss_cosine_{i}"
        torch.testing.assert_close(
            grouped_in_fives[key], _reference_temporal_loss(mask_logits, [5, 5, 5])
        )
        torch.testing.assert_close(
            grouped_by_clip[key], _reference_temporal_loss(mask_logits, clip_lengths)
        )
        assert not torch.allclose(grouped_by_clip[key], grouped_in_fives[key])

    with pytest.raises(ValueError, match="needs clip_lengths"):
        by_clip(outputs, targets, supervised)
    with pytest.raises(ValueError, match="groups of 5"):
        released({**outputs, "intermediate_mask_logits": [middles[0][:12]]}, targets, supervised)


def test_temporal_loss_skips_single_frame_groups_and_keeps_gradient():
    mask_logits = torch.randn(4, 3, 8, requires_grad=True)
    loss = temporal_consistency_loss(mask_logits, [1, 3])
    torch.testing.assert_close(loss, _reference_temporal_loss(mask_logits.detach()[1:], [3]))
    loss.backward()
    assert mask_logits.grad[0].abs().sum() == 0 and mask_logits.grad[1:].abs().sum() > 0
    with pytest.raises(ValueError, match="do not partition"):
        temporal_consistency_loss(mask_logits, [2, 3])


# ------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    ("key_list", "num_classes"), [("COMBO_R50_s4.keys.txt", 2), ("COMBO_PVTV2B5_avss.keys.txt", 71)]
)
def test_state_dict_matches_the_original_criterion_keys(key_list, num_classes):
    prefix = "criterion."
    expected = {
        key[len(prefix) :]: shape
        for key, shape, _ in read_key_list(f"combo/{key_list}")
        if key.startswith(prefix)
    }
    state = SetCriterion(num_classes).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert state["empty_weight"][:-1].eq(1).all() and state["empty_weight"][-1] == 0.1


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matcher_and_criterion_run_on_cuda(matcher_fixture, criterion_fixture):
    device = torch.device("cuda")

    def to_device(obj):
        if torch.is_tensor(obj):
            return obj.to(device)
        if isinstance(obj, dict):
            return {k: to_device(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [to_device(v) for v in obj]
        return obj

    case = matcher_fixture["cases"]["avss"]
    inputs = to_device(case["inputs"])
    matcher = _fixture_matcher(matcher_fixture)
    for b, target in enumerate(inputs["targets"]):
        cost = matcher.cost_matrix(
            inputs["pred_logits"][b],
            inputs["pred_masks"][b],
            target,
            case["point_coords"][b].cuda(),
        )
        torch.testing.assert_close(cost.cpu(), case["cost_matrices"][b], atol=COST_ATOL, rtol=1e-4)

    case = criterion_fixture["cases"]["avss"]
    criterion = _fixture_criterion(criterion_fixture, case).to(device)
    outputs, supervised = _criterion_inputs(case, "avss")
    outputs = to_device({k: v.detach() if torch.is_tensor(v) else v for k, v in outputs.items()})
    outputs["pred_masks"].requires_grad_()
    losses = criterion(outputs, to_device(case["inputs"]["targets"]), supervised.to(device))
    assert sorted(losses) == sorted(case["losses"])
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in losses.values())
    for i in range(3):  # the temporal term draws no random points: same numbers as on CPU
        key = f"loss_cosine_{i}"
        torch.testing.assert_close(losses[key].cpu(), case["losses"][key], atol=1e-5, rtol=1e-4)
    sum(criterion.weighted(losses).values()).backward()
    assert outputs["pred_masks"].grad.device.type == "cuda"
