"""Visual backbones (Detectron2 ResNet-50, PVTv2) and the VGGish audio backbone."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from helpers import read_key_list
from torch import nn

from avsegformer import add_avsegformer_config
from avsegformer.checkpoint import (
    convert_pvt_v2,
    convert_torchvision_resnet,
    convert_vggish,
    load_pretrained_audio_backbone,
)
from avsegformer.modeling.audio_backbone import VGGish, build_audio_backbone
from avsegformer.modeling.backbone import PVTv2Backbone

REPO = Path(__file__).resolve().parents[1]
STAGES = ("res2", "res3", "res4", "res5")


def base_cfg():
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "Base-AVSegFormer.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def randomize_(module: nn.Module) -> nn.Module:
    """Random values in every float parameter and buffer (norm affine and running statistics
    included), so that no layer of a parity check is an identity."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if tensor.dim() == 1 and name.endswith(("running_var", "weight")):
                # Norm scales and variances: positive, away from 1.
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() == 1:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return module


# ---------------------------------------------------------------------------------------------
# ResNet-50: Detectron2's build_resnet_backbone with converted torchvision weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_detectron2_resnet50_matches_torchvision(norm):
    reference = randomize_(torchvision.models.resnet50(weights=None)).eval()
    state_dict = reference.state_dict()
    # The released torchvision file predates num_batches_tracked; the converter must add it.
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}

    cfg = base_cfg()
    cfg.MODEL.RESNETS.NORM = norm
    backbone = build_backbone(cfg).eval()
    incompatible = backbone.load_state_dict(convert_torchvision_resnet(state_dict), strict=False)
    assert incompatible.missing_keys == []
    if norm == "BN":
        # The base config: trainable BatchNorm like the original, every parameter trainable.
        assert incompatible.unexpected_keys == []
        norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(norms) == 53, "stem + 16 blocks x 3 + 4 shortcuts"
        assert all(p.requires_grad for p in backbone.parameters()), "FREEZE_AT 0: all trainable"
    else:
        # FrozenBN has no step counter; everything else loads.
        assert all(k.endswith("num_batches_tracked") for k in incompatible.unexpected_keys)

    images = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        ours = backbone(images)
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        expected = {}
        for name, layer in zip(
            STAGES, (reference.layer1, reference.layer2, reference.layer3, reference.layer4)
        ):
            x = layer(x)
            expected[name] = x
    assert backbone.output_shape()["res5"].stride == 32
    for name in STAGES:
        assert ours[name].shape == expected[name].shape
        torch.testing.assert_close(ours[name], expected[name], rtol=0, atol=1e-4)


def test_resnet_conversion_drops_fc_and_rejects_unknown_names():
    state_dict = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 2048)}
    assert list(convert_torchvision_resnet(state_dict)) == ["stem.conv1.weight"]
    with pytest.raises(KeyError, match="layer5.0.conv1.weight"):
        convert_torchvision_resnet({"layer5.0.conv1.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------
# PVTv2
# ---------------------------------------------------------------------------------------------
TINY_PVT = {
    "EMBED_DIMS": [16, 32, 48, 64],
    "DEPTHS": [1, 2, 2, 1],
    "NUM_HEADS": [1, 2, 3, 4],
    "MLP_RATIOS": [4, 4, 4, 4],
    "SR_RATIOS": [8, 4, 2, 1],
    "DROP_PATH_RATE": 0.1,
}


def tiny_pvt_cfg():
    cfg = base_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_pvt_v2_backbone"
    for key, value in TINY_PVT.items():
        cfg.MODEL.PVT[key] = value
    return cfg


def test_pvt_wrapper_shapes_strides_channels():
    cfg = tiny_pvt_cfg()
    backbone = build_backbone(cfg)
    assert isinstance(backbone, PVTv2Backbone)
    shapes = backbone.output_shape()
    assert [shapes[n].stride for n in STAGES] == [4, 8, 16, 32]
    assert [shapes[n].channels for n in STAGES] == TINY_PVT["EMBED_DIMS"]

    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 128, 96))
    assert list(features) == list(STAGES)
    for name, channels in zip(STAGES, TINY_PVT["EMBED_DIMS"]):
        stride = shapes[name].stride
        assert features[name].shape == (2, channels, 128 // stride, 96 // stride)

    cfg.MODEL.PVT.OUT_FEATURES = ["res3", "res5"]
    backbone = build_backbone(cfg)
    assert list(backbone.output_shape()) == ["res3", "res5"]
    assert list(backbone(torch.randn(1, 3, 64, 64))) == ["res3", "res5"]

    cfg.MODEL.PVT.OUT_FEATURES = ["res6"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_backbone(cfg)


class _OfficialPatchEmbed(nn.Module):
    def __init__(self, kernel, stride, in_channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        height, width = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class _OfficialAttention(nn.Module):
    def __init__(self, dim, heads, sr_ratio):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, height, width):
        n, length, dim = x.shape
        q = self.q(x).reshape(n, length, self.heads, -1).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(n, dim, height, width)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(n, -1, 2, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(n, length, dim))


class _OfficialDWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, height, width):
        grid = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class _OfficialMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _OfficialDWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, height, width):
        return self.fc2(nn.functional.gelu(self.dwconv(self.fc1(x), height, width)))


