"""Optimizer groups, gradient clipping and learning-rate schedules from the config."""

import pytest
import torch
from engine_toy import toy_cfg

from avsegformer.solver import build_lr_scheduler, build_optimizer


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.tied = self.head[0]  # shared module: its parameters must appear once


def _hyper_params(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}  # first name of a shared one
    ret = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            ret[names[id(p)]] = (group["lr"], group["weight_decay"])
    return ret


def test_original_setting_is_one_adamw_group(tmp_path):
    cfg = toy_cfg(tmp_path, BASE_LR=2e-5, WEIGHT_DECAY=0.01, WEIGHT_DECAY_NORM=0.01)
    model = _Net()
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.AdamW
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (
        2e-5,
        0.01,
        (0.9, 0.999),
        1e-8,
    )
    # Every distinct parameter once, frozen ones included (like model.parameters()).
    assert len(group["params"]) == len(list(model.parameters()))


def test_backbone_multiplier_and_weight_decay_groups(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        BASE_LR=1e-3,
        BACKBONE_MULTIPLIER=0.1,
        WEIGHT_DECAY=0.05,
        WEIGHT_DECAY_NORM=0.0,
        WEIGHT_DECAY_BIAS=0.02,
        BETAS=(0.8, 0.9),
        EPS=1e-6,
    )
    model = _Net()
    optimizer = build_optimizer(cfg, model)
    hp = _hyper_params(optimizer, model)
    assert hp["backbone.0.weight"] == pytest.approx((1e-4, 0.05))
    assert hp["backbone.0.bias"] == pytest.approx((1e-4, 0.02))
    assert hp["backbone.1.weight"] == pytest.approx((1e-4, 0.0))
    assert hp["head.0.weight"] == pytest.approx((1e-3, 0.05))
    assert hp["head.1.bias"] == pytest.approx((1e-3, 0.0))
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    assert optimizer.param_groups[0]["eps"] == 1e-6


def test_sgd_and_gradient_clipping(tmp_path):
    cfg = toy_cfg(tmp_path, OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = torch.nn.Linear(1, 1, bias=False)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    before = model.weight.detach().clone()
    (model(torch.ones(1, 1)) * 100).sum().backward()
    optimizer.step()
    assert (before - model.weight.detach()).item() == pytest.approx(0.5)


def test_unknown_optimizer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(toy_cfg(tmp_path, OPTIMIZER="LAMB"), _Net())


def _lrs(cfg, model, n):
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    ret = []
    for _ in range(n):
        ret.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return ret


def test_constant_schedule_when_no_steps(tmp_path):
    cfg = toy_cfg(tmp_path, BASE_LR=2e-5, STEPS=(), MAX_ITER=5, BACKBONE_MULTIPLIER=0.5)
    lrs = _lrs(cfg, _Net(), 5)
    assert all(sorted(set(step)) == pytest.approx([1e-5, 2e-5]) for step in lrs)


def test_steps_warmup_and_multiplier_kept(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        BASE_LR=1.0,
        STEPS=(3, 10),  # 10 == MAX_ITER: ignored instead of rejected
        MAX_ITER=10,
        WARMUP_ITERS=2,
        WARMUP_FACTOR=0.5,
        BACKBONE_MULTIPLIER=0.1,
    )
    lrs = [sorted(set(step)) for step in _lrs(cfg, _Net(), 5)]
    assert lrs[0] == pytest.approx([0.05, 0.5])
    assert lrs[2] == pytest.approx([0.1, 1.0])
    assert lrs[4] == pytest.approx([0.01, 0.1])


def test_cosine_schedule(tmp_path):
    cfg = toy_cfg(tmp_path, BASE_LR=1.0, LR_SCHEDULER_NAME="WarmupCosineLR", MAX_ITER=4)
    lrs = [step[0] for step in _lrs(cfg, torch.nn.Linear(1, 1), 4)]
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(0.5)
    assert lrs == sorted(lrs, reverse=True)
