"""Multi-scale deformable attention: native CPU kernels, PyTorch path, original-code fixture,
backend selection, autocast, and GPU parity (skipped without a GPU).

The compiled tests need the extension (``pip install --no-build-isolation ./ops``, part of the
environment set-up) and fail without it, so the native kernels can never go untested.
"""

import importlib
import logging
import sys

import pytest
import torch
from helpers import load_fixture, load_tool

from avsegformer.layers import (
    MSDeformAttn,
    MSDeformAttnFunction,
    compiled_op_available,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)

# The backends' internals (extension cache, logged choices) live in the function module.
msda = importlib.import_module("avsegformer.layers.ms_deform_attn_function")
HAS_CUDA = torch.cuda.is_available()
# float64 kernels and float64 grid_sample differ only by rounding.
F64_TOL = {"rtol": 1e-9, "atol": 1e-10}
# float32 against the float64 fixture: the README's suggested atol (10x float32-vs-float64).
F32_TOL = {
    "output": {"rtol": 1e-4, "atol": 4e-6},
    "grad_value": {"rtol": 1e-4, "atol": 4e-6},
    "grad_sampling_locations": {"rtol": 1e-4, "atol": 2e-4},
    "grad_attention_weights": {"rtol": 1e-4, "atol": 6e-5},
}


def require_compiled(device="cpu", dtype=torch.float32):
    """Fail when the compiled op cannot run these tensors: the native kernels are part of the
    environment (``make setup`` builds them), so a missing build must never pass unnoticed."""
    reason = msda._compiled_unsupported_reason(torch.device(device), dtype)
    if reason is not None:
        pytest.fail(
            f"the compiled deformable-attention op cannot run {dtype} on {device}: {reason} "
            "(build it with `pip install --no-build-isolation ./ops`)",
            pytrace=False,
        )


@pytest.fixture
def fresh_backend_state():
    """Forget the cached extension import and the logged choices, before and after the test."""
    msda._load_extension.cache_clear()
    msda._logged_choices.clear()
    yield
    msda._load_extension.cache_clear()
    msda._logged_choices.clear()


def level_start_index(shapes):
    areas = shapes[:, 0] * shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def run_with_grads(impl, value, shapes, locations, weights, grad_output):
    """Forward and the three input gradients of ``ms_deform_attn`` on backend ``impl``."""
    inputs = [t.detach().clone().requires_grad_() for t in (value, locations, weights)]
    output = ms_deform_attn(
        inputs[0], shapes, level_start_index(shapes), inputs[1], inputs[2], impl=impl
    )
    output.backward(grad_output)
    return {
        "output": output.detach(),
        "grad_value": inputs[0].grad,
        "grad_sampling_locations": inputs[1].grad,
        "grad_attention_weights": inputs[2].grad,
    }


def random_case(generator, *, dtype=torch.float64, device="cpu", max_levels=4):
    """A random call with odd, non-square levels and locations reaching past every border."""

    def randint(low, high):
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    batch, queries = randint(1, 3), randint(1, 7)
    levels, heads, points, channels = (
        randint(1, max_levels),
        randint(1, 8),
        randint(1, 8),
        randint(1, 9),
    )
    shapes = torch.tensor([[randint(1, 9), randint(1, 9)] for _ in range(levels)])
    tokens = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(batch, tokens, heads, channels, generator=generator, dtype=dtype)
    locations = (
        torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=dtype) * 1.6
        - 0.3
    )
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=dtype)
    grad_output = torch.randn(batch, queries, heads * channels, generator=generator, dtype=dtype)
    return [t.to(device) for t in (value, shapes, locations, weights, grad_output)]