class _OfficialBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _OfficialAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _OfficialMlp(dim, dim * mlp_ratio)

    def forward(self, x, height, width):
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)


class _OfficialPVTv2(nn.Module):
    """The official PVTv2 layout and numerics (eval mode, no drop-path), written from its
    description, with its parameter names (patch_embed{i}, block{i}, norm{i})."""

    def __init__(self, dims, depths, heads, mlp_ratios, sr_ratios):
        super().__init__()
        for i in range(4):
            kernel, stride, in_channels = (7, 4, 3) if i == 0 else (3, 2, dims[i - 1])
            setattr(
                self,
                f"patch_embed{i + 1}",
                _OfficialPatchEmbed(kernel, stride, in_channels, dims[i]),
            )
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    _OfficialBlock(dims[i], heads[i], mlp_ratios[i], sr_ratios[i])
                    for _ in range(depths[i])
                ),
            )
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))

    def forward(self, x):
        outputs = []
        for i in range(1, 5):
            x, height, width = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x, height, width)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
            outputs.append(x)
        return outputs


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_pvt_matches_official_layout_with_converted_weights(dtype, atol):
    p = TINY_PVT
    reference = _OfficialPVTv2(
        p["EMBED_DIMS"], p["DEPTHS"], p["NUM_HEADS"], p["MLP_RATIOS"], p["SR_RATIOS"]
    )
    reference = randomize_(reference).eval().to(dtype)
    ours = build_backbone(tiny_pvt_cfg()).eval().to(dtype)
    ours.load_state_dict(convert_pvt_v2(reference.state_dict()), strict=True)

    # Non-trivial 1-D parameters: an eps or bias mix-up cannot hide behind the default init.
    images = torch.randn(2, 3, 64, 96, dtype=dtype)
    with torch.no_grad():
        expected = reference(images)
        features = ours(images)
    for name, reference_output in zip(STAGES, expected):
        torch.testing.assert_close(features[name], reference_output, rtol=0, atol=atol)


def test_pvt_conversion_drops_classifier_and_rejects_unknown_names():
    converted = convert_pvt_v2(
        {"head.weight": torch.zeros(1000, 512), "norm4.bias": torch.zeros(512)}
    )
    assert converted.keys() == {"stages.3.norm.bias"}
    with pytest.raises(KeyError, match="block5.0.norm1.weight"):
        convert_pvt_v2({"block5.0.norm1.weight": torch.zeros(1)})


