"""COMBO's fusion parts against the original code's outputs: Bilateral-Fusion (MHA-B and
MHA-None), the audio MLP and the Siam-Encoder fusion.

Fixtures: ``combo/fixtures/{fusion,audio_mlp,siam_fusion}.pt`` beside the clone; tolerances are
the ones their README suggests (rtol 1e-4).
"""

import pytest
import torch
from helpers import load_fixture, read_key_list
from torch.testing import assert_close

from avsegformer.modeling.fusion import (
    AudioMLP,
    AudioVisualFusion,
    BilateralAttention,
    ChannelWeightBlock,
    SiamEncoderFusion,
)
from avsegformer.modeling.transformer import PositionEmbeddingSine

RTOL = 1e-4
# Suggested atol per fusion case and output (README of the fixtures).
FUSION_ATOL = {
    ("init", "visual"): 6e-6,
    ("init", "audio"): 3e-6,
    ("perturbed", "visual"): 7e-6,
    ("perturbed", "audio"): 3e-6,
    ("mha_none", "visual"): 3e-6,
    ("mha_none", "audio"): 1e-6,
}
FUSION_TYPE = {"init": "MHA-B", "perturbed": "MHA-B", "mha_none": "MHA-None"}
SIAM_CHANNELS = {"r50": (256, 512, 1024, 2048), "pvtv2_b5": (64, 128, 320, 512)}
SIAM_ATOL = 3e-6
AUDIO_MLP_ATOL = 2e-6


@pytest.fixture(scope="module")
def fusion_fixture():
    return load_fixture("combo/fixtures/fusion.pt")


@pytest.fixture(scope="module")
def siam_fixture():
    return load_fixture("combo/fixtures/siam_fusion.pt")


def build_fusion(fixture, case):
    """An :class:`AudioVisualFusion` configured as the fixture says, holding the case's weights."""
    config = fixture["config"]
    assert fixture["cases"][case]["fused_type"] == FUSION_TYPE[case]
    fusion = AudioVisualFusion(
        fusion_type=FUSION_TYPE[case],
        feature_names=config["fused_backbone"],
        visual_dim=config["embed_dim"],
        audio_dim=config["audio_dim"],
        num_heads=config["n_head"],
        dropout=config["dropout"],
        drop_path=config["drop_path"],
        init_values=config["init_values"],
    )
    fusion.load_state_dict(fixture["cases"][case]["state_dict"], strict=True)
    return fusion.eval()


def local_keys(key_list, prefix):
    """``{key: shape}`` of a reference key list's entries under ``prefix``, prefix removed."""
    return {
        key[len(prefix) :]: shape
        for key, shape, _ in read_key_list(f"combo/{key_list}")
        if key.startswith(prefix)
    }


def state_shapes(module):
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


# --- Bilateral-Fusion -----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["init", "perturbed", "mha_none"])
@torch.no_grad()
def test_fusion_matches_reference(fusion_fixture, case):
    fusion = build_fusion(fusion_fixture, case)
    inputs = fusion_fixture["inputs"]
    features = {"res2": inputs["mask_features"]}
    fused, audio = fusion(features, inputs["audio_features"])

    expected = fusion_fixture["cases"][case]["outputs"]
    atol = FUSION_ATOL[(case, "visual")]
    assert_close(fused["res2"], expected["visual"], rtol=RTOL, atol=atol)
    assert_close(audio, expected["audio"], rtol=RTOL, atol=FUSION_ATOL[(case, "audio")])
    assert features["res2"] is inputs["mask_features"], "the input dict must not be modified"


@pytest.mark.parametrize("case", ["init", "perturbed"])
@torch.no_grad()
def test_bilateral_attention_updates_match_reference(fusion_fixture, case):
    """The attention's own outputs (before the layer scale), fed as the block feeds them."""
    fusion = build_fusion(fusion_fixture, case)
    block = fusion.b_attn
    mask_features = fusion_fixture["inputs"]["mask_features"]
    pixels = (mask_features + fusion.level_embed.weight[0][None, :, None, None]).flatten(2)
    pixels = block.layer_norm_v_list[0](pixels.transpose(1, 2))
    audio = block.layer_norm_a_list[0](fusion_fixture["inputs"]["audio_features"])
    pos_visual = fusion_fixture["intermediates"]["image_pos"].flatten(2).transpose(1, 2)
    pos_audio = fusion.audio_pos.weight[None]

    attention = block.attn_list[0]
    assert isinstance(attention, BilateralAttention)
    delta_v, delta_a = attention(pixels, audio, pos_visual, pos_audio)

    reference = fusion_fixture["cases"][case]
    measured = reference["measured"]["float64"]
    for name, ours in (("delta_v", delta_v), ("delta_a", delta_a)):
        # 10x the fixture's float32-vs-float64 discrepancy, the README's rule for tolerances.
        atol = max(10 * measured[name]["max_abs"], 1e-6)
        assert_close(ours, reference["intermediates"][name], rtol=RTOL, atol=atol)


