"""Optimizer and learning-rate scheduler built from the config.

The original AVSegFormer trains with ``torch.optim.AdamW(model.parameters(), lr=2e-5)``: every
parameter in one group, PyTorch's default weight decay 0.01 on all of them (norms and embeddings
included), no clipping and a constant learning rate. :func:`build_optimizer` reproduces that with
the base config and adds the knobs the Mask2Former-family recipes use: a learning-rate multiplier
for every visual backbone of a model, separate norm / bias / embedding weight decay, Detectron2's
per-parameter gradient clipping or Mask2Former's full-model clipping, SGD; and
:func:`build_lr_scheduler` adds DeepLab's ``WarmupPolyLR``.
"""

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.solver import build_lr_scheduler as _build_d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = [
    "DEFAULT_VISUAL_BACKBONE_PREFIXES",
    "build_lr_scheduler",
    "build_optimizer",
    "get_optimizer_param_groups",
    "maybe_add_full_model_gradient_clipping",
    "visual_backbone_prefixes",
]

logger = logging.getLogger(__name__)

_NORM_MODULE_TYPES = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
# Detectron2's FrozenBatchNorm2d holds buffers only, so it never reaches the norm branch.

#: Parameter-name prefixes of a model's visual backbones when the model names none.
DEFAULT_VISUAL_BACKBONE_PREFIXES = ("backbone.",)

#: ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` of Mask2Former's clipping over all parameters at once.
FULL_MODEL_CLIP_TYPE = "full_model"


