"""Atomic checkpoints and resuming: iteration, optimizer, scheduler and freeze state."""

import os

import pytest
import torch
from detectron2.engine.train_loop import HookBase
from engine_toy import ToyTrainer, toy_cfg

from avsegformer.engine import AtomicDetectionCheckpointer, atomic_write
from avsegformer.engine.hooks import BackboneFreezeHook


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write(str(path), lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), crash)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_partial_checkpoint_never_named_by_last_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"

    real_save = torch.save

    def killed_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 truncated")  # what is on disk when the process dies here
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000002")
    monkeypatch.setattr(torch, "save", real_save)

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    # A temporary file left by a hard kill (no cleanup possible) is never listed or loaded.
    (tmp_path / "model_0000003.pth.tmp-999").write_bytes(b"partial")
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_0000001.pth")]
    fresh = torch.nn.Linear(3, 2)
    AtomicDetectionCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(fresh.weight, model.weight)


class _Crash(HookBase):
    """Stands in for ``kill -9`` after a given iteration (nothing after it is saved)."""

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def after_step(self):
        if self.trainer.iter == self.at_iter:
            raise SystemExit("simulated crash")


class _Recorder(HookBase):
    def __init__(self):
        self.seen = {}

    def before_step(self):
        model = self.trainer.model
        self.seen[self.trainer.iter] = (
            self.trainer.optimizer.param_groups[0]["lr"],
            model.backbone[0].weight.requires_grad,
        )


def test_resume_restores_iteration_optimizer_scheduler_and_freeze(tmp_path):
    cfg = toy_cfg(tmp_path, MAX_ITER=10, CHECKPOINT_PERIOD=4, FREEZE_BACKBONE_ITERS=6)
    first = ToyTrainer(cfg)
    first.register_hooks([_Crash(at_iter=5)])
    with pytest.raises(SystemExit):
        first.train()
    # Checkpoint written after iteration 3 (CHECKPOINT_PERIOD 4); iterations 4-5 are lost.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    saved = torch.load(tmp_path / "model_0000003.pth", map_location="cpu", weights_only=False)

    second = ToyTrainer(cfg)
    recorder = _Recorder()
    second.register_hooks([recorder])
    second.resume_or_load(resume=True)
    assert second.start_iter == 4
    assert second.iter == 3
    restored = second.optimizer.state_dict()
    for key, state in saved["trainer"]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(restored["state"][key][name]), value), name
    assert second.scheduler.last_epoch == saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"]
    for name, value in saved["model"].items():
        assert torch.equal(second.model.state_dict()[name], value), name

    second.train()
    assert sorted(recorder.seen) == list(range(4, 10))
    lrs = {it: lr for it, (lr, _) in recorder.seen.items()}
    # Base 0.01 until SOLVER.STEPS=(5,), then x0.1: the scheduler continued, not restarted.
    assert lrs[4] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.001)
    assert lrs[9] == pytest.approx(0.001)
    frozen = {it: not trainable for it, (_, trainable) in recorder.seen.items()}
    assert frozen == {4: True, 5: True, 6: False, 7: False, 8: False, 9: False}
    assert (tmp_path / "model_final.pth").exists()
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 9


def test_poly_schedule_and_full_model_clipping_resume(tmp_path):
    cfg = toy_cfg(tmp_path, MAX_ITER=8, CHECKPOINT_PERIOD=4, LR_SCHEDULER_NAME="WarmupPolyLR")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    first = ToyTrainer(cfg)
    first.register_hooks([_Crash(at_iter=5)])
    with pytest.raises(SystemExit):
        first.train()
    second = ToyTrainer(cfg)
    recorder = _Recorder()
    second.register_hooks([recorder])
    second.resume_or_load(resume=True)
    second.train()
    lrs = {it: lr for it, (lr, _) in recorder.seen.items()}
    # The poly curve continues from the checkpoint (after iteration 3), not from 0.
    assert sorted(lrs) == [4, 5, 6, 7]
    for it, lr in lrs.items():
        assert lr == pytest.approx(0.01 * (1 - it / 8) ** 0.9)
    assert type(second.optimizer).__name__ == "FullModelGradientClippingAdamW"


def test_freeze_hook_checkpoint_free(tmp_path):
    """The freeze state is derived from the iteration, so no hook state needs saving."""
    trainer = ToyTrainer(toy_cfg(tmp_path, FREEZE_BACKBONE_ITERS=3))
    hook = next(h for h in trainer._hooks if isinstance(h, BackboneFreezeHook))
    assert hook.state_dict() == {}
