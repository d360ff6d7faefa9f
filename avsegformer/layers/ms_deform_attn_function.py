# Multi-scale deformable attention, after Deformable DETR (SenseTime, Apache-2.0) and its copy in
# Mask2Former; rewritten for this project.
"""Multi-scale deformable attention sampling and its backends (the layer is in
:mod:`avsegformer.layers.ms_deform_attn`).

The sampling gathers, for every query, head, level and point, the bilinearly interpolated value at
a fractional location and sums them with the attention weights. Locations are (x, y) in ``[0, 1]``
of each level, mapped to pixel coordinates as ``x * W - 0.5`` (``grid_sample`` with
``align_corners=False``); taps outside the map contribute zero.

Two backends compute it:

- ``"compiled"``: the ``MultiScaleDeformableAttention`` extension built from ``ops/`` (native CPU
  kernels, and CUDA kernels when built with CUDA). An existing Deformable-DETR / Mask2Former build
  of the same name is used too, for CUDA tensors only (those builds have no CPU kernels).
- ``"pytorch"``: :func:`ms_deform_attn_core_pytorch`, ``grid_sample`` based; always available.

``"auto"`` takes the compiled op when it can run the inputs and PyTorch otherwise. Each backend
choice is logged once per device type. Under autocast the op runs in float32.

Without autocast the op runs in the dtype of ``value``: float32, float64, or float16 / bfloat16,
where both backends sum in float32 and return ``value``'s dtype. With a half-precision ``value``
the locations and weights may be float32 (a bfloat16 location is only good to 1/256 of a map).
"""

import functools
import importlib
import logging

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "MSDeformAttnFunction",
    "compiled_op_available",
    "ms_deform_attn",
    "ms_deform_attn_core_pytorch",
    "select_backend",
]

logger = logging.getLogger(__name__)

#: Module name of the compiled extension (the name Deformable-DETR-style builds use).
EXTENSION_NAME = "MultiScaleDeformableAttention"
#: Accepted values of ``impl`` / ``MODEL.SEM_SEG_HEAD.MSDA_IMPL``.
IMPLS = ("auto", "pytorch", "compiled")

_BUILD_HINT = "build it with `pip install --no-build-isolation ./ops` (see ops/README.md)"
# dtypes each kernel family dispatches.
_CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_FOREIGN_CUDA_DTYPES = (torch.float32, torch.float64)
# Batch chunk of the original im2col kernels; only foreign builds use it (ours ignore it).
_MAX_IM2COL_STEP = 64
# (backend, device type) pairs already logged.
_logged_choices: set[tuple[str, str]] = set()


