"""Training hooks and checks specific to AVSegFormer's protocol."""

import logging
import math
from collections.abc import Mapping

import torch
from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase

from avsegformer.solver import visual_backbone_prefixes

__all__ = [
    "BackboneFreezeHook",
    "NegativeAudioStartHook",
    "swap_data_loader",
    "StatefulBestCheckpointer",
    "NonFiniteLossError",
    "check_losses_finite",
]

logger = logging.getLogger(__name__)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel keeps the real model in `.module`.
    return getattr(model, "module", model)


class BackboneFreezeHook(HookBase):
    """No gradient to the visual backbones for the first ``freeze_iters`` iterations.

    The original freezes the backbone for its first 5 (S4) / 10 (MS3) epochs by switching
    ``requires_grad`` off; BatchNorm keeps training-mode statistics and drop-path stays active, so
    only the gradient is withheld. The frozen parameters are those the optimizer gives
    ``SOLVER.BACKBONE_MULTIPLIER``: every visual backbone the model names in
    :func:`~avsegformer.solver.visual_backbone_prefixes` (COMBO's two), never the audio backbone.
    The state is a function of the iteration, so a resumed run picks the right one in
    ``before_train`` from the restored iteration; nothing is checkpointed. Parameters that were
    already frozen (e.g. ``MODEL.BACKBONE.FREEZE_AT``) stay frozen.
    """

    def __init__(self, freeze_iters: int):
        """
        Args:
            freeze_iters: iterations 0 .. freeze_iters-1 run with the visual backbones frozen.
        """
        if freeze_iters < 0:
            raise ValueError(f"SOLVER.FREEZE_BACKBONE_ITERS must be >= 0, got {freeze_iters}")
        self._freeze_iters = freeze_iters
        self._trainable = []
        self.frozen = False

    def _backbone_parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter of the (unwrapped) model's visual backbones, trainable or not."""
        model = _unwrap(self.trainer.model)
        prefixes = visual_backbone_prefixes(model)
        params = {prefix: [] for prefix in prefixes}
        for name, param in model.named_parameters():
            for prefix in prefixes:
                if name.startswith(prefix):
                    params[prefix].append(param)
        missing = [prefix for prefix, found in params.items() if not found]
        if missing:
            raise AttributeError(
                f"BackboneFreezeHook: the model ({type(model).__name__}) has no parameters "
                f"under {missing} to freeze (its visual_backbone_prefixes are {list(prefixes)})"
            )
        return [param for found in params.values() for param in found]

    def _set_frozen(self, frozen: bool) -> None:
        for param in self._trainable:
            param.requires_grad_(not frozen)
        self.frozen = frozen

    def before_train(self):
        self._trainable = [p for p in self._backbone_parameters() if p.requires_grad]
        if self.trainer.iter < self._freeze_iters:
            self._set_frozen(True)
            logger.info(
                "Visual backbones frozen (%d parameter tensors) until iteration %d",
                len(self._trainable),
                self._freeze_iters,
            )

    def before_step(self):
        if self.frozen and self.trainer.iter >= self._freeze_iters:
            self._set_frozen(False)
            logger.info("Visual backbones unfrozen at iteration %d", self.trainer.iter)

    def after_train(self):
        # Leave the model as it was built, e.g. for an evaluation after a short run.
        if self.frozen:
            self._set_frozen(False)


def swap_data_loader(train_loop, data_loader) -> None:
    """Make ``train_loop`` (a Detectron2 ``SimpleTrainer`` or ``AMPTrainer``) draw its next
    batches from ``data_loader``.

    Detectron2 v0.6 keeps the loader as ``data_loader`` and an iterator over it, created in
    ``__init__``, as ``_data_loader_iter``; ``run_step`` calls ``next`` on the iterator. The old
    iterator is closed first so that its worker processes (``DATALOADER.NUM_WORKERS`` > 0) end
    now rather than when the garbage collector finds them.
    """
    old = getattr(train_loop, "_data_loader_iter", None)
    # Detectron2's aspect-ratio grouping iterates in a generator (close() ends its inner
    # DataLoader iterator); a plain torch iterator has _shutdown_workers.
    close = getattr(old, "close", None) or getattr(old, "_shutdown_workers", None)
    if close is not None:
        close()
    train_loop.data_loader = data_loader
    train_loop._data_loader_iter = iter(data_loader)


class NegativeAudioStartHook(HookBase):
    """Switch training with negative audio on at iteration ``start_iter``.

    The trainer builds its data loader with negatives off; from ``start_iter`` on this hook
    swaps in ``build_loader()``, the loader with negatives on (``INPUT.NEGATIVE_AUDIO.PROB``).
    A run resumed at or past ``start_iter`` swaps before its first step. The state is a
    function of the iteration, so nothing is checkpointed.
    """

    def __init__(self, start_iter: int, build_loader):
        """
        Args:
            start_iter: the first iteration whose batch may hold negative clips (> 0).
            build_loader: () -> the training data loader with negatives on.
        """
        if start_iter <= 0:
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.START_ITER must be > 0 here, got {start_iter}")
        self._start_iter = start_iter
        self._build_loader = build_loader
        self.negatives_on = False

    def _switch_on(self) -> None:
        swap_data_loader(self.trainer._trainer, self._build_loader())
        self.negatives_on = True
        logger.info("Negative audio on from iteration %d (data loader rebuilt)", self.trainer.iter)

    def before_train(self):
        if self.trainer.iter >= self._start_iter:
            self._switch_on()

    def before_step(self):
        if not self.negatives_on and self.trainer.iter >= self._start_iter:
            self._switch_on()


class StatefulBestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's ``BestCheckpointer`` whose best score survives ``--resume``.

    v0.6 forgets the best score on restart, so the first evaluation after resuming would overwrite
    ``model_best.pth`` even when it is worse. The trainer checkpoints hook states by class name.

    Evaluations of iterations before ``min_iter`` are not candidates: with negative audio from
    ``INPUT.NEGATIVE_AUDIO.START_ITER`` on, the best model must have been trained with them.
    """

    def __init__(self, *args, min_iter: int = 0, **kwargs):
        """``args``, ``kwargs``: as for Detectron2's ``BestCheckpointer``; ``min_iter``: the
        first iteration whose evaluation may become ``model_best``."""
        super().__init__(*args, **kwargs)
        self._min_iter = min_iter

    def _best_checking(self):
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is not None and latest[1] < self._min_iter:
            self._logger.info(
                "Evaluation @ iteration %d is not a best-model candidate (before iteration %d)",
                latest[1],
                self._min_iter,
            )
            return
        super()._best_checking()

    def state_dict(self):
        if self.best_metric is None:
            return {}
        return {"best_metric": float(self.best_metric), "best_iter": int(self.best_iter)}

    def load_state_dict(self, state_dict):
        self.best_metric = state_dict.get("best_metric")
        self.best_iter = state_dict.get("best_iter")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stops instead of corrupting the weights."""


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the iteration and every loss term.

    Called before ``backward`` so that no update with a NaN gradient reaches the optimizer and
    the last checkpoint stays usable.

    Args:
        loss_dict: scalar loss tensors of one iteration (already weighted).
        iteration: the iteration being run.
    """
    values = {name: float(value.detach()) for name, value in loss_dict.items()}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        terms = ", ".join(f"{name}={value:.6g}" for name, value in values.items())
        raise NonFiniteLossError(
            f"Loss became non-finite at iteration {iteration} ({', '.join(bad)}): {terms}. "
            "Training stopped; lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS, then "
            "--resume from the last checkpoint."
        )
