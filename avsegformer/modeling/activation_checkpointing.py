"""Activation checkpointing: parts of a model that keep only their inputs for the backward pass
and recompute their activations there, trading one more forward of the part for its memory.

Every model reads the switches ``MODEL.ACTIVATION_CHECKPOINTING.*`` through the helpers here:

* :func:`checkpointed` runs one call under :func:`torch.utils.checkpoint.checkpoint` (the
  non-reentrant variant, which keeps the random state, so dropout and drop-path draw the same
  numbers in the recomputation, and the autocast state) when the switch is on and a gradient
  is being recorded, and calls it plainly otherwise (evaluation is never affected);
* :func:`checkpoint_backbone` switches a visual backbone to per-block checkpointing: timm's own
  ``set_grad_checkpointing`` for PVTv2, :class:`CheckpointedSequential` stages for
  Detectron2's ResNet.

Training-mode BatchNorm updates its running statistics on every forward, so a recomputed block
would update them twice; :func:`checkpointed` restores them after the recomputation, so the
statistics, like the gradients, are those of a run without checkpointing.
"""

import contextlib

import torch
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone import ResNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = [
    "CheckpointedSequential",
    "build_visual_backbone",
    "checkpoint_backbone",
    "checkpointed",
]


def _needs_checkpoint(enabled: bool, module: nn.Module | None) -> bool:
    if not (enabled and torch.is_grad_enabled()):
        return False
    return module is None or module.training


@contextlib.contextmanager
def _batch_norm_statistics_kept(modules):
    """Restore the running statistics of every BatchNorm in ``modules`` on exit."""
    norms = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [[b.clone() for b in norm.buffers()] for norm in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, buffers in zip(norms, saved):
                for buffer, value in zip(norm.buffers(), buffers):
                    buffer.copy_(value)


def checkpointed(function, *args, enabled: bool = True, module: nn.Module | None = None):
    """``function(*args)``, under activation checkpointing when ``enabled``.

    Args:
        function: the computation (a module or any callable of tensors).
        args: its positional arguments.
        enabled: the config switch; False calls ``function`` plainly.
        module: the module whose parameters ``function`` uses, when ``function`` is not a
            module itself: only its training mode turns checkpointing on, and its BatchNorm
            statistics are kept from a second update.

    Returns:
        ``function(*args)``.
    """
    module = function if module is None and isinstance(function, nn.Module) else module
    if not _needs_checkpoint(enabled, module):
        return function(*args)
    calls = []

    def run(*inputs):
        # The first call is the forward; any later one recomputes for the backward.
        calls.append(None)
        if len(calls) == 1 or module is None:
            return function(*inputs)
        with _batch_norm_statistics_kept([module]):
            return function(*inputs)

    return checkpoint(run, *args, use_reentrant=False)


class CheckpointedSequential(nn.Sequential):
    """``nn.Sequential`` whose children each run under :func:`checkpointed` when
    :attr:`checkpoint_activations` is set. Its children and state-dict keys are those of the
    plain ``nn.Sequential`` it replaces."""

    def __init__(self, *modules: nn.Module, checkpoint_activations: bool = True):
        super().__init__(*modules)
        self.checkpoint_activations = checkpoint_activations

    def forward(self, x):
        for module in self:
            x = checkpointed(module, x, enabled=self.checkpoint_activations)
        return x


def checkpoint_backbone(backbone: nn.Module) -> nn.Module:
    """Switch ``backbone`` to per-block activation checkpointing in training, in place.

    Supported: timm models with ``set_grad_checkpointing`` (PVTv2: every transformer block) and
    Detectron2's :class:`~detectron2.modeling.backbone.ResNet` (every residual block; the stem,
    a quarter of a block's activations at most, is left as it is).

    Returns:
        ``backbone``.
    """
    if hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
        return backbone
    if isinstance(backbone, ResNet):
        for index, (name, stage) in enumerate(zip(backbone.stage_names, backbone.stages)):
            replacement = CheckpointedSequential(*stage.children())
            setattr(backbone, name, replacement)
            backbone.stages[index] = replacement
        return backbone
    raise ValueError(
        f"MODEL.ACTIVATION_CHECKPOINTING.BACKBONE: {type(backbone).__name__} does not support "
        "activation checkpointing (supported: ResNet, PVTv2)"
    )


def build_visual_backbone(cfg) -> nn.Module:
    """Detectron2's ``build_backbone(cfg)``, checkpointed block by block in training when
    ``MODEL.ACTIVATION_CHECKPOINTING.BACKBONE`` is set (:func:`checkpoint_backbone`)."""
    backbone = build_backbone(cfg)
    if cfg.MODEL.ACTIVATION_CHECKPOINTING.BACKBONE:
        checkpoint_backbone(backbone)
    return backbone
