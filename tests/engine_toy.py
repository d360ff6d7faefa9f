"""A toy model and trainer for the engine tests (the shape of Detectron2's tests/test_engine.py).

The toy model follows the project's model contract (list of clip dicts in, loss dict out, a
``backbone`` attribute) so the real :class:`avsegformer.engine.Trainer` runs unchanged around it.
"""

import itertools

import torch
from detectron2.config import get_cfg

from avsegformer import add_avsegformer_config
from avsegformer.engine import Trainer


class ToyModel(torch.nn.Module):
    """``backbone`` (conv + BN) then a head; the loss pulls the output towards the clip's target."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        self.head = torch.nn.Conv2d(4, 1, 1)
        self.nan_at_call = None
        self.calls = 0
        #: dtype of the head's output in each forward: what autocast (if any) computed in.
        self.forward_dtypes = []

    def forward(self, batched_inputs):
        frames = torch.stack([x["frames"] for x in batched_inputs]).flatten(0, 1).float()
        target = torch.stack([x["target"] for x in batched_inputs]).flatten(0, 1)
        out = self.head(self.backbone(frames))
        self.forward_dtypes.append(out.dtype)
        loss = (out.mean(dim=(1, 2, 3)) - target).square().mean()
        self.calls += 1
        if self.nan_at_call is not None and self.calls > self.nan_at_call:
            loss = loss * float("nan")
        return {"loss_mask": loss, "loss_mix": 0.1 * loss.detach() + 0 * loss}


def toy_batches(batch_size: int = 2, seed: int = 0):
    """An endless, deterministic stream of batches of 2-frame 4x4 clips."""
    generator = torch.Generator().manual_seed(seed)
    for _ in itertools.count():
        yield [
            {
                "frames": torch.rand(2, 3, 4, 4, generator=generator),
                "target": torch.rand(2, generator=generator),
            }
            for _ in range(batch_size)
        ]


class ToyTrainer(Trainer):
    """The project's Trainer with the toy model and data; no evaluation."""

    @classmethod
    def build_model(cls, cfg):
        return ToyModel()

    @classmethod
    def build_train_loader(cls, cfg):
        return toy_batches()


def toy_cfg(output_dir, **solver):
    """A CPU config for :class:`ToyTrainer`; ``solver`` overrides ``SOLVER.*`` keys."""
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.TEST.EVAL_PERIOD = 0
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg
