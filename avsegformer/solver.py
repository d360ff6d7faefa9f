"""Optimizer and learning-rate scheduler built from the config.

The original trains with ``torch.optim.AdamW(model.parameters(), lr=2e-5)``: every parameter in
one group, PyTorch's default weight decay 0.01 on all of them (norms and embeddings included), no
clipping and a constant learning rate. :func:`build_optimizer` reproduces that with the base config
and adds the usual knobs (backbone learning-rate multiplier, separate norm / bias weight decay,
Detectron2's gradient clipping, SGD).
"""

import logging
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as _build_d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = ["build_optimizer", "build_lr_scheduler", "get_optimizer_param_groups"]

logger = logging.getLogger(__name__)

_NORM_MODULE_TYPES = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
# Detectron2's FrozenBatchNorm2d holds buffers only, so it never reaches the norm branch.

#: Prefix of the visual backbone's parameter names in every meta-architecture of the project.
BACKBONE_PREFIX = "backbone."


def get_optimizer_param_groups(
    model: torch.nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_bias: float | None,
    backbone_multiplier: float,
) -> list[dict[str, Any]]:
    """Parameter groups with per-parameter learning rate and weight decay.

    Parameters that do not require a gradient when this is called are included on purpose: the
    original optimises ``model.parameters()``, and the backbone-freeze hook switches
    ``requires_grad`` on later. AdamW and SGD skip a parameter whose ``grad`` is None, so a frozen
    parameter is neither updated nor decayed.

    Args:
        model: the model whose parameters are optimised; a parameter shared by several modules
            appears once.
        base_lr: learning rate of every parameter outside the visual backbone.
        weight_decay: weight decay of ordinary weights.
        weight_decay_norm: weight decay of normalisation-layer parameters.
        weight_decay_bias: weight decay of biases outside norm layers; None = ``weight_decay``.
        backbone_multiplier: learning-rate factor of parameters named ``backbone.*``.

    Returns:
        Merged groups (one per distinct (lr, weight_decay)) for ``torch.optim`` constructors.
    """
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param in seen:
                continue
            seen.add(param)
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr = base_lr
            if full_name.startswith(BACKBONE_PREFIX):
                lr = base_lr * backbone_multiplier
            decay = weight_decay
            if isinstance(module, _NORM_MODULE_TYPES):
                decay = weight_decay_norm
            elif param_name == "bias" and weight_decay_bias is not None:
                decay = weight_decay_bias
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return reduce_param_groups(groups)


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD").

    Reads ``SOLVER.{BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM, WEIGHT_DECAY_BIAS,
    BACKBONE_MULTIPLIER, BETAS, EPS, MOMENTUM, NESTEROV, CLIP_GRADIENTS}``.
    """
    solver = cfg.SOLVER
    groups = get_optimizer_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
    )
    name = solver.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer_cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        optimizer = optimizer_cls(
            groups,
            lr=solver.BASE_LR,
            betas=tuple(solver.BETAS),
            eps=solver.EPS,
            weight_decay=solver.WEIGHT_DECAY,
        )
    elif name == "SGD":
        optimizer_cls = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
        optimizer = optimizer_cls(
            groups,
            lr=solver.BASE_LR,
            momentum=solver.MOMENTUM,
            nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY,
        )
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {solver.OPTIMIZER!r}")
    logger.info(
        "%s over %d parameter groups (backbone lr x%g)",
        name,
        len(groups),
        solver.BACKBONE_MULTIPLIER,
    )
    return optimizer


def build_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler._LRScheduler:
    """Detectron2's scheduler (``WarmupMultiStepLR``: constant when ``SOLVER.STEPS`` is empty and
    ``WARMUP_ITERS`` is 0, as in the original; or ``WarmupCosineLR``).

    It is an ``LRMultiplier``, so each group keeps its own ratio to ``BASE_LR`` (the backbone
    multiplier survives every step) and Detectron2 v0.6's ``LRScheduler`` hook checkpoints it.
    """
    steps = tuple(step for step in cfg.SOLVER.STEPS if step < cfg.SOLVER.MAX_ITER)
    if steps != tuple(cfg.SOLVER.STEPS):
        # A step at or after the last iteration changes nothing, and fvcore rejects one at it.
        logger.warning("SOLVER.STEPS %s >= MAX_ITER are ignored", cfg.SOLVER.STEPS)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.STEPS = steps
    return _build_d2_lr_scheduler(cfg, optimizer)