def visual_backbone_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the model's visual backbones, the parameters that get
    ``SOLVER.BACKBONE_MULTIPLIER``.

    A meta-architecture with more than one visual backbone lists them in a
    ``visual_backbone_prefixes`` attribute (e.g. ``("backbone.", "pre_sam_backbone.")``); an
    audio backbone is never one of them. Without the attribute: ``("backbone.",)``.
    """
    prefixes = getattr(model, "visual_backbone_prefixes", DEFAULT_VISUAL_BACKBONE_PREFIXES)
    if isinstance(prefixes, str) or not all(isinstance(p, str) and p for p in prefixes):
        raise TypeError(
            f"{type(model).__name__}.visual_backbone_prefixes must be a sequence of non-empty "
            f"parameter-name prefixes, got {prefixes!r}"
        )
    return tuple(prefixes)


def get_optimizer_param_groups(
    model: torch.nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_bias: float | None,
    backbone_multiplier: float,
    weight_decay_embed: float | None = None,
    backbone_prefixes: Sequence[str] = DEFAULT_VISUAL_BACKBONE_PREFIXES,
) -> list[dict[str, Any]]:
    """Parameter groups with per-parameter learning rate and weight decay.

    Parameters that do not require a gradient when this is called are included on purpose: the
    original optimises ``model.parameters()``, and the backbone-freeze hook switches
    ``requires_grad`` on later. AdamW and SGD skip a parameter whose ``grad`` is None, so a frozen
    parameter is neither updated nor decayed.

    Weight decay is chosen by the module that owns the parameter: norm layers get
    ``weight_decay_norm``, ``nn.Embedding`` weights ``weight_decay_embed``, other biases
    ``weight_decay_bias``. A bare ``nn.Parameter`` of any other module (a learned level
    embedding, a layer scale) is an ordinary weight.

    Args:
        model: the model whose parameters are optimised; a parameter shared by several modules
            appears once.
        base_lr: learning rate of every parameter outside the visual backbones.
        weight_decay: weight decay of ordinary weights.
        weight_decay_norm: weight decay of normalisation-layer parameters.
        weight_decay_bias: weight decay of biases outside norm layers; None = ``weight_decay``.
        backbone_multiplier: learning-rate factor of parameters under ``backbone_prefixes``.
        weight_decay_embed: weight decay of ``nn.Embedding`` weights; None = ``weight_decay``.
        backbone_prefixes: parameter-name prefixes of the visual backbones.

    Returns:
        Merged groups (one per distinct (lr, weight_decay)) for ``torch.optim`` constructors.
    """
    prefixes = tuple(backbone_prefixes)
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param in seen:
                continue
            seen.add(param)
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            lr = base_lr
            if full_name.startswith(prefixes):
                lr = base_lr * backbone_multiplier
            decay = weight_decay
            if isinstance(module, _NORM_MODULE_TYPES):
                decay = weight_decay_norm
            elif isinstance(module, torch.nn.Embedding):
                if weight_decay_embed is not None:
                    decay = weight_decay_embed
            elif param_name == "bias" and weight_decay_bias is not None:
                decay = weight_decay_bias
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return reduce_param_groups(groups)


def maybe_add_full_model_gradient_clipping(
    cfg: CfgNode, optimizer_cls: type[torch.optim.Optimizer]
) -> type[torch.optim.Optimizer]:
    """``optimizer_cls``, or a subclass whose ``step`` first clips the gradient norm of all its
    parameters together (one ``clip_grad_norm_``, Mask2Former's "full_model" clipping) when
    ``SOLVER.CLIP_GRADIENTS`` is enabled with ``CLIP_TYPE: "full_model"``.

    ``CLIP_VALUE`` is the maximal norm and ``NORM_TYPE`` its order (2.0 = Mask2Former's L2).
    Under a gradient scaler the clipping sees the unscaled gradients: ``GradScaler.step``
    unscales before it calls ``step``.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL_CLIP_TYPE):
        return optimizer_cls
    max_norm = float(clip.CLIP_VALUE)
    norm_type = float(clip.NORM_TYPE)
    if max_norm <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {max_norm}")

    class FullModelGradientClipping(optimizer_cls):
        def step(self, closure=None):
            params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClipping.__name__ = f"FullModelGradientClipping{optimizer_cls.__name__}"
    return FullModelGradientClipping


def _add_gradient_clipping(cfg: CfgNode, optimizer_cls):
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == FULL_MODEL_CLIP_TYPE:
        return maybe_add_full_model_gradient_clipping(cfg, optimizer_cls)
    # Detectron2's per-parameter "value" / "norm" clipping.
    return maybe_add_gradient_clipping(cfg, optimizer_cls)


def _fused_on_cpu(groups: list[dict]) -> bool:
    """Use PyTorch's fused AdamW kernel: when every parameter is a floating-point CPU tensor.

    The fused kernel makes the same update as the default one in one pass per tensor, where
    the default (on CPU) runs ~10 element-wise operations per parameter tensor from Python,
    about a tenth of the tiny synthetic COMBO's training step in a profile. Not on CUDA, where
    the default is already multi-tensor, and where a gradient scaler would hand a fused
    optimizer its gradients still scaled (full-model clipping must see them unscaled).
    """
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type == "cpu" for p in params)


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD").

    Reads ``SOLVER.{BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM, WEIGHT_DECAY_BIAS,
    WEIGHT_DECAY_EMBED, BACKBONE_MULTIPLIER, BETAS, EPS, MOMENTUM, NESTEROV, CLIP_GRADIENTS}``;
    the backbone multiplier applies to :func:`visual_backbone_prefixes` of ``model``.
    """
    solver = cfg.SOLVER
    prefixes = visual_backbone_prefixes(model)
    groups = get_optimizer_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
        weight_decay_embed=solver.WEIGHT_DECAY_EMBED,
        backbone_prefixes=prefixes,
    )
    name = solver.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer_cls = _add_gradient_clipping(cfg, torch.optim.AdamW)
        optimizer = optimizer_cls(
            groups,
            lr=solver.BASE_LR,
            betas=tuple(solver.BETAS),
            eps=solver.EPS,
            weight_decay=solver.WEIGHT_DECAY,
            fused=_fused_on_cpu(groups),
        )
    elif name == "SGD":
        optimizer_cls = _add_gradient_clipping(cfg, torch.optim.SGD)
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
        "%s over %d parameter groups (lr x%g for %s)",
        name,
        len(groups),
        solver.BACKBONE_MULTIPLIER,
        ", ".join(f"{p}*" for p in prefixes),
    )
    return optimizer


def build_lr_scheduler(
    cfg: CfgNode, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler._LRScheduler:
    """The scheduler named by ``SOLVER.LR_SCHEDULER_NAME``.

    * ``WarmupMultiStepLR`` (constant when ``SOLVER.STEPS`` is empty and ``WARMUP_ITERS`` is 0,
      as in the original AVSegFormer) and ``WarmupCosineLR``: Detectron2's, an ``LRMultiplier``.
    * ``WarmupPolyLR``: DeepLab's / Mask2Former's ``lr = base_lr * (1 - it / MAX_ITER) **
      POLY_LR_POWER`` after the warm-up, held at ``base_lr * POLY_LR_CONSTANT_ENDING`` once the
      curve falls below that factor (0 = never).

    Every one scales each group's own initial lr, so the backbone multiplier survives every
    step, and Detectron2 v0.6's ``LRScheduler`` hook checkpoints them.
    """
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME == "WarmupPolyLR":
        return WarmupPolyLR(
            optimizer,
            s.MAX_ITER,
            warmup_factor=s.WARMUP_FACTOR,
            warmup_iters=s.WARMUP_ITERS,
            warmup_method=s.WARMUP_METHOD,
            power=s.POLY_LR_POWER,
            constant_ending=s.POLY_LR_CONSTANT_ENDING,
        )
    steps = tuple(step for step in s.STEPS if step < s.MAX_ITER)
    if steps != tuple(s.STEPS):
        # A step at or after the last iteration changes nothing, and fvcore rejects one at it.
        logger.warning("SOLVER.STEPS %s >= MAX_ITER are ignored", s.STEPS)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.STEPS = steps
    return _build_d2_lr_scheduler(cfg, optimizer)