def test_fusion_position_encoding_matches_reference(fusion_fixture):
    features = fusion_fixture["inputs"]["mask_features"]
    fusion = AudioVisualFusion()
    assert isinstance(fusion.pe_layer, PositionEmbeddingSine)
    pos = fusion.pe_layer(features).expand(features.shape[0], -1, -1, -1)
    assert_close(pos, fusion_fixture["intermediates"]["image_pos"], rtol=0, atol=1e-6)


def test_seeded_build_reproduces_reference_init(fusion_fixture):
    """Same construction order as the original: a seed-0 build holds its seed-0 weights,
    layer scale 1e-4 included."""
    for case in ("init", "mha_none"):
        torch.manual_seed(0)
        fusion = AudioVisualFusion(fusion_type=FUSION_TYPE[case])
        reference = fusion_fixture["cases"][case]["state_dict"]
        ours = fusion.state_dict()
        assert set(ours) == set(reference)
        for key, value in reference.items():
            assert torch.equal(ours[key], value), key
    assert torch.all(fusion_fixture["cases"]["init"]["state_dict"]["b_attn.gamma_a"] == 1e-4)


@pytest.mark.parametrize(
    ("key_list", "fusion_type"),
    [
        ("COMBO_R50_s4.keys.txt", "MHA-B"),
        ("COMBO_PVTV2B5_avss.keys.txt", "MHA-B"),
        ("Test_COMBO_R50_avss.keys.txt", "MHA-None"),
    ],
)
def test_fusion_keys_equal_original(key_list, fusion_type):
    expected = local_keys(key_list, "sem_seg_head.fusion_module.")
    assert state_shapes(AudioVisualFusion(fusion_type=fusion_type)) == expected


def test_fusion_trains_every_parameter_and_applies_dropout(fusion_fixture):
    """MHA-B: every parameter receives a gradient, and train mode drops attention weights
    (the audio update changes, the eval output does not). MHA-None: only ``audio_pos`` is dead."""
    inputs = fusion_fixture["inputs"]
    features = {"res2": inputs["mask_features"]}
    fusion = build_fusion(fusion_fixture, "perturbed").train()
    torch.manual_seed(1)
    fused, audio = fusion(features, inputs["audio_features"])
    (fused["res2"].square().sum() + audio.square().sum()).backward()
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []
    with torch.no_grad():
        _, eval_audio = fusion.eval()(features, inputs["audio_features"])
    assert not torch.allclose(audio, eval_audio)
    assert_close(
        eval_audio, fusion_fixture["cases"]["perturbed"]["outputs"]["audio"], rtol=RTOL, atol=3e-6
    )

    none = build_fusion(fusion_fixture, "mha_none").train()
    fused, audio = none(features, inputs["audio_features"])
    fused["res2"].sum().backward()
    assert none.level_embed.weight.grad is not None and none.audio_pos.weight.grad is None


@torch.no_grad()
def test_fusion_frames_are_independent(fusion_fixture):
    """Frames are the batch: a frame's result does not depend on the other frames."""
    fusion = build_fusion(fusion_fixture, "perturbed")
    inputs = fusion_fixture["inputs"]
    fused, audio = fusion({"res2": inputs["mask_features"]}, inputs["audio_features"])
    one, one_audio = fusion({"res2": inputs["mask_features"][1:]}, inputs["audio_features"][1:])
    assert_close(one["res2"], fused["res2"][1:], rtol=1e-5, atol=1e-6)
    assert_close(one_audio, audio[1:], rtol=1e-5, atol=1e-6)