def test_pvt_v2_b5_full_size_smoke():
    cfg = base_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_pvt_v2_backbone"  # MODEL.PVT defaults are PVTv2-B5
    backbone = build_backbone(cfg)
    assert sum(p.numel() for p in backbone.parameters()) == 81_443_008
    assert len(backbone.state_dict()) == 1052, "as many entries as the official B5"

    blocks = [block for stage in backbone.stages for block in stage.blocks]
    assert len(blocks) == 52
    for i, block in enumerate(blocks):
        rate = getattr(block.drop_path1, "drop_prob", 0.0)
        assert math.isclose(rate, 0.1 * i / 51, rel_tol=1e-6, abs_tol=1e-9)
        assert block.norm1.eps == block.norm2.eps == 1e-6
        if block.attn.norm is not None:
            assert block.attn.norm.eps == 1e-5
    assert all(stage.norm.eps == 1e-6 for stage in backbone.stages)
    assert backbone.patch_embed.norm.eps == 1e-5
    assert all(stage.downsample.norm.eps == 1e-5 for stage in list(backbone.stages)[1:])

    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 224, 224))
    expected = {"res2": (64, 56), "res3": (128, 28), "res4": (320, 14), "res5": (512, 7)}
    for name, (channels, size) in expected.items():
        assert features[name].shape == (1, channels, size, size)
        assert torch.isfinite(features[name]).all()


# ---------------------------------------------------------------------------------------------
# VGGish
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vggish():
    return VGGish(pca=False, freeze=False).eval()


def test_vggish_keys_match_the_original(vggish):
    expected = {key: shape for key, shape, _ in read_key_list("vggish_keys.txt")}
    assert {k: tuple(v.shape) for k, v in vggish.state_dict().items()} == expected
    assert sum(p.numel() for p in vggish.parameters()) == 72_141_184


def test_vggish_shapes_and_channel_last_flatten(vggish):
    log_mel = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        embeddings = vggish(log_mel)
        grid = vggish.features(log_mel)
        channel_last = vggish.embeddings(grid.permute(0, 2, 3, 1).reshape(3, -1))
        channel_first = vggish.embeddings(grid.reshape(3, -1))
    assert grid.shape == (3, 512, 6, 4)
    assert embeddings.shape == (3, 128)
    assert (embeddings >= 0).all(), "the last ReLU is part of the embedding"
    torch.testing.assert_close(embeddings, channel_last, rtol=0, atol=0)
    assert not torch.allclose(embeddings, channel_first)
    with pytest.raises(ValueError, match=r"\[N, 1, 96, 64\]"):
        vggish(torch.randn(3, 96, 64))


