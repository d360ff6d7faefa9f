"""Low-precision inference: BatchNorm folding, the bfloat16 conversion of a model, the config key
and the CPU feature report."""

import importlib
from pathlib import Path

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model
from PIL import Image
from torch import nn

from avsegformer.config import setup_cfg
from avsegformer.layers import compiled_op_available
from avsegformer.modeling.precision import (
    apply_inference_precision,
    convert_for_inference,
    cpu_bfloat16_features,
    fold_batch_norms,
    precision_dtype,
)
from avsegformer.predictor import ClipPredictor

msda = importlib.import_module("avsegformer.layers.ms_deform_attn_function")
TINY_CONFIG = (
    Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"
)


def random_batch_norm(norm: nn.Module, channels: int, generator) -> nn.Module:
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator))
        norm.running_mean.copy_(torch.randn(channels, generator=generator))
        norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return norm


@pytest.mark.parametrize("norm_type", ["BN", "FrozenBN"])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_batch_norms_keeps_the_function(norm_type, bias):
    generator = torch.Generator().manual_seed(0)
    norm = nn.BatchNorm2d(6) if norm_type == "BN" else FrozenBatchNorm2d(6)
    conv = Conv2d(4, 6, 3, padding=1, bias=bias, norm=random_batch_norm(norm, 6, generator))
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.randn(2, 4, 7, 5, generator=generator)
    with torch.no_grad():
        expected = model(x)
        assert fold_batch_norms(model) == 1
        folded = model(x)
    assert conv.norm is None
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_fold_batch_norms_leaves_training_batch_norm_alone():
    conv = Conv2d(3, 4, 1, norm=nn.BatchNorm2d(4))  # train mode: batch statistics
    assert fold_batch_norms(conv) == 0
    assert isinstance(conv.norm, nn.BatchNorm2d)


@pytest.fixture(scope="module")
def tiny_model_and_clip():
    cfg = setup_cfg(str(TINY_CONFIG), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(1)
    clip = {
        "frames": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=generator),
        "log_mel": torch.randn(2, 96, 64, generator=generator),
        "height": 64,
        "width": 64,
    }
    with torch.no_grad():
        expected = model([clip])[0]["sem_seg"]
    return cfg, model, clip, expected


def test_bfloat16_model_runs_in_bfloat16_and_returns_float32_probabilities(
    tiny_model_and_clip, monkeypatch
):
    cfg, model, clip, expected = tiny_model_and_clip
    converted = build_model(cfg)
    converted.load_state_dict(model.state_dict())
    apply_inference_precision(converted.eval(), "bf16")
    for name, parameter in converted.named_parameters():
        wanted = torch.float32 if name.startswith("audio_backbone.") else torch.bfloat16
        assert parameter.dtype == wanted, name
    assert converted.pixel_mean.dtype == torch.float32  # normalisation before the cast
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.backbone.modules())

    seen = []
    original = msda.ms_deform_attn_core_pytorch
    apply = msda.MSDeformAttnFunction.apply

    def record(fn):
        def wrapped(value, *args):
            seen.append(value.dtype)
            return fn(value, *args)

        return wrapped

    monkeypatch.setattr(msda, "ms_deform_attn_core_pytorch", record(original))
    monkeypatch.setattr(msda.MSDeformAttnFunction, "apply", record(apply))
    with torch.no_grad():
        probs = converted([clip])[0]["sem_seg"]
    # The deformable attention samples bfloat16 values, natively when the build has the kernels.
    assert seen and set(seen) == {torch.bfloat16}
    assert compiled_op_available("cpu", torch.bfloat16)
    assert probs.dtype == torch.float32 and probs.shape == expected.shape
    # A random model's probabilities, bfloat16 activations end to end: within a few hundredths.
    assert (probs - expected).abs().max() < 0.05


def test_conversion_needs_eval_mode_and_known_names(tiny_model_and_clip):
    cfg, _, _, _ = tiny_model_and_clip
    model = build_model(cfg)
    with pytest.raises(ValueError, match="eval-mode"):
        convert_for_inference(model.train(), torch.bfloat16)
    with pytest.raises(ValueError, match="not sub-modules"):
        convert_for_inference(model.eval(), torch.bfloat16, float32_modules=["audio"])


def test_apply_inference_precision_checks_its_input():
    plain = nn.Sequential(nn.Linear(2, 2)).eval()
    assert apply_inference_precision(plain, "fp32") is plain
    assert plain[0].weight.dtype == torch.float32
    with pytest.raises(ValueError, match="declares no float32_modules"):
        apply_inference_precision(plain, "bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        precision_dtype("int8")


def test_predictor_follows_test_precision(tiny_model_and_clip):
    cfg, _, _, _ = tiny_model_and_clip
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.PRECISION = "bf16"
    predictor = ClipPredictor(cfg)
    assert predictor.model.mask_head.fc[0].weight.dtype == torch.bfloat16
    frames = [Image.new("RGB", (80, 60), (i * 40, 90, 30)) for i in range(2)]
    probs = predictor(frames, torch.randn(2, 96, 64))
    assert probs.dtype == torch.float32 and probs.shape == (2, 1, 60, 80)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx512f avx512_bf16 amx_bf16 amx_tile", "AMX+AVX512-BF16"),
        ("fpu sse avx512f avx512_bf16", "AVX512-BF16"),
        ("fpu sse avx2", "neither"),
    ],
)
def test_cpu_bfloat16_features(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    assert cpu_bfloat16_features(str(cpuinfo)) == expected
    assert cpu_bfloat16_features(str(tmp_path / "missing")) == "unknown"