def test_fusion_rejects_bad_input(fusion_fixture):
    features = {"res2": fusion_fixture["inputs"]["mask_features"]}
    audio = fusion_fixture["inputs"]["audio_features"]
    fusion = AudioVisualFusion()
    with pytest.raises(ValueError, match="unknown fusion_type 'MHA-S'"):
        AudioVisualFusion(fusion_type="MHA-S")
    with pytest.raises(ValueError, match=r"audio must be \[N, 1, 128\]"):
        fusion(features, audio[:, 0])
    with pytest.raises(KeyError, match="res2"):
        fusion({"res3": features["res2"]}, audio)
    with pytest.raises(ValueError, match="1 frames, audio has 2"):
        fusion({"res2": features["res2"][:1]}, audio)


# --- audio MLP ------------------------------------------------------------------------------


@torch.no_grad()
def test_audio_mlp_matches_reference():
    fixture = load_fixture("combo/fixtures/audio_mlp.pt")
    config = fixture["config"]
    mlp = AudioMLP(
        in_dim=config["in_dim"], hidden_dim=config["middle_dim"], out_dim=config["out_dim"]
    )
    mlp.load_state_dict(fixture["state_dict"], strict=True)
    out = mlp.eval()(fixture["inputs"]["x"])
    assert_close(out, fixture["outputs"]["out"], rtol=RTOL, atol=AUDIO_MLP_ATOL)


def test_audio_mlp_keys_and_init_equal_original():
    fixture = load_fixture("combo/fixtures/audio_mlp.pt")
    torch.manual_seed(0)
    mlp = AudioMLP()
    assert state_shapes(mlp) == local_keys(
        "COMBO_R50_s4.keys.txt", "sem_seg_head.audio_transformation."
    )
    # init_stats: (mean, std, min, max) of the original's seed-0 build, PyTorch's Linear init.
    for key, value in mlp.state_dict().items():
        value = value.double()
        stats = torch.stack([value.mean(), value.std(), value.min(), value.max()])
        assert_close(stats, fixture["init_stats"][key], rtol=0, atol=1e-7, msg=key)


# --- Siam-Encoder fusion --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["r50", "pvtv2_b5"])
@torch.no_grad()
def test_siam_fusion_matches_reference(siam_fixture, case):
    reference = siam_fixture["cases"][case]
    assert tuple(reference["channels"]) == SIAM_CHANNELS[case]
    fusion = SiamEncoderFusion(
        channels=reference["channels"], reduction=siam_fixture["config"]["reduction"]
    )
    fusion.load_state_dict(reference["state_dict"], strict=True)
    features = reference["inputs"]["features"]
    maskige_features = reference["inputs"]["pre_sam_features"]
    fused = fusion(features, maskige_features)
    weights = fusion.channel_weights(maskige_features)
    assert list(fused) == ["res2", "res3", "res4", "res5"]
    for name in fused:
        expected = reference["outputs"]
        assert_close(fused[name], expected["fused"][name], rtol=RTOL, atol=SIAM_ATOL)
        assert_close(weights[name], expected["channel_weight"][name], rtol=RTOL, atol=1e-6)


def test_siam_fusion_seeded_build_reproduces_reference_init(siam_fixture):
    torch.manual_seed(0)
    fusion = SiamEncoderFusion(channels=SIAM_CHANNELS["pvtv2_b5"])
    reference = siam_fixture["cases"]["pvtv2_b5"]["state_dict"]
    ours = fusion.state_dict()
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize(
    ("key_list", "case"),
    [("COMBO_R50_s4.keys.txt", "r50"), ("COMBO_PVTV2B5_ms3.keys.txt", "pvtv2_b5")],
)
def test_siam_fusion_keys_equal_original(key_list, case):
    expected = local_keys(key_list, "scale_factor_module.")
    assert state_shapes(SiamEncoderFusion(channels=SIAM_CHANNELS[case])) == expected
    assert all(isinstance(block, ChannelWeightBlock) for block in SiamEncoderFusion())


def test_siam_fusion_rejects_bad_input(siam_fixture):
    reference = siam_fixture["cases"]["pvtv2_b5"]["inputs"]
    fusion = SiamEncoderFusion(channels=SIAM_CHANNELS["pvtv2_b5"])
    maskige = dict(reference["pre_sam_features"])
    del maskige["res4"]
    with pytest.raises(KeyError, match="maskige feature.*res4"):
        fusion(reference["features"], maskige)
    with pytest.raises(ValueError, match="4 channel count"):
        SiamEncoderFusion(channels=(64, 128, 320, 512), feature_names=("res2",))