def constant_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A distinct small positive constant per tensor, stored as an expanded scalar: the saved
    file stays a few kilobytes although VGGish has 72 M parameters."""
    return {
        name: torch.tensor(0.002 * (i + 1)).expand(tensor.shape)
        for i, (name, tensor) in enumerate(model.state_dict().items())
    }


def pretrained_vggish(cfg):
    """VGGish built from ``cfg`` (which reads no file), then filled from MODEL.AUDIO.WEIGHTS."""
    model = build_audio_backbone(cfg)
    load_pretrained_audio_backbone(cfg, model)
    return model


def test_vggish_build_reads_no_file_and_freezes(tmp_path):
    cfg = base_cfg()
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "missing.pth")
    cfg.MODEL.AUDIO.FREEZE = True
    model = build_audio_backbone(cfg)  # the file does not exist, and building never opens it
    assert isinstance(model, VGGish)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model(torch.randn(2, 1, 96, 64)).requires_grad
    cfg.MODEL.AUDIO.FREEZE = False
    assert all(p.requires_grad for p in build_audio_backbone(cfg).parameters())


def test_vggish_pretrained_weights_load_strictly(tmp_path, vggish):
    weights = tmp_path / "vggish.pth"
    original = constant_weights(vggish)
    torch.save(original, weights)
    assert weights.stat().st_size < 100_000

    cfg = base_cfg()
    cfg.MODEL.AUDIO.WEIGHTS = str(weights)
    model = pretrained_vggish(cfg)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert not any(p.requires_grad for p in model.parameters()), "loading keeps the freeze"

    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "partial.pth")
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        pretrained_vggish(cfg)
    torch.save({"model": {}}, tmp_path / "wrapped.pth")
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match="wrapped.pth is not a tensor-only state dict"):
        pretrained_vggish(cfg)
    cfg.MODEL.AUDIO.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth .*convert_pretrained_weights.py"):
        pretrained_vggish(cfg)


def test_vggish_conversion_checks_names_and_pca_shapes(vggish):
    original = {k: torch.zeros(()).expand(v.shape) for k, v in vggish.state_dict().items()}
    converted = convert_vggish(original)
    assert converted.keys() == original.keys()
    assert all(v.dtype == torch.float32 for v in converted.values())
    with pytest.raises(KeyError, match="expected the 18 entries"):
        convert_vggish({k: v for k, v in original.items() if k != "embeddings.4.bias"})
    with pytest.raises(KeyError, match="features.1.weight"):
        convert_vggish({**original, "features.1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="pca_means"):
        convert_vggish(original, {"pca_eigen_vectors": np.eye(128), "pca_means": np.zeros(64)})


def test_vggish_pca_postprocessor(tmp_path, vggish):
    generator = np.random.default_rng(0)
    eigen_vectors = generator.standard_normal((128, 128)) * 0.2
    means = generator.standard_normal((128, 1))  # the released file's shape
    network = constant_weights(vggish)
    # Only the PCA entries of a converted file; the network weights stay tiny expanded scalars.
    converted = convert_vggish(
        {k: torch.zeros(()).expand(v.shape) for k, v in network.items()},
        {"pca_eigen_vectors": eigen_vectors, "pca_means": means},
    )
    pca_params = {k: v for k, v in converted.items() if k.startswith("postprocessor.")}
    assert pca_params["postprocessor.pca_means"].shape == (128,)
    plain, with_pca, pca_only = (tmp_path / f"{n}.pth" for n in ("plain", "with_pca", "pca"))
    torch.save(network, plain)
    torch.save({**network, **pca_params}, with_pca)
    torch.save(pca_params, pca_only)

    cfg = base_cfg()
    cfg.MODEL.AUDIO.WEIGHTS = str(with_pca)
    cfg.MODEL.AUDIO.PCA = True
    model = pretrained_vggish(cfg).eval()
    log_mel = torch.randn(4, 1, 96, 64)
    with torch.no_grad():
        quantised = model(log_mel)
        raw = model.embeddings(model.features(log_mel).permute(0, 2, 3, 1).flatten(1))
    # torchvggish's post-processing, in float64: PCA, clip to [-2, 2], map to 0..255, round.
    e = torch.as_tensor(eigen_vectors)
    projected = (e @ (raw.double().t() - torch.as_tensor(means))).t()
    expected = torch.round((projected.clamp(-2, 2) + 2) * (255 / 4))
    assert quantised.shape == (4, 128)
    assert 0 < expected.mean() < 255, "the check must not sit entirely in the clipped range"
    assert torch.equal(quantised, torch.round(quantised))
    mismatched = (quantised.double() - expected).abs()
    assert mismatched.max() <= 1 and (mismatched > 0).float().mean() < 0.01, "rounding ties only"

    # PCA on but no PCA parameters anywhere: an error naming the file.
    cfg.MODEL.AUDIO.WEIGHTS = str(plain)
    with pytest.raises(ValueError, match="plain.pth holds no 'postprocessor"):
        pretrained_vggish(cfg)
    cfg.MODEL.AUDIO.PCA_WEIGHTS = str(pca_only)
    from_pca_file = pretrained_vggish(cfg)
    assert torch.equal(from_pca_file.postprocessor.pca_eigen_vectors, e.float())
    # PCA off: PCA parameters in the file are ignored.
    cfg.MODEL.AUDIO.PCA = False
    cfg.MODEL.AUDIO.PCA_WEIGHTS = ""
    cfg.MODEL.AUDIO.WEIGHTS = str(with_pca)
    assert pretrained_vggish(cfg).postprocessor is None


def test_vggish_rejects_another_embedding_width():
    cfg = base_cfg()
    assert cfg.MODEL.AUDIO.NAME == "VGGish"
    cfg.MODEL.AUDIO.OUT_DIM = 256
    with pytest.raises(ValueError, match="OUT_DIM"):
        build_audio_backbone(cfg)
