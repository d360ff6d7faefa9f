"""Low-precision inference: a model converts itself once, instead of autocasting every op.

:func:`convert_for_inference` puts the weights of a model's sub-modules in bfloat16 (or
float16), channels-last, and folds eval-mode BatchNorm into the convolution before it, so that
activations stay in the low dtype from the visual backbone to the mask head. Autocast, by
contrast, keeps float32 weights and casts them and the activations around every op, which on a
CPU costs more than the bfloat16 matrix units save.

What stays float32 is chosen by the layers themselves, where the numerics need it: the
deformable attention's softmax and sampling locations, the normalisation statistics (PyTorch's
CPU LayerNorm / GroupNorm / softmax accumulate half types in float32), and the final
probabilities (the meta-architecture applies sigmoid/softmax to float32 logits). A
meta-architecture names sub-modules that stay float32 entirely in ``float32_modules`` (e.g. the
audio backbone, whose log-mel input and small cost do not pay for the precision loss; or, by a
dotted path, a small module inside a converted one, such as a mixture-of-experts router whose
choices a bfloat16 rounding could flip); each converted sub-module casts its floating inputs to
its dtype once, at its boundary, and so does each nested float32 one (to float32).
"""

import contextlib
import copy
import logging
from collections.abc import Iterable

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = [
    "PRECISIONS",
    "outside_autocast",
    "apply_inference_precision",
    "convert_for_inference",
    "cpu_bfloat16_features",
    "fold_batch_norms",
    "precision_dtype",
]

logger = logging.getLogger(__name__)

#: Values of ``TEST.PRECISION`` and of the tools' ``--precision``, and their dtypes.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype of a precision name (``"fp32"``, ``"bf16"``, ``"fp16"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def _fold_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    # y = (conv(x) - mean) * weight / sqrt(var + eps) + bias, computed in float64 so that the
    # folded float32 weights are as exact as the unfolded ones.
    scale = norm.weight.double() * (norm.running_var.double() + norm.eps).rsqrt()
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - norm.running_mean.double()) * scale + norm.bias.double()
    conv.weight.data = weight.to(conv.weight.dtype)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batch_norms(model: nn.Module) -> int:
    """Fold eval-mode BatchNorm into the Detectron2 ``Conv2d`` that owns it (``conv.norm``).

    Only for inference: the folded model computes the same function (up to rounding) but has
    no BatchNorm left to train. Returns the number of folded layers.
    """
    folded = 0
    for module in model.modules():
        if not isinstance(module, Conv2d) or module.norm is None:
            continue
        norm = module.norm
        frozen = isinstance(norm, FrozenBatchNorm2d)
        if not (frozen or (isinstance(norm, nn.BatchNorm2d) and not norm.training)):
            continue
        if not frozen and (norm.running_mean is None or not norm.affine):
            continue
        _fold_into_conv(module, norm)
        module.norm = None
        folded += 1
    return folded


def _cast_floating(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _cast_floating(item, dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floating(item, dtype) for item in value)
    return value


def outside_autocast(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in float32 under mixed-precision training: autocast off,
    floating tensors among the arguments (also inside lists, tuples and dicts) cast to float32.

    For what training keeps in float32 under ``SOLVER.AMP.ENABLED``: the frozen audio backbone
    and the losses (sigmoid/softmax, dice and cross-entropy sums, matching costs).
    """
    device_types = {
        t.device.type for t in _tensors((args, kwargs)) if t.device.type in ("cpu", "cuda")
    }
    args, kwargs = _cast_floating(args, torch.float32), _cast_floating(kwargs, torch.float32)
    with contextlib.ExitStack() as stack:
        for device_type in device_types or {"cpu"}:
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        return function(*args, **kwargs)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _cast_inputs_hook(dtype: torch.dtype):
    def hook(module, args, kwargs):
        return _cast_floating(args, dtype), _cast_floating(kwargs, dtype)

    return hook


def convert_for_inference(
    model: nn.Module,
    dtype: torch.dtype,
    *,
    float32_modules: Iterable[str] = (),
    channels_last: bool = True,
) -> nn.Module:
    """Convert an eval-mode model, in place, to run inference in ``dtype``.

    Every direct sub-module of ``model`` except those named in ``float32_modules`` gets its
    eval-mode BatchNorm folded into the preceding convolution, its parameters and floating
    buffers in ``dtype`` (4-d weights channels-last) and a forward pre-hook that casts its
    floating inputs to ``dtype``. The top-level module's own buffers (e.g. the pixel
    normalisation) and the ``float32_modules`` keep their dtype; a nested one (dotted path)
    keeps its float32 values exactly and gets a pre-hook casting its inputs to float32, so its
    outputs are float32. ``float32`` only folds the BatchNorms and sets channels-last.

    Args:
        model: the model, weights loaded, in eval mode.
        dtype: ``torch.bfloat16``, ``torch.float16`` or ``torch.float32``.
        float32_modules: names of sub-modules kept in float32: direct children, or dotted
            paths (``"mixer.channel_attn.gate"``) of modules inside converted ones.
        channels_last: store 4-d weights channels-last (oneDNN's preferred layout).

    Returns:
        ``model``.
    """
    if model.training:
        raise ValueError("convert_for_inference needs an eval-mode model (call model.eval())")
    keep = set(float32_modules)
    modules = dict(model.named_modules())
    unknown = {name for name in keep if not name or name not in modules}
    if unknown:
        raise ValueError(f"float32_modules {sorted(unknown)} are not sub-modules of the model")
    folded = 0
    for name, child in model.named_children():
        if name in keep:
            continue
        folded += fold_batch_norms(child)
        if channels_last:
            child.to(memory_format=torch.channels_last)
        if dtype != torch.float32:
            nested = [path for path in keep if path.startswith(f"{name}.")]
            float32_states = {path: copy.deepcopy(modules[path].state_dict()) for path in nested}
            child.to(dtype)
            child.register_forward_pre_hook(_cast_inputs_hook(dtype), with_kwargs=True)
            for path, state in float32_states.items():
                # Back to float32 with the values before the cast, not their rounded copies.
                modules[path].to(torch.float32).load_state_dict(state)
                modules[path].register_forward_pre_hook(
                    _cast_inputs_hook(torch.float32), with_kwargs=True
                )
    logger.info(
        "Inference in %s (float32: %s); %d BatchNorm layers folded",
        dtype,
        ", ".join(sorted(keep)) or "nothing",
        folded,
    )
    return model


def apply_inference_precision(model: nn.Module, precision: str) -> nn.Module:
    """Run ``model`` (eval mode, weights loaded) at ``precision`` (``TEST.PRECISION``).

    ``"fp32"`` leaves the model as it is. Otherwise the model is converted in place by
    :func:`convert_for_inference`, keeping the sub-modules its class lists in
    ``float32_modules`` in float32; a model without that attribute cannot be converted (its
    outputs might not be float32).
    """
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return model
    if not hasattr(model, "float32_modules"):
        raise ValueError(
            f"{type(model).__name__} does not support TEST.PRECISION={precision!r} (it declares "
            "no float32_modules); use 'fp32'"
        )
    return convert_for_inference(model.eval(), dtype, float32_modules=model.float32_modules)


def cpu_bfloat16_features(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's bfloat16 matrix support: ``"AMX"`` (AMX-BF16 tiles, also listing
    ``AVX512-BF16`` when present), ``"AVX512-BF16"``, ``"neither"``, or ``"unknown"`` where
    ``cpuinfo`` cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return "unknown"
    found = [
        name
        for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))
        if flag in flags
    ]
    return "+".join(found) or "neither"
