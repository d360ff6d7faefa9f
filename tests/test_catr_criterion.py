"""CATR's matcher and set criterion against the released S4 loss (losses.pt): values, matching,
cost terms and gradients, with train.py's frame-0 selection."""

import pytest
import torch
from helpers import load_fixture

from avsegformer.modeling.catr import ReferredQueryMatcher, ReferredSetCriterion, mask_bce_loss

RTOL = 1e-4


@pytest.fixture(scope="module")
def losses_fixture():
    return load_fixture("catr/fixtures/losses.pt")


def _criterion(config, **kwargs):
    w = config["weight_dict"]
    return ReferredSetCriterion(
        ReferredQueryMatcher(config["cost_is_referred"], config["cost_dice"]),
        eos_coef=config["eos_coef"],
        class_weight=w["loss_is_referred"],
        focal_weight=w["loss_sigmoid_focal"],
        dice_weight=w["loss_dice"],
        bce_weight=w["bce_loss"],
        num_aux_layers=2,
        **kwargs,
    )


def _outputs(case):
    """Leaf copies of the full [T, ...] outputs and their frame-0 selection (train.py keeps
    frame 0 of the last layer, the released criterion frame 0 of the auxiliary ones)."""
    f = case["model_outputs"]
    leaves = {
        "pred_masks": f["pred_masks"].clone().requires_grad_(),
        "pred_is_referred": f["pred_is_referred"].clone().requires_grad_(),
        "aux_outputs": [
            {k: v.clone().requires_grad_() for k, v in aux.items()} for aux in f["aux_outputs"]
        ],
    }
    selected = {k: leaves[k][0:1] for k in ("pred_masks", "pred_is_referred")}
    selected["aux_outputs"] = [{k: v[0:1] for k, v in aux.items()} for aux in leaves["aux_outputs"]]
    return leaves, selected


def _targets(case):
    return torch.stack([t["masks"][0] for t in case["targets"]]).float()[None]  # [1, B, H, W]


@pytest.mark.parametrize("name", ["b2", "b2_empty_target"])
def test_losses_and_gradients_match_released_code(losses_fixture, name):
    fx = losses_fixture
    case = fx["cases"][name]
    assert all(t["referred_instance_idx"] == 0 for t in case["targets"])
    criterion = _criterion(fx["config"])
    assert criterion.weight_dict == fx["config"]["weight_dict"]
    leaves, selected = _outputs(case)
    losses = criterion(selected, _targets(case))
    assert set(losses) == set(case["loss_dict"])
    for key, expected in case["loss_dict"].items():
        torch.testing.assert_close(losses[key], expected, atol=1e-6, rtol=RTOL, msg=key)
    total = sum(criterion.weighted(losses).values())
    torch.testing.assert_close(total, case["total_loss"], atol=1e-5, rtol=RTOL)
    total.backward()
    grad = {"atol": 1e-6, "rtol": RTOL}
    torch.testing.assert_close(leaves["pred_masks"].grad, case["grad_pred_masks"], **grad)
    torch.testing.assert_close(
        leaves["pred_is_referred"].grad, case["grad_pred_is_referred"], **grad
    )
    for i, aux in enumerate(leaves["aux_outputs"]):
        torch.testing.assert_close(aux["pred_masks"].grad, case["grad_aux_pred_masks"][i], **grad)
        torch.testing.assert_close(
            aux["pred_is_referred"].grad, case["grad_aux_pred_is_referred"][i], **grad
        )


@pytest.mark.parametrize("name", ["b2", "b2_empty_target"])
def test_matcher_costs_and_assignment_match_released_code(losses_fixture, name):
    fx = losses_fixture
    case = fx["cases"][name]
    matcher = ReferredQueryMatcher(fx["config"]["cost_is_referred"], fx["config"]["cost_dice"])
    f = case["model_outputs"]
    args = (f["pred_masks"][0:1], f["pred_is_referred"][0:1], _targets(case))
    costs = matcher.cost_matrices(*args)
    reference = case["matcher_final_layer"]
    for key in ("cost_is_referred", "cost_dice", "cost"):
        torch.testing.assert_close(costs[key], reference[key], atol=1e-6, rtol=RTOL, msg=key)
    # (query, target) per clip; every clip's single target has index 0.
    assert [int(t) for _, t in reference["indices"]] == [0, 0]
    assert matcher(*args).tolist() == [int(q) for q, _ in reference["indices"]]


def test_single_sigmoid_bce_flag():
    logits = torch.tensor([[-3.0, 0.0, 4.0]])
    targets = torch.tensor([[0.0, 1.0, 1.0]])
    double = mask_bce_loss(logits, targets)
    single = mask_bce_loss(logits, targets, double_sigmoid=False)
    torch.testing.assert_close(
        single, torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    )
    torch.testing.assert_close(
        double,
        torch.nn.functional.binary_cross_entropy_with_logits(logits.sigmoid(), targets),
    )
    # A perfect prediction still costs >= log 2 on background pixels with the double sigmoid.
    assert mask_bce_loss(torch.full((1, 4), -50.0), torch.zeros(1, 4)) > 0.69
    assert mask_bce_loss(torch.full((1, 4), -50.0), torch.zeros(1, 4), double_sigmoid=False) < 1e-6


def test_criterion_supervises_several_frames_with_one_query_per_clip():
    torch.manual_seed(0)
    criterion = _criterion(
        {
            "weight_dict": {
                "loss_is_referred": 1,
                "loss_sigmoid_focal": 5,
                "loss_dice": 5,
                "bce_loss": 4,
            },
            "eos_coef": 0.1,
            "cost_is_referred": 2,
            "cost_dice": 7,
        },
        double_sigmoid_bce=False,
    )
    masks = torch.randn(3, 2, 4, 6, 6, requires_grad=True)
    referred = torch.randn(3, 2, 4, 2, requires_grad=True)
    targets = (torch.rand(3, 2, 12, 12) > 0.5).float()
    losses = criterion({"pred_masks": masks, "pred_is_referred": referred}, targets)
    assert set(losses) == {"loss_is_referred", "loss_sigmoid_focal", "loss_dice", "bce_loss"}
    sum(losses.values()).backward()
    query = criterion.matcher(masks, referred, targets)
    # Only the matched query of each clip gets a mask gradient, in every frame.
    touched = masks.grad.abs().flatten(3).sum(-1) > 0  # [T, B, Q]
    expected = torch.zeros_like(touched)
    expected[:, torch.arange(2), query] = True
    assert torch.equal(touched, expected)
