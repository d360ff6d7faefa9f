"""MoDAT's loss combination against the original training scripts.

Fixture: ``<repo>/../shared/reference/modat/fixtures/losses.pt``: S4/MS3 add the balance loss
to AVSegFormer's losses, AVSS as released doubles them and drops the balance loss.
"""

import pytest
import torch
from helpers import load_fixture
from torch.testing import assert_close

from avsegformer.modeling.modat_criterion import MoDATCriterion

TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def losses_fixture():
    return load_fixture("modat/fixtures/losses.pt")


def targets_of(case_name, args):
    """The fixture's GT as the model's int64 ``sem_seg`` (255 = not annotated)."""
    pred = args["pred_masks"]
    if case_name == "s4":
        # One annotated frame (the first) per 5-frame clip.
        targets = torch.full((pred.shape[0], *pred.shape[-2:]), 255, dtype=torch.long)
        targets[0::5] = args["gt_mask"].long()
        return targets
    if case_name == "ms3":
        return args["gt_mask"][:, 0].long()
    targets = args["gt_mask"].clone()
    targets[args["gt_temporal_mask_flag"] == 0] = 255
    return targets


def run(case_name, case, **kwargs):
    args = case["args"]
    criterion = MoDATCriterion(
        mask_loss="ce" if case_name == "avss" else "dice",
        mask_loss_weight=case["loss_cfg"]["weight_dict"]["iou_loss"],
        mix_loss_weight=case["loss_cfg"]["weight_dict"]["mix_loss"],
        **kwargs,
    )
    pred = args["pred_masks"].clone().requires_grad_(True)
    mask_feature = args["mask_feature"].clone().requires_grad_(True)
    balance = args["moe_loss"].clone().requires_grad_(True)
    losses = criterion(pred, mask_feature, targets_of(case_name, args), balance_loss=balance)
    return losses, pred, mask_feature, balance


@pytest.mark.parametrize("case_name", ["s4", "ms3", "avss"])
def test_loss_combination_matches_training_scripts(losses_fixture, case_name):
    case = losses_fixture["cases"][case_name]
    avss = case_name == "avss"
    losses, pred, mask_feature, balance = run(case_name, case, double_main_loss=avss)
    assert set(losses) == (
        {"loss_mask", "loss_mix"} if avss else {"loss_mask", "loss_mix", "loss_balance"}
    )
    total = sum(losses.values())
    assert_close(total.detach(), case["total_loss"], **TOL)
    main = losses["loss_mask"] + losses["loss_mix"]
    assert_close(main.detach() / (2 if avss else 1), case["main_loss"], **TOL)
    total.backward()
    assert_close(pred.grad, case["grad_pred_masks"], rtol=1e-4, atol=1e-8)
    assert_close(mask_feature.grad[:, 0], case["grad_mask_feature_channel0"], rtol=1e-4, atol=1e-9)
    if avss:
        assert balance.grad is None, "the released AVSS script never uses the balance loss"
    else:
        assert balance.grad.item() == case["grad_moe_loss"].item() == 1.0


def test_corrected_avss_loss_adds_the_balance_loss(losses_fixture):
    case = losses_fixture["cases"]["avss"]
    losses, _, _, balance = run("avss", case, double_main_loss=False)
    total = sum(losses.values())
    assert_close(total.detach(), case["main_loss"] + case["args"]["moe_loss"], **TOL)
    total.backward()
    assert balance.grad.item() == 1.0


def test_balance_loss_is_required_unless_dropped():
    criterion = MoDATCriterion()
    with pytest.raises(ValueError, match="balance loss"):
        criterion(torch.zeros(1, 1, 4, 4), torch.zeros(1, 8, 2, 2), torch.ones(1, 4, 4).long())