def ms_deform_attn_core_pytorch(value, spatial_shapes, sampling_locations, attention_weights):
    """Pure-PyTorch sampling core.

    Args:
        value: ``[N, S, M, D]``: S = sum of H_l * W_l tokens, M heads of D channels.
        spatial_shapes: ``[L, 2]`` int64, (H_l, W_l) per level.
        sampling_locations: ``[N, Lq, M, L, P, 2]``, (x, y) in [0, 1] per level.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]``, channel index = head * D + d, in ``value``'s dtype; float16 and
        bfloat16 inputs are sampled and summed in float32.
    """
    out_dtype = value.dtype
    if out_dtype in _HALF_DTYPES or sampling_locations.dtype != out_dtype:
        compute = torch.promote_types(torch.float32, sampling_locations.dtype)
        value = value.to(compute)
        sampling_locations = sampling_locations.to(compute)
        attention_weights = attention_weights.to(compute)
    n, _, heads, dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_per_level = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, dim, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(
                value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(n, heads * dim, num_queries).transpose(1, 2).to(out_dtype).contiguous()


# ---------------------------------------------------------------------------------------------
# compiled extension
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _load_extension():
    """Import the extension once. Returns ``(module, None)`` or ``(None, why it is missing)``."""
    try:
        module = importlib.import_module(EXTENSION_NAME)
    except ModuleNotFoundError as exc:
        if exc.name != EXTENSION_NAME:
            raise
        return None, f"the {EXTENSION_NAME} extension is not built"
    except ImportError as exc:
        # Present but unloadable, typically compiled against another torch: worth a warning.
        logger.warning("%s is installed but cannot be imported: %s", EXTENSION_NAME, exc)
        return None, f"the {EXTENSION_NAME} extension cannot be imported ({exc})"
    for name in ("ms_deform_attn_forward", "ms_deform_attn_backward"):
        if not hasattr(module, name):
            return None, f"{EXTENSION_NAME} at {module.__file__} has no {name}()"
    return module, None


def _is_own_build(module) -> bool:
    # Our build exports built_with_cuda(); Deformable-DETR-style builds are CUDA-only.
    return hasattr(module, "built_with_cuda")


def _compiled_unsupported_reason(device: torch.device, dtype: torch.dtype):
    """Why the compiled op cannot run tensors of this device and dtype, or None if it can."""
    module, missing = _load_extension()
    if module is None:
        return missing
    own = _is_own_build(module)
    if device.type == "cpu":
        if not own:
            return f"{EXTENSION_NAME} at {module.__file__} has no CPU kernels (build ops/)"
        if dtype not in _CPU_DTYPES:
            return f"the CPU kernels support float32, float64, float16 and bfloat16, not {dtype}"
        return None
    if device.type == "cuda":
        if own and not module.built_with_cuda():
            return f"{EXTENSION_NAME} was built without CUDA (rebuild ops/ with FORCE_CUDA=1)"
        supported = _CUDA_DTYPES if own else _FOREIGN_CUDA_DTYPES
        if dtype not in supported:
            return f"the CUDA kernels of this build do not support {dtype}"
        return None
    return f"the compiled op has no kernels for {device.type} tensors"


def compiled_op_available(device="cpu", dtype: torch.dtype = torch.float32) -> bool:
    """True when the compiled op can run ``dtype`` tensors on ``device`` ("cpu" or "cuda")."""
    return _compiled_unsupported_reason(torch.device(device), dtype) is None


def _im2col_step(batch: int) -> int:
    # Deformable-DETR builds require batch % im2col_step == 0; the largest divisor up to 64 keeps
    # their chunks large. Our kernels only check that it is positive.
    return max(d for d in range(1, min(batch, _MAX_IM2COL_STEP) + 1) if batch % d == 0)


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled ``ms_deform_attn_forward`` / ``_backward``.

    Same arguments as :func:`ms_deform_attn` (all contiguous; locations and weights in
    ``value``'s dtype, or float32 with a half-precision ``value``) plus ``im2col_step``; returns
    ``[N, Lq, M * D]`` in ``value``'s dtype. First-order gradients only.
    """

    @staticmethod
    def forward(
        ctx,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        module, missing = _load_extension()
        if module is None:
            raise RuntimeError(f"{missing}; {_BUILD_HINT}")
        ctx.im2col_step = im2col_step
        ctx.save_for_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return module.ms_deform_attn_forward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            im2col_step,
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        module, _ = _load_extension()
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = module.ms_deform_attn_backward(
            value,
            spatial_shapes,
            level_start_index,
            locations,
            weights,
            grad_output.contiguous(),
            ctx.im2col_step,
        )
        return grad_value, None, None, grad_locations, grad_weights, None


# ---------------------------------------------------------------------------------------------
# backend selection and the public function
# ---------------------------------------------------------------------------------------------
def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(
            f"unknown deformable-attention implementation {impl!r}; use one of {IMPLS}"
        )


def _log_choice_once(backend: str, device: torch.device, detail: str) -> None:
    key = (backend, device.type)
    if key in _logged_choices:
        return
    _logged_choices.add(key)
    logger.info("Multi-scale deformable attention on %s: %s", device.type, detail)


def select_backend(impl: str, device, dtype: torch.dtype) -> str:
    """The backend (``"compiled"`` or ``"pytorch"``) that runs ``dtype`` tensors on ``device``.

    Raises:
        ValueError: ``impl`` is not one of :data:`IMPLS`.
        RuntimeError: ``impl == "compiled"`` but the compiled op cannot run these tensors.
    """
    _check_impl(impl)
    device = torch.device(device)
    if impl == "pytorch":
        _log_choice_once("pytorch", device, "PyTorch grid_sample path (requested)")
        return "pytorch"
    reason = _compiled_unsupported_reason(device, dtype)
    if reason is None:
        module, _ = _load_extension()
        kernels = "CUDA" if device.type == "cuda" else "native CPU"
        _log_choice_once("compiled", device, f"compiled {kernels} kernels ({module.__file__})")
        return "compiled"
    if impl == "compiled":
        raise RuntimeError(
            f"deformable attention was asked to use the compiled op (impl='compiled'), but "
            f"{reason}; {_BUILD_HINT}, or set MODEL.SEM_SEG_HEAD.MSDA_IMPL to 'auto' or 'pytorch'"
        )
    _log_choice_once("pytorch", device, f"PyTorch grid_sample path, because {reason}")
    return "pytorch"


def _check_dtypes(value, sampling_locations, attention_weights) -> None:
    coords = sampling_locations.dtype
    allowed = (value.dtype, torch.float32) if value.dtype in _HALF_DTYPES else (value.dtype,)
    if coords != attention_weights.dtype or coords not in allowed:
        raise TypeError(
            "sampling_locations and attention_weights must share value's dtype (or be float32 "
            f"with a float16/bfloat16 value), got value {value.dtype}, sampling_locations "
            f"{sampling_locations.dtype}, attention_weights {attention_weights.dtype}"
        )


def _level_start_index(spatial_shapes):
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def ms_deform_attn(
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    impl: str = "auto",
):
    """Multi-scale deformable attention sampling, on the backend chosen by ``impl``.

    Args:
        value: ``[N, S, M, D]``: S = sum of H_l * W_l tokens, M heads of D channels.
        spatial_shapes: ``[L, 2]`` int64, (H_l, W_l) per level.
        level_start_index: ``[L]`` int64, first token of each level in S (None: computed).
        sampling_locations: ``[N, Lq, M, L, P, 2]``, (x, y) in [0, 1] per level; ``value``'s
            dtype, or float32 when ``value`` is float16 or bfloat16.
        attention_weights: ``[N, Lq, M, L, P]``, the dtype of ``sampling_locations``.
        impl: ``"auto"``, ``"pytorch"`` or ``"compiled"`` (see :func:`select_backend`).

    Returns:
        ``[N, Lq, M * D]``, channel index = head * D + d; at least float32 under autocast, else
        the dtype of ``value`` (half types are summed in float32 by either backend).
    """
    device_type = value.device.type
    if torch.is_autocast_enabled(device_type):
        # Bilinear weights and the sums over 4 * L * P taps lose too much in half precision: run
        # in float32 (float64 inputs stay float64, as autocast leaves them).
        dtype = torch.float32
        for tensor in (value, sampling_locations, attention_weights):
            dtype = torch.promote_types(dtype, tensor.dtype)
        with torch.autocast(device_type=device_type, enabled=False):
            return ms_deform_attn(
                value.to(dtype),
                spatial_shapes,
                level_start_index,
                sampling_locations.to(dtype),
                attention_weights.to(dtype),
                impl=impl,
            )
    _check_dtypes(value, sampling_locations, attention_weights)
    if level_start_index is None:
        level_start_index = _level_start_index(spatial_shapes)
    backend = select_backend(impl, value.device, value.dtype)
    if backend == "pytorch":
        return ms_deform_attn_core_pytorch(
            value, spatial_shapes, sampling_locations, attention_weights
        )
    return MSDeformAttnFunction.apply(
        value.contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        _im2col_step(value.shape[0]),
    )
