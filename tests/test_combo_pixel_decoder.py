"""The shared pixel decoder built as COMBO builds Mask2Former's, against the original's outputs.

Fixture ``combo/fixtures/pixel_decoder.pt`` (2 encoder layers); tolerances from its README.
"""

import pytest
import torch
from detectron2.layers import ShapeSpec
from helpers import load_config, load_fixture, read_key_list
from torch.testing import assert_close

from avsegformer.layers import MSDeformAttn
from avsegformer.modeling.pixel_decoder import MSDeformAttnPixelDecoder, build_pixel_decoder

PREFIX = "sem_seg_head.pixel_decoder."


def build_combo_pixel_decoder(num_encoder_layers: int) -> MSDeformAttnPixelDecoder:
    """The decoder with COMBO's released settings (ResNet-50 channels)."""
    input_shape = {
        name: ShapeSpec(channels=channels, stride=stride)
        for name, channels, stride in zip(
            ("res2", "res3", "res4", "res5"), (256, 512, 1024, 2048), (4, 8, 16, 32)
        )
    }
    return MSDeformAttnPixelDecoder(
        input_shape,
        in_features=["res2", "res3", "res4", "res5"],
        transformer_in_features=["res3", "res4", "res5"],
        conv_dim=256,
        norm="GN",
        num_encoder_layers=num_encoder_layers,
        num_heads=8,
        num_points=4,
        dim_feedforward=1024,
        dropout=0.0,
        activation="relu",
        normalize_positions=True,
        msda_impl="pytorch",
        coarse_levels_first=True,
        mask2former_layout=True,
        mask_dim=256,
    )


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("combo/fixtures/pixel_decoder.pt")


def test_state_dict_keys_match_the_checkpoint():
    """Keys and shapes equal the checkpoint's ``sem_seg_head.pixel_decoder.*`` minus the prefix."""
    expected = {
        key[len(PREFIX) :]: shape
        for key, shape, _ in read_key_list("combo/COMBO_R50_s4.keys.txt")
        if key.startswith(PREFIX)
    }
    decoder = build_combo_pixel_decoder(num_encoder_layers=6)
    actual = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    assert actual == expected


def test_outputs_and_intermediates_match_the_reference(fixture):
    decoder = build_combo_pixel_decoder(fixture["config"]["transformer_enc_layers"]).eval()
    decoder.load_state_dict(fixture["state_dict"], strict=True)

    captured = {"input_proj": [], "msdeform_calls": 0}
    for proj in decoder.input_proj:
        proj.register_forward_hook(lambda m, i, out: captured["input_proj"].append(out))
    decoder.transformer.encoder.register_forward_hook(
        lambda m, i, out: captured.__setitem__("encoder_memory", out)
    )
    for module in decoder.modules():
        if isinstance(module, MSDeformAttn):
            module.register_forward_hook(
                lambda m, i, out: captured.__setitem__(
                    "msdeform_calls", captured["msdeform_calls"] + 1
                )
            )

    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_multi_scale(
            fixture["inputs"]["feats"]
        )
        _, memory, spatial_shapes, level_start_index = decoder.forward_features(
            fixture["inputs"]["feats"]
        )

    expected = fixture["outputs"]
    tol = {"rtol": 1e-4}
    assert_close(mask_features, expected["mask_features"], atol=2e-5, **tol)
    assert_close(encoder_features, expected["transformer_encoder_features"], atol=3e-5, **tol)
    assert len(multi_scale) == len(expected["multi_scale_features"]) == 3
    for ours, theirs in zip(multi_scale, expected["multi_scale_features"]):
        assert_close(ours, theirs, atol=3e-5, **tol)

    intermediates = fixture["intermediates"]
    assert_close(captured["encoder_memory"], intermediates["encoder_memory"], atol=3e-5, **tol)
    assert_close(memory, intermediates["encoder_memory"], atol=3e-5, **tol)
    for ours, theirs in zip(captured["input_proj"], intermediates["input_proj"]):
        assert_close(ours, theirs, atol=3e-5, **tol)
    assert torch.equal(spatial_shapes, intermediates["encoder_spatial_shapes"])
    assert torch.equal(level_start_index, intermediates["encoder_level_start_index"])
    # Two forwards, one deformable attention per encoder layer each.
    assert captured["msdeform_calls"] == 2 * fixture["msdeform_calls"]


def test_half_precision_inputs_run_in_float32(fixture):
    """Like Mask2Former's ``@autocast(enabled=False)`` + ``.float()``: lower-precision inputs are
    cast, the outputs are float32."""
    decoder = build_combo_pixel_decoder(fixture["config"]["transformer_enc_layers"]).eval()
    decoder.load_state_dict(fixture["state_dict"])
    feats = {k: v.to(torch.bfloat16) for k, v in fixture["inputs"]["feats"].items()}
    with torch.no_grad():
        mask_features, _, multi_scale = decoder.forward_multi_scale(feats)
    assert mask_features.dtype == torch.float32
    assert all(level.dtype == torch.float32 for level in multi_scale)


def test_configs_choose_the_variant_and_the_pixel_decoder_key():
    """COMBO's config names the head in SEM_SEG_HEAD.NAME and the pixel decoder in
    PIXEL_DECODER_NAME (Mask2Former's keys); AVSegFormer's names the pixel decoder in NAME."""
    shapes = {
        name: ShapeSpec(channels=channels, stride=stride)
        for name, channels, stride in zip(
            ("res2", "res3", "res4", "res5"), (256, 512, 1024, 2048), (4, 8, 16, 32)
        )
    }
    combo_cfg = load_config("s4/combo_R50.yaml")
    assert combo_cfg.MODEL.SEM_SEG_HEAD.NAME == "COMBOHead"
    decoder = build_pixel_decoder(combo_cfg, shapes)
    assert decoder.mask2former_layout and decoder.encoder_features == ["res5", "res4", "res3"]
    assert decoder.mask_features is not None
    # Mask2Former's initialisation: zero biases of the projections and the mask_features conv.
    assert all(torch.count_nonzero(proj[0].bias) == 0 for proj in decoder.input_proj)
    assert torch.count_nonzero(decoder.mask_features.bias) == 0
    expected = {
        k[len(PREFIX) :]: s
        for k, s, _ in read_key_list("combo/COMBO_R50_s4.keys.txt")
        if k.startswith(PREFIX)
    }
    assert {k: tuple(v.shape) for k, v in decoder.state_dict().items()} == expected

    avsegformer = build_pixel_decoder(load_config("s4/avsegformer_R50.yaml"), shapes)
    assert not avsegformer.mask2former_layout and avsegformer.mask_features is None
    assert avsegformer.encoder_features == ["res3", "res4", "res5"]

    combo_cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = ""  # NAME is then the pixel decoder
    with pytest.raises(ValueError, match="SEM_SEG_HEAD.NAME='COMBOHead' is not a pixel decoder"):
        build_pixel_decoder(combo_cfg, shapes)
