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


def test_poly_schedule_follows_the_formula(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        BASE_LR=1e-4,
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=10,
        WARMUP_ITERS=0,
        WARMUP_FACTOR=1.0,
        BACKBONE_MULTIPLIER=0.1,
    )
    assert cfg.SOLVER.POLY_LR_POWER == 0.9 and cfg.SOLVER.POLY_LR_CONSTANT_ENDING == 0.0
    lrs = [sorted(set(step)) for step in _lrs(cfg, _Net(), 10)]
    for it, step in enumerate(lrs):
        factor = (1 - it / 10) ** 0.9
        assert step == pytest.approx([1e-5 * factor, 1e-4 * factor], rel=1e-12, abs=0)


def test_poly_schedule_warmup_and_constant_ending(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        BASE_LR=1.0,
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=10,
        WARMUP_ITERS=2,
        WARMUP_FACTOR=0.5,
        POLY_LR_POWER=2.0,
        POLY_LR_CONSTANT_ENDING=0.3,
    )
    lrs = [step[0] for step in _lrs(cfg, torch.nn.Linear(1, 1), 10)]
    # Linear warm-up from 0.5 over 2 iterations, then (1 - it/10)^2 held at 0.3 from below.
    assert lrs[:2] == pytest.approx([0.5, 0.75 * 0.9**2])
    assert lrs[2:5] == pytest.approx([0.8**2, 0.7**2, 0.6**2])
    assert lrs[5:] == pytest.approx([0.3] * 5)  # 0.5^2 = 0.25 < 0.3


def test_full_model_gradient_clipping(tmp_path):
    cfg = toy_cfg(tmp_path, OPTIMIZER="SGD", BASE_LR=1.0, MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    torch.manual_seed(0)
    model = _Net()
    optimizer = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    out = model.head(model.backbone(torch.rand(2, 3, 2, 2)).mean(dim=(2, 3)))
    (100 * out.square().sum()).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    norm_before = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert norm_before > 1.0
    optimizer.step()
    # One norm over all parameters: every gradient scaled by the same factor to norm 0.01.
    after = [p.grad for p in model.parameters() if p.grad is not None]
    norm_after = torch.linalg.vector_norm(torch.cat([g.flatten() for g in after]))
    assert norm_after.item() == pytest.approx(0.01, rel=1e-5)
    for g0, g1 in zip(grads, after):
        torch.testing.assert_close(g1, g0 * (0.01 / norm_before))
    # The step (SGD, lr 1) moved the weights by exactly the clipped gradients.
    moved = [b - p.detach() for b, p in zip(before, model.parameters()) if p.grad is not None]
    for delta, g in zip(moved, after):
        torch.testing.assert_close(delta, g)


class _ComboLike(torch.nn.Module):
    """Two visual backbones, a frozen audio backbone, embeddings, norms, bare parameters."""

    def __init__(self, visual_backbone_prefixes=("backbone.", "pre_sam_backbone.")):
        super().__init__()
        if visual_backbone_prefixes is not None:
            self.visual_backbone_prefixes = visual_backbone_prefixes
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.GroupNorm(2, 4))
        self.pre_sam_backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
        self.audio_backbone = torch.nn.Linear(2, 2)
        self.audio_backbone.requires_grad_(False)
        self.pixel_decoder = torch.nn.Module()
        self.pixel_decoder.level_embed = torch.nn.Parameter(torch.zeros(3, 4))
        self.fusion = torch.nn.Module()
        self.fusion.gamma = torch.nn.Parameter(torch.ones(4))
        self.fusion.norm = torch.nn.LayerNorm(4)
        self.fusion.audio_pos = torch.nn.Embedding(1, 4)
        self.query_feat = torch.nn.Embedding(5, 4)
        self.class_embed = torch.nn.Linear(4, 3)


def test_param_groups_embeddings_norms_and_visual_backbones(tmp_path):
    cfg = toy_cfg(
        tmp_path,
        BASE_LR=1e-4,
        BACKBONE_MULTIPLIER=0.1,
        WEIGHT_DECAY=0.05,
        WEIGHT_DECAY_NORM=0.0,
        WEIGHT_DECAY_EMBED=0.0,
    )
    model = _ComboLike()
    hp = _hyper_params(build_optimizer(cfg, model), model)
    assert set(hp) == {n for n, _ in model.named_parameters()}  # frozen ones included
    expected = {
        "backbone.0.weight": (1e-5, 0.05),
        "backbone.0.bias": (1e-5, 0.05),
        "backbone.1.weight": (1e-5, 0.0),  # GroupNorm
        "pre_sam_backbone.0.weight": (1e-5, 0.05),  # the second visual backbone
        "audio_backbone.weight": (1e-4, 0.05),  # never the backbone multiplier
        "pixel_decoder.level_embed": (1e-4, 0.05),  # a bare nn.Parameter keeps the decay
        "fusion.gamma": (1e-4, 0.05),
        "fusion.norm.weight": (1e-4, 0.0),
        "fusion.norm.bias": (1e-4, 0.0),
        "fusion.audio_pos.weight": (1e-4, 0.0),  # nn.Embedding
        "query_feat.weight": (1e-4, 0.0),
        "class_embed.weight": (1e-4, 0.05),
        "class_embed.bias": (1e-4, 0.05),
    }
    for name, value in expected.items():
        assert hp[name] == pytest.approx(value), name


def test_defaults_keep_one_backbone_and_embedding_decay(tmp_path):
    cfg = toy_cfg(tmp_path, BASE_LR=1e-4, BACKBONE_MULTIPLIER=0.1, WEIGHT_DECAY=0.05)
    assert cfg.SOLVER.WEIGHT_DECAY_EMBED is None
    model = _ComboLike(visual_backbone_prefixes=None)
    hp = _hyper_params(build_optimizer(cfg, model), model)
    assert hp["backbone.0.weight"] == pytest.approx((1e-5, 0.05))
    assert hp["pre_sam_backbone.0.weight"] == pytest.approx((1e-4, 0.05))
    assert hp["query_feat.weight"] == pytest.approx((1e-4, 0.05))


def test_visual_backbone_prefixes_must_be_a_sequence_of_names(tmp_path):
    model = torch.nn.Linear(1, 1)
    model.visual_backbone_prefixes = "backbone."
    with pytest.raises(TypeError, match="visual_backbone_prefixes"):
        build_optimizer(toy_cfg(tmp_path), model)


def test_adamw_on_cpu_takes_the_fused_kernel_with_the_default_update(tmp_path):
    """The CPU AdamW is PyTorch's fused kernel, and a few clipped steps move the weights as the
    default (per-tensor loop) AdamW does."""
    cfg = toy_cfg(tmp_path, BASE_LR=1e-2, WEIGHT_DECAY=0.05)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    torch.manual_seed(0)
    model, reference = _Net(), _Net()
    reference.load_state_dict(model.state_dict())
    optimizer = build_optimizer(cfg, model)
    assert all(group["fused"] for group in optimizer.param_groups)
    default = build_optimizer(cfg, reference)
    for group in default.param_groups:
        group["fused"] = False
    x = torch.rand(2, 3, 2, 2)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, default)):
            opt.zero_grad()
            net.head(net.backbone(x).mean(dim=(2, 3))).square().sum().backward()
            opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.head[0].weight, _Net().head[0].weight)