# ---------------------------------------------------------------------------------------------
# against the original code's fixture
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["compiled", "pytorch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_core_matches_reference_fixture(impl, dtype):
    if impl == "compiled":
        require_compiled(dtype=dtype)
    core = load_fixture("msdeform.pt")["core"]
    inputs = core["inputs"]
    shapes = inputs["value_spatial_shapes"]
    # The fixture's sampling points reach 0.25 past every border: zero padding matters.
    outside = (inputs["sampling_locations"] < 0) | (inputs["sampling_locations"] > 1)
    assert outside.any(-1).float().mean() > 0.3

    results = run_with_grads(
        impl,
        inputs["value"].to(dtype),
        shapes,
        inputs["sampling_locations"].to(dtype),
        inputs["attention_weights"].to(dtype),
        inputs["grad_output"].to(dtype),
    )
    for name, result in results.items():
        assert result.dtype == dtype, name
        tolerance = F64_TOL if dtype == torch.float64 else F32_TOL[name]
        torch.testing.assert_close(result.double(), core[name], **tolerance, msg=name)
    if dtype == torch.float32:
        torch.testing.assert_close(
            results["output"], core["float32"]["output"], **F32_TOL["output"]
        )


@pytest.mark.parametrize("impl", ["compiled", "pytorch"])
@pytest.mark.parametrize("case", ["init", "perturbed"])
def test_module_matches_reference_fixture(impl, case):
    if impl == "compiled":
        require_compiled()
    fx = load_fixture("msdeform.pt")["module"]
    cfg = load_fixture("msdeform.pt")["config"]
    module = MSDeformAttn(
        cfg["d_model"], cfg["n_levels"], cfg["n_heads"], cfg["n_points"], impl=impl
    ).eval()
    module.load_state_dict(fx[case]["state_dict"])
    inputs = fx["inputs"]
    with torch.no_grad():
        output = module(
            inputs["query"],
            inputs["reference_points"],
            inputs["input_flatten"],
            inputs["input_spatial_shapes"],
            inputs["input_level_start_index"],
            None,
        )
    atol = 5e-6 if case == "init" else 2e-5
    torch.testing.assert_close(output, fx[case]["output"], rtol=1e-4, atol=atol)


# ---------------------------------------------------------------------------------------------
# native CPU kernels against the PyTorch path
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_compiled_matches_pytorch_on_random_shapes(seed):
    require_compiled(dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    value, shapes, locations, weights, grad_output = random_case(generator)
    compiled = run_with_grads("compiled", value, shapes, locations, weights, grad_output)
    reference = run_with_grads("pytorch", value, shapes, locations, weights, grad_output)
    for name in compiled:
        torch.testing.assert_close(compiled[name], reference[name], **F64_TOL, msg=name)


def test_compiled_float32_matches_float64():
    require_compiled()
    generator = torch.Generator().manual_seed(100)
    case64 = random_case(generator)
    case32 = [t.float() if t.is_floating_point() else t for t in case64]
    results64 = run_with_grads("compiled", *case64)
    results32 = run_with_grads("compiled", *case32)
    for name in results64:
        assert results32[name].dtype == torch.float32
        torch.testing.assert_close(
            results32[name].double(), results64[name], rtol=1e-4, atol=1e-4, msg=name
        )


def test_points_outside_the_maps_contribute_nothing():
    require_compiled(dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    value, shapes, locations, weights, grad_output = random_case(generator)
    # Every point at least one pixel outside its level (x or y beyond the border + 1/size).
    sides = torch.randint(0, 2, locations.shape, generator=generator).bool()
    far = torch.where(sides, -1.01 - locations.abs(), 2.01 + locations.abs())
    results = run_with_grads("compiled", value, shapes, far, weights, grad_output)
    for name, result in results.items():
        assert torch.count_nonzero(result) == 0, name

    # Half a pixel out: only the inside neighbours count, exactly like grid_sample.
    sizes = shapes.flip(-1).to(value.dtype)[None, None, None, :, None, :]
    near = torch.where(sides, -0.4 / sizes, 1 + 0.4 / sizes).expand_as(locations)
    compiled = run_with_grads("compiled", value, shapes, near, weights, grad_output)
    reference = run_with_grads("pytorch", value, shapes, near, weights, grad_output)
    assert torch.count_nonzero(compiled["output"]) > 0
    for name in compiled:
        torch.testing.assert_close(compiled[name], reference[name], **F64_TOL, msg=name)


def test_gradcheck_float64():
    require_compiled(dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    shapes = torch.tensor([[3, 5], [2, 3]])
    starts = level_start_index(shapes)
    value = torch.randn(2, 21, 2, 3, dtype=torch.float64, generator=generator)
    locations = torch.rand(2, 4, 2, 2, 3, 2, dtype=torch.float64, generator=generator) * 1.2 - 0.1
    weights = torch.rand(2, 4, 2, 2, 3, dtype=torch.float64, generator=generator)
    inputs = (
        value.requires_grad_(),
        shapes,
        starts,
        locations.requires_grad_(),
        weights.requires_grad_(),
        2,
    )
    assert torch.autograd.gradcheck(MSDeformAttnFunction.apply, inputs, eps=1e-6, atol=1e-5)


def test_backward_is_deterministic_across_thread_counts():
    require_compiled()
    generator = torch.Generator().manual_seed(11)
    case = [t.float() if t.is_floating_point() else t for t in random_case(generator)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run_with_grads("compiled", *case)
        torch.set_num_threads(2)
        double = run_with_grads("compiled", *case)
    finally:
        torch.set_num_threads(threads)
    for name in single:
        assert torch.equal(single[name], double[name]), name


def test_compiled_rejects_levels_outside_value():
    require_compiled()
    value = torch.randn(1, 10, 2, 4)
    shapes = torch.tensor([[3, 4]])  # 12 tokens, value has 10
    locations = torch.rand(1, 3, 2, 1, 2, 2)
    weights = torch.rand(1, 3, 2, 1, 2)
    with pytest.raises(RuntimeError, match="does not fit"):
        ms_deform_attn(
            value, shapes, level_start_index(shapes), locations, weights, impl="compiled"
        )
    with pytest.raises(TypeError, match="share value.s dtype"):
        ms_deform_attn(value, shapes, None, locations.double(), weights, impl="compiled")


# ---------------------------------------------------------------------------------------------
# float16 / bfloat16: read as they are, summed in float32, rounded once
# ---------------------------------------------------------------------------------------------
# The half kernels run the float32 kernels' arithmetic on the rounded inputs and round each result
# once: they agree with float32 on the same inputs to one unit in the last place of the half type
# (relative 2**-8 for bfloat16, 2**-10 for float16; atol for results that cancel to ~0).
HALF_TOL = {
    torch.bfloat16: {"rtol": 2.0**-8, "atol": 1e-5},
    torch.float16: {"rtol": 2.0**-10, "atol": 1e-5},
}
HALF_DTYPES = pytest.mark.parametrize(
    "dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"]
)


def half_case(generator, dtype, *, float32_coords=False, device="cpu"):
    """A random case in ``dtype`` (locations and weights float32 if asked), and the same rounded
    values in float32."""
    value, shapes, locations, weights, grad_output = random_case(generator, dtype=torch.float32)
    value, grad_output = value.to(dtype), grad_output.to(dtype)
    if not float32_coords:
        locations, weights = locations.to(dtype), weights.to(dtype)
    case = [t.to(device) for t in (value, shapes, locations, weights, grad_output)]
    reference = [t.float() if t.is_floating_point() else t for t in case]
    return case, reference


@HALF_DTYPES
@pytest.mark.parametrize("float32_coords", [False, True], ids=["half-coords", "float32-coords"])
@pytest.mark.parametrize("seed", range(3))
def test_cpu_half_precision_kernels_round_the_float32_result(dtype, float32_coords, seed):
    require_compiled(dtype=dtype)
    generator = torch.Generator().manual_seed(200 + seed)
    case, reference_case = half_case(generator, dtype, float32_coords=float32_coords)
    half = run_with_grads("compiled", *case)
    reference = run_with_grads("compiled", *reference_case)
    coord_dtype = torch.float32 if float32_coords else dtype
    expected_dtypes = {
        "output": dtype,
        "grad_value": dtype,
        "grad_sampling_locations": coord_dtype,
        "grad_attention_weights": coord_dtype,
    }
    for name, result in half.items():
        assert result.dtype == expected_dtypes[name], name
        torch.testing.assert_close(result.float(), reference[name], **HALF_TOL[dtype], msg=name)
    # Rounding the float32 result, not a half-precision sum: most outputs are bit-identical.
    exact = half["output"] == reference["output"].to(dtype)
    assert exact.float().mean() > 0.95


@HALF_DTYPES
def test_pytorch_path_runs_half_precision_like_the_kernels(dtype):
    require_compiled(dtype=dtype)
    generator = torch.Generator().manual_seed(210)
    for float32_coords in (False, True):
        case, _ = half_case(generator, dtype, float32_coords=float32_coords)
        compiled = run_with_grads("compiled", *case)
        pytorch = run_with_grads("pytorch", *case)
        for name in compiled:
            assert pytorch[name].dtype == compiled[name].dtype, name
            # Both sum in float32 (in different orders) and round once.
            torch.testing.assert_close(
                pytorch[name].float(), compiled[name].float(), **HALF_TOL[dtype], msg=name
            )


def test_half_value_needs_float32_or_matching_coordinates():
    generator = torch.Generator().manual_seed(211)
    value, shapes, locations, weights, _ = random_case(generator, dtype=torch.float32)
    for impl in ("auto", "pytorch"):
        with pytest.raises(TypeError, match="share value.s dtype"):
            ms_deform_attn(value, shapes, None, locations.bfloat16(), weights.bfloat16(), impl=impl)
        with pytest.raises(TypeError, match="share value.s dtype"):
            ms_deform_attn(value.bfloat16(), shapes, None, locations, weights.half(), impl=impl)


def test_bfloat16_layer_keeps_float32_locations_and_matches_float32(monkeypatch):
    require_compiled(dtype=torch.bfloat16)
    torch.manual_seed(12)
    module = MSDeformAttn(32, 2, 4, 2).eval()
    with torch.no_grad():  # non-trivial offsets and weights
        module.sampling_offsets.weight.normal_(0, 0.2)
        module.attention_weights.weight.normal_(0, 0.2)
    shapes = torch.tensor([[6, 7], [3, 4]])
    query, inputs = torch.randn(2, 9, 32), torch.randn(2, 54, 32)
    reference_points = torch.rand(2, 9, 2, 2)
    seen = []
    original = msda.MSDeformAttnFunction.apply

    def spy(value, shapes_, starts, locations, weights, step):
        seen.append((value.dtype, locations.dtype, weights.dtype))
        return original(value, shapes_, starts, locations, weights, step)

    with torch.no_grad():
        expected = module(query, reference_points, inputs, shapes, None)
        half = module.to(torch.bfloat16)
        monkeypatch.setattr(msda.MSDeformAttnFunction, "apply", spy)
        output = half(query.bfloat16(), reference_points, inputs.bfloat16(), shapes, None)
    assert seen == [(torch.bfloat16, torch.float32, torch.float32)]
    assert output.dtype == torch.bfloat16
    # Weights, inputs and the four linear layers are rounded to bfloat16: a few percent.
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------
# backend selection and mixed precision
# ---------------------------------------------------------------------------------------------
def test_missing_extension_falls_back_to_pytorch_and_logs(monkeypatch, caplog, fresh_backend_state):
    # None in sys.modules makes the import fail exactly like an extension that was never built.
    monkeypatch.setitem(sys.modules, msda.EXTENSION_NAME, None)
    assert not compiled_op_available()
    generator = torch.Generator().manual_seed(5)
    value, shapes, locations, weights, _ = random_case(generator)
    with caplog.at_level(logging.INFO, logger=msda.__name__):
        output = ms_deform_attn(value, shapes, None, locations, weights)
        ms_deform_attn(value, shapes, None, locations, weights)
    expected = ms_deform_attn_core_pytorch(value, shapes, locations, weights)
    assert torch.equal(output, expected)
    messages = [r.getMessage() for r in caplog.records if r.name == msda.__name__]
    assert len(messages) == 1, messages  # logged once, not per call
    assert "PyTorch" in messages[0] and "not built" in messages[0]

    with pytest.raises(RuntimeError, match="pip install --no-build-isolation ./ops"):
        ms_deform_attn(value, shapes, None, locations, weights, impl="compiled")
    module = MSDeformAttn(32, 2, 4, 2, impl="compiled")
    query = torch.randn(1, 5, 32)
    shapes = torch.tensor([[2, 3], [1, 2]])
    with pytest.raises(RuntimeError, match="impl='compiled'"):
        module(query, torch.rand(1, 5, 2, 2), torch.randn(1, 8, 32), shapes, None)


def test_auto_selects_compiled_kernels_and_logs(caplog, fresh_backend_state):
    require_compiled()
    generator = torch.Generator().manual_seed(6)
    case = [t.float() if t.is_floating_point() else t for t in random_case(generator)]
    value, shapes, locations, weights, _ = case
    with caplog.at_level(logging.INFO, logger=msda.__name__):
        ms_deform_attn(value, shapes, None, locations, weights)
    assert msda.select_backend("auto", "cpu", torch.float32) == "compiled"
    messages = [r.getMessage() for r in caplog.records if r.name == msda.__name__]
    assert len(messages) == 1 and "native CPU" in messages[0], messages
    # Half types have CPU kernels; complex numbers do not: auto falls back, compiled refuses.
    for dtype in (torch.float16, torch.bfloat16):
        assert msda.select_backend("auto", "cpu", dtype) == "compiled"
    assert msda.select_backend("auto", "cpu", torch.complex64) == "pytorch"
    with pytest.raises(RuntimeError, match="complex64"):
        msda.select_backend("compiled", "cpu", torch.complex64)


def test_foreign_cuda_only_build_is_not_used_on_cpu(monkeypatch, fresh_backend_state):
    class DeformableDetrBuild:  # the Deformable-DETR interface, without our CPU kernels
        __file__ = "/elsewhere/MultiScaleDeformableAttention.so"

        @staticmethod
        def ms_deform_attn_forward(*args):
            raise AssertionError("a CUDA-only build must not be called with CPU tensors")

        ms_deform_attn_backward = ms_deform_attn_forward

    monkeypatch.setitem(sys.modules, msda.EXTENSION_NAME, DeformableDetrBuild)
    assert not compiled_op_available("cpu")
    assert msda.select_backend("auto", "cpu", torch.float32) == "pytorch"
    with pytest.raises(RuntimeError, match="no CPU kernels"):
        msda.select_backend("compiled", "cpu", torch.float32)


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="unknown deformable-attention implementation"):
        MSDeformAttn(32, 2, 4, 2, impl="cuda")
    with pytest.raises(ValueError, match="unknown deformable-attention implementation"):
        ms_deform_attn(
            torch.zeros(1, 1, 1, 1),
            torch.tensor([[1, 1]]),
            None,
            torch.zeros(1, 1, 1, 1, 1, 2),
            torch.zeros(1, 1, 1, 1, 1),
            impl="fast",
        )


@pytest.mark.parametrize("impl", ["auto", "pytorch"])
def test_autocast_runs_the_op_in_float32(impl):
    generator = torch.Generator().manual_seed(8)
    value, shapes, locations, weights, _ = random_case(generator, dtype=torch.float32)
    expected = ms_deform_attn(value, shapes, None, locations, weights, impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = ms_deform_attn(
            value.bfloat16(), shapes, None, locations, weights.bfloat16(), impl=impl
        )
    assert output.dtype == torch.float32
    # Only the inputs were rounded to bfloat16 (8 bits of mantissa).
    torch.testing.assert_close(output, expected, rtol=0.02, atol=0.03)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output64 = ms_deform_attn(
            value.double(), shapes, None, locations.double(), weights.double(), impl=impl
        )
    assert output64.dtype == torch.float64  # autocast never lowers float64


def test_module_under_autocast_returns_finite_values():
    module = MSDeformAttn(32, 2, 4, 2)
    shapes = torch.tensor([[3, 4], [2, 1]])
    query, inputs = torch.randn(2, 5, 32), torch.randn(2, 14, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = module(query, torch.rand(2, 5, 2, 2), inputs, shapes, level_start_index(shapes))
    assert output.shape == (2, 5, 32) and torch.isfinite(output).all()


def test_benchmark_tool_times_every_backend(capsys):
    benchmark = load_tool("benchmark_ms_deform_attn")
    argv = ["--sizes", "40", "--frames", "1", "--threads", "1", "--repeats", "1"]
    results = benchmark.main(argv)
    backends = {"pytorch", "compiled"} if compiled_op_available() else {"pytorch"}
    assert {key[3] for key in results} == backends
    assert {key[1:3] for key in results} == {
        (workload, name) for workload in ("op", "layer") for name in ("forward", "fwd+bwd")
    }
    assert all(ms > 0 for ms in results.values())
    assert "speed-up" in capsys.readouterr().out or backends == {"pytorch"}


# ---------------------------------------------------------------------------------------------
# GPU parity (runs where a GPU and a CUDA build exist)
# ---------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_cuda_kernels_match_pytorch_and_cpu(dtype, seed):
    require_compiled("cuda", dtype)
    generator = torch.Generator().manual_seed(seed)
    case = [t.to(dtype) if t.is_floating_point() else t for t in random_case(generator)]
    cuda_case = [t.cuda() for t in case]
    gpu = run_with_grads("compiled", *cuda_case)
    gpu_reference = run_with_grads("pytorch", *cuda_case)
    tolerance = F64_TOL if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for name in gpu:
        torch.testing.assert_close(gpu[name], gpu_reference[name], **tolerance, msg=name)
    if compiled_op_available("cpu", dtype):
        cpu = run_with_grads("compiled", *case)
        for name in gpu:
            torch.testing.assert_close(gpu[name].cpu(), cpu[name], **tolerance, msg=name)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_cuda_half_precision_kernels(dtype):
    require_compiled("cuda", dtype)
    generator = torch.Generator().manual_seed(9)
    case = [t.float().cuda() if t.is_floating_point() else t.cuda() for t in random_case(generator)]
    half_case = [t.to(dtype) if t.is_floating_point() else t for t in case]
    reference = run_with_grads(
        "compiled", *[t.to(dtype).float() if t.is_floating_point() else t for t in case]
    )
    half = run_with_grads("compiled", *half_case)
    for name in half:
        assert half[name].dtype == dtype, name
        torch.testing.assert_close(
            half[name].float(), reference[name], rtol=0.02, atol=0.05, msg=name
        )


@pytest.mark.gpu
@cuda_only
@HALF_DTYPES
@pytest.mark.parametrize("float32_coords", [False, True], ids=["half-coords", "float32-coords"])
def test_cuda_half_precision_kernels_match_cpu(dtype, float32_coords):
    require_compiled("cuda", dtype)
    require_compiled("cpu", dtype)
    generator = torch.Generator().manual_seed(220)
    case, reference_case = half_case(generator, dtype, float32_coords=float32_coords)
    gpu = run_with_grads("compiled", *[t.cuda() for t in case])
    cpu = run_with_grads("compiled", *case)
    reference = run_with_grads("compiled", *reference_case)
    for name in gpu:
        assert gpu[name].dtype == cpu[name].dtype, name
        # Both round a float32 sum of the same terms (atomics add grad_value in any order).
        torch.testing.assert_close(gpu[name].cpu().float(), reference[name], **HALF_TOL[dtype])
        torch.testing.assert_close(gpu[name].cpu().float(), cpu[name].float(), **HALF_TOL[dtype])


@pytest.mark.gpu
@cuda_only
def test_cuda_fixture_module_matches_reference():
    require_compiled("cuda")
    fx = load_fixture("msdeform.pt")["module"]
    cfg = load_fixture("msdeform.pt")["config"]
    module = MSDeformAttn(
        cfg["d_model"], cfg["n_levels"], cfg["n_heads"], cfg["n_points"], impl="compiled"
    )
    module.load_state_dict(fx["perturbed"]["state_dict"])
    module = module.cuda().eval()
    inputs = {k: v.cuda() for k, v in fx["inputs"].items()}
    with torch.no_grad():
        output = module(
            inputs["query"],
            inputs["reference_points"],
            inputs["input_flatten"],
            inputs["input_spatial_shapes"],
            inputs["input_level_start_index"],
            None,
        )
    torch.testing.assert_close(output.cpu(), fx["perturbed"]["output"], rtol=1e-4, atol=2e-5)
