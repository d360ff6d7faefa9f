"""BackboneFreezeHook, the finite-loss check and the stateful best checkpointer."""

import math
from types import SimpleNamespace

import pytest
import torch
from detectron2.engine.train_loop import HookBase
from detectron2.modeling import build_model
from engine_toy import ToyTrainer, toy_cfg
from helpers import tiny_avsegformer_cfg, tiny_combo_cfg

from avsegformer.engine.hooks import (
    BackboneFreezeHook,
    NonFiniteLossError,
    StatefulBestCheckpointer,
    check_losses_finite,
)


class _Recorder(HookBase):
    """Per iteration: whether the backbone required grad, and a copy of its weights after it."""

    def __init__(self):
        self.requires_grad = []
        self.weights = []
        self.running_means = []

    def after_step(self):
        backbone = self.trainer.model.backbone
        self.requires_grad.append(backbone[0].weight.requires_grad)
        self.weights.append(backbone[0].weight.detach().clone())
        self.running_means.append(backbone[1].running_mean.clone())


def test_backbone_frozen_for_first_iterations(tmp_path):
    trainer = ToyTrainer(toy_cfg(tmp_path, FREEZE_BACKBONE_ITERS=3, MAX_ITER=6))
    recorder = _Recorder()
    trainer.register_hooks([recorder])
    initial = trainer.model.backbone[0].weight.detach().clone()
    trainer.train()

    assert recorder.requires_grad == [False, False, False, True, True, True]
    for it in range(3):
        assert torch.equal(recorder.weights[it], initial), f"backbone moved at iteration {it}"
    assert not torch.equal(recorder.weights[3], initial)
    # Frozen means no gradient only: BatchNorm statistics keep updating (as in the original).
    assert not torch.equal(recorder.running_means[0], recorder.running_means[1])
    # The head trains throughout.
    assert trainer.model.head.weight.requires_grad


@pytest.mark.parametrize("start_iter, frozen", [(0, True), (2, True), (3, False), (5, False)])
def test_freeze_state_follows_resumed_iteration(tmp_path, start_iter, frozen):
    trainer = ToyTrainer(toy_cfg(tmp_path, FREEZE_BACKBONE_ITERS=3))
    hook = next(h for h in trainer._hooks if isinstance(h, BackboneFreezeHook))
    trainer.iter = start_iter
    hook.before_train()
    assert hook.frozen is frozen
    assert trainer.model.backbone[0].weight.requires_grad is (not frozen)


def test_freeze_keeps_already_frozen_parameters_frozen(tmp_path):
    trainer = ToyTrainer(toy_cfg(tmp_path, FREEZE_BACKBONE_ITERS=2, MAX_ITER=4))
    trainer.model.backbone[1].weight.requires_grad_(False)
    trainer.train()
    assert trainer.model.backbone[0].weight.requires_grad
    assert not trainer.model.backbone[1].weight.requires_grad


def test_freeze_hook_rejects_bad_setup():
    with pytest.raises(ValueError, match="FREEZE_BACKBONE_ITERS"):
        BackboneFreezeHook(-1)


@pytest.mark.parametrize(
    "make_cfg, backbones",
    [
        (tiny_avsegformer_cfg, {"backbone"}),
        (tiny_combo_cfg, {"backbone", "pre_sam_backbone"}),
    ],
    ids=["AVSegFormer", "COMBO"],
)
def test_freeze_covers_every_visual_backbone_of_a_real_model(make_cfg, backbones):
    """The hook freezes what the optimizer treats as visual backbone (COMBO has two), and nothing
    else: not the audio backbone, not the head."""
    model = build_model(make_cfg())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    trainer = SimpleNamespace(model=model, iter=0)
    hook = BackboneFreezeHook(2)
    hook.trainer = trainer
    hook.before_train()

    unfrozen_now = {name for name, p in model.named_parameters() if p.requires_grad}
    frozen = trainable - unfrozen_now
    assert {name.split(".")[0] for name in frozen} == backbones
    # Every other trainable parameter (head, audio projection) keeps training.
    assert unfrozen_now and all(name.split(".")[0] not in backbones for name in unfrozen_now)
    trainer.iter = 2
    hook.before_step()
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable


def test_freeze_hook_names_a_visual_backbone_the_model_lacks(tmp_path):
    trainer = ToyTrainer(toy_cfg(tmp_path, FREEZE_BACKBONE_ITERS=2))
    trainer.model.visual_backbone_prefixes = ("backbone.", "pre_sam_backbone.")
    hook = next(h for h in trainer._hooks if isinstance(h, BackboneFreezeHook))
    with pytest.raises(AttributeError, match="pre_sam_backbone"):
        hook.before_train()


def test_non_finite_loss_stops_training_with_clear_message(tmp_path):
    trainer = ToyTrainer(toy_cfg(tmp_path, MAX_ITER=8))
    trainer.model.nan_at_call = 3
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"iteration 3 .*loss_mask=nan"):
        trainer.train()
    assert isinstance(NonFiniteLossError("x"), FloatingPointError)
    # No update was made with the NaN loss.
    for key, value in trainer.model.state_dict().items():
        assert torch.isfinite(value.float()).all(), key
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_check_losses_finite():
    check_losses_finite({"a": torch.tensor(1.0), "b": torch.tensor(0.0)}, 7)
    with pytest.raises(NonFiniteLossError) as info:
        check_losses_finite({"a": torch.tensor(1.0), "b": torch.tensor(math.inf)}, 7)
    message = str(info.value)
    assert "iteration 7" in message and "b=inf" in message and "a=1" in message


def test_best_checkpointer_state_round_trip():
    hook = StatefulBestCheckpointer(10, checkpointer=None, val_metric="avs/mIoU", mode="max")
    assert hook.state_dict() == {}
    hook.best_metric, hook.best_iter = 0.75, 99
    restored = StatefulBestCheckpointer(10, checkpointer=None, val_metric="avs/mIoU")
    restored.load_state_dict(hook.state_dict())
    assert (restored.best_metric, restored.best_iter) == (0.75, 99)


class _FallingMetric(HookBase):
    """Puts an ``avs/mIoU`` that falls with the iteration into the storage every 2 iterations,
    as an evaluation would."""

    def after_step(self):
        if (self.trainer.iter + 1) % 2 == 0:
            self.trainer.storage.put_scalars(**{"avs/mIoU": 1.0 - 0.1 * self.trainer.iter})


@pytest.mark.parametrize("min_iter, best_iter", [(0, 1), (4, 5)])
def test_best_checkpointer_ignores_evaluations_before_min_iter(tmp_path, min_iter, best_iter):
    trainer = ToyTrainer(toy_cfg(tmp_path, MAX_ITER=8))
    hook = StatefulBestCheckpointer(2, trainer.checkpointer, "avs/mIoU", "max", min_iter=min_iter)
    trainer.register_hooks([_FallingMetric(), hook])
    trainer.train()
    assert hook.best_iter == best_iter
    assert (tmp_path / "model_best.pth").is_file()


@pytest.mark.parametrize("amp, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_amp_on_cpu_trains_under_bfloat16_autocast(tmp_path, amp, dtype):
    cfg = toy_cfg(tmp_path, MAX_ITER=3)
    cfg.SOLVER.AMP.ENABLED = amp
    trainer = ToyTrainer(cfg)
    before = trainer.model.head.weight.detach().clone()
    trainer.train()
    # The convolutions inside the forward ran in bfloat16 only under AMP.
    assert trainer.model.forward_dtypes == [dtype] * 3
    assert trainer.model.head.weight.dtype is torch.float32  # weights stay fp32
    assert not torch.equal(before, trainer.model.head.weight)
