"""COMBO's masked-attention transformer decoder against the original code's outputs.

Fixtures: ``combo/fixtures/transformer_decoder.pt`` (K = 2) and ``transformer_decoder_avss.pt``
(K = 71), each with 6 queries, 3 layers, N = 4 frames; tolerances from their README.
"""

import pytest
import torch
from helpers import load_fixture, read_key_list
from torch.testing import assert_close

from avsegformer.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)

FIXTURES = ["transformer_decoder.pt", "transformer_decoder_avss.pt"]
# README tolerances (rtol 1e-4): pred_logits, pred_masks, every aux output.
TOLERANCES = {
    "transformer_decoder.pt": (6e-06, 9e-05, 7e-05),
    "transformer_decoder_avss.pt": (2e-05, 7e-05, 6e-05),
}
KEY_LISTS = [
    f"combo/{config}.keys.txt"
    for config in (
        "COMBO_R50_s4",
        "COMBO_R50_ms3",
        "COMBO_R50_avss",
        "COMBO_PVTV2B5_s4",
        "COMBO_PVTV2B5_ms3",
        "COMBO_PVTV2B5_avss",
        "Test_COMBO_R50_avss",
    )
]
PREFIX = "sem_seg_head.predictor."


def _fixture(name):
    return load_fixture(f"combo/fixtures/{name}")


def _decoder_from(fixture, **overrides):
    config = fixture["config"]
    decoder = MultiScaleMaskedTransformerDecoder(
        num_classes=config["num_classes"],
        hidden_dim=config["hidden_dim"],
        num_queries=config["num_queries"],
        num_heads=config["nheads"],
        dim_feedforward=config["dim_feedforward"],
        num_layers=config["decoder_layers"],
        mask_dim=config["mask_dim"],
        **overrides,
    )
    decoder.load_state_dict(fixture["state_dict"], strict=True)
    return decoder.eval()


def _run(decoder, inputs):
    with torch.no_grad():
        return decoder(inputs["x"], inputs["audio_features"], inputs["mask_features"])


@pytest.fixture(scope="module", params=FIXTURES)
def case(request):
    fixture = _fixture(request.param)
    decoder = _decoder_from(fixture)
    received_masks = []
    for layer in decoder.transformer_cross_attention_layers:
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: received_masks.append(kwargs["memory_mask"]),
            with_kwargs=True,
        )
    outputs = _run(decoder, fixture["inputs"])
    return request.param, fixture, decoder, outputs, received_masks


def test_final_and_auxiliary_predictions_match_reference(case):
    name, fixture, _, outputs, _ = case
    atol_logits, atol_masks, atol_aux = TOLERANCES[name]
    expected = fixture["outputs"]
    assert_close(outputs["pred_logits"], expected["pred_logits"], atol=atol_logits, rtol=1e-4)
    assert_close(outputs["pred_masks"], expected["pred_masks"], atol=atol_masks, rtol=1e-4)
    assert len(outputs["aux_outputs"]) == len(expected["aux_outputs"]) == 3
    for ours, theirs in zip(outputs["aux_outputs"], expected["aux_outputs"]):
        assert set(ours) == {"pred_logits", "pred_masks"}
        assert_close(ours["pred_logits"], theirs["pred_logits"], atol=atol_aux, rtol=1e-4)
        assert_close(ours["pred_masks"], theirs["pred_masks"], atol=atol_aux, rtol=1e-4)


def test_intermediate_mask_logits_are_the_earlier_masks_flattened(case):
    name, fixture, _, outputs, _ = case
    atol_aux = TOLERANCES[name][2]
    intermediates = outputs["intermediate_mask_logits"]
    assert len(intermediates) == len(fixture["outputs"]["middles_attn_mask"]) == 3
    for ours, aux, theirs in zip(
        intermediates, outputs["aux_outputs"], fixture["outputs"]["middles_attn_mask"]
    ):
        assert_close(ours, theirs, atol=atol_aux, rtol=1e-4)
        assert torch.equal(ours, aux["pred_masks"].flatten(2))


def test_cross_attention_receives_the_reference_masks_exactly(case):
    _, fixture, _, _, received_masks = case
    expected = fixture["intermediates"]["attn_masks"]
    assert len(received_masks) == len(expected) == 3
    for ours, theirs in zip(received_masks, expected):
        assert ours.dtype == torch.bool
        assert torch.equal(ours, theirs)


def test_queries_whose_mask_covers_nothing_attend_everywhere():
    fixture = _fixture("transformer_decoder.pt")
    decoder = _decoder_from(fixture)
    # Every mask embedding becomes -1 and the mask features are positive, so every mask logit is
    # negative: each query's predicted mask is empty at every level.
    with torch.no_grad():
        decoder.mask_embed.layers[2].weight.zero_()
        decoder.mask_embed.layers[2].bias.fill_(-1.0)
    received_masks = []
    for layer in decoder.transformer_cross_attention_layers:
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: received_masks.append(kwargs["memory_mask"]),
            with_kwargs=True,
        )
    inputs = dict(fixture["inputs"], mask_features=fixture["inputs"]["mask_features"].abs() + 0.1)
    outputs = _run(decoder, inputs)
    assert (outputs["aux_outputs"][0]["pred_masks"] < 0).all()
    assert [m.shape[-1] for m in received_masks] == [4, 16, 64]
    assert all(not m.any() for m in received_masks)
    assert torch.isfinite(outputs["pred_logits"]).all()


def test_initial_queries_carry_audio_in_combo_batch_order(case):
    _, fixture, decoder, _, _ = case
    audio = fixture["inputs"]["audio_features"]
    initial = decoder.query_feat.weight + decoder.query_audio(audio)
    expected = fixture["intermediates"]["query_input_layer0"].transpose(0, 1)  # [Q,N,C] -> [N,Q,C]
    assert_close(initial.detach(), expected, atol=1e-6, rtol=0)

    num_frames = audio.shape[0]
    frame_ids = torch.arange(num_frames, dtype=torch.float32)[:, None, None]
    source = decoder.query_audio(frame_ids.expand_as(audio).contiguous())[..., 0]
    expected_source = fixture["intermediates"]["audio_query_source_frame"].T  # [N, Q]
    assert torch.equal(source.long(), expected_source)
    # Frames do not get their own audio: COMBO's arrangement is the same for every frame.
    assert (source != frame_ids[:, :, 0]).any()


def test_per_frame_query_audio_gives_each_frame_its_own_audio():
    fixture = _fixture("transformer_decoder.pt")
    decoder = _decoder_from(fixture, per_frame_query_audio=True)
    audio = fixture["inputs"]["audio_features"]
    num_frames, num_queries = audio.shape[0], decoder.num_queries
    frame_ids = torch.arange(num_frames, dtype=torch.float32)[:, None, None]
    source = decoder.query_audio(frame_ids.expand_as(audio).contiguous())[..., 0]
    assert torch.equal(source, frame_ids[:, :, 0].expand(num_frames, num_queries))

    per_frame = _run(decoder, fixture["inputs"])
    batch_order = _run(_decoder_from(fixture), fixture["inputs"])
    assert not torch.allclose(per_frame["pred_logits"], batch_order["pred_logits"], atol=1e-3)
    # Each frame now depends on its own audio only: permuting the frames permutes the outputs.
    order = torch.tensor([2, 0, 3, 1])
    inputs = fixture["inputs"]
    shuffled = _run(
        decoder,
        {
            "x": [level[order] for level in inputs["x"]],
            "audio_features": inputs["audio_features"][order],
            "mask_features": inputs["mask_features"][order],
        },
    )
    assert_close(shuffled["pred_masks"], per_frame["pred_masks"][order], atol=1e-4, rtol=1e-4)


def test_without_intermediate_mask_logits_the_key_is_absent():
    fixture = _fixture("transformer_decoder.pt")
    decoder = _decoder_from(fixture, return_intermediate_mask_logits=False)
    outputs = _run(decoder, fixture["inputs"])
    assert set(outputs) == {"pred_logits", "pred_masks", "aux_outputs"}
    assert_close(outputs["pred_masks"], fixture["outputs"]["pred_masks"], atol=9e-5, rtol=1e-4)


@pytest.mark.parametrize("key_list", KEY_LISTS)
def test_state_dict_matches_combo_predictor_keys(key_list):
    expected = {
        key[len(PREFIX) :]: shape
        for key, shape, _ in read_key_list(key_list)
        if key.startswith(PREFIX)
    }
    num_classes = expected["class_embed.bias"][0] - 1
    decoder = build_transformer_decoder(
        "MultiScaleMaskedTransformerDecoder", num_classes=num_classes
    )
    ours = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    assert ours == expected
    # Parameter counts of COMBO's predictor (measured on the original code).
    expected_count = {2: 14_459_395, 71: 14_477_128}[num_classes]
    assert sum(p.numel() for p in decoder.parameters()) == expected_count


def test_initialisation_follows_the_reference_statistics():
    fixture = _fixture("transformer_decoder.pt")
    config = fixture["config"]
    torch.manual_seed(0)
    decoder = MultiScaleMaskedTransformerDecoder(
        num_classes=config["num_classes"],
        num_queries=config["num_queries"],
        num_layers=config["decoder_layers"],
    )
    for key, value in decoder.state_dict().items():
        mean, std, low, high = fixture["init_stats"][key].tolist()
        if std == 0:  # constants: LayerNorm (1, 0), attention biases 0
            assert torch.all(value == mean), key
        elif value.numel() >= 256:
            assert abs(value.std().item() - std) <= 0.1 * std, key
            assert abs(value.mean().item() - mean) <= 0.1 * std, key


def test_registry_builds_the_decoder_and_input_projection_when_widths_differ():
    assert "MultiScaleMaskedTransformerDecoder" in TRANSFORMER_DECODER_REGISTRY
    decoder = build_transformer_decoder(
        "MultiScaleMaskedTransformerDecoder",
        num_classes=3,
        in_channels=32,
        hidden_dim=64,
        num_queries=4,
        num_heads=4,
        dim_feedforward=32,
        num_layers=4,
        mask_dim=16,
    )
    keys = decoder.state_dict()
    assert [k for k in keys if k.startswith("input_proj")] == [
        f"input_proj.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    ]
    features = [torch.randn(2, 32, s, s) for s in (2, 4, 8)]
    outputs = decoder(features, torch.randn(2, 1, 64), torch.randn(2, 16, 16, 16))
    assert outputs["pred_logits"].shape == (2, 4, 4)
    assert outputs["pred_masks"].shape == (2, 4, 16, 16)
    assert len(outputs["aux_outputs"]) == len(outputs["intermediate_mask_logits"]) == 4
    assert [m.shape for m in outputs["intermediate_mask_logits"]] == [(2, 4, 256)] * 4
    outputs["pred_masks"].sum().backward()
    assert decoder.query_feat.weight.grad.abs().sum() > 0
    assert decoder.input_proj[0].weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    fixture = _fixture("transformer_decoder.pt")
    decoder = _decoder_from(fixture)
    inputs = fixture["inputs"]
    with pytest.raises(ValueError, match="3 feature levels"):
        decoder(inputs["x"][:2], inputs["audio_features"], inputs["mask_features"])
    with pytest.raises(ValueError, match="audio_features must be"):
        decoder(inputs["x"], inputs["audio_features"][..., :128], inputs["mask_features"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_its_inputs():
    fixture = _fixture("transformer_decoder_avss.pt")
    decoder = _decoder_from(fixture).cuda()
    inputs = fixture["inputs"]
    outputs = _run(
        decoder,
        {
            "x": [level.cuda() for level in inputs["x"]],
            "audio_features": inputs["audio_features"].cuda(),
            "mask_features": inputs["mask_features"].cuda(),
        },
    )
    assert outputs["pred_masks"].is_cuda
    expected = fixture["outputs"]
    assert_close(outputs["pred_logits"].cpu(), expected["pred_logits"], atol=1e-4, rtol=1e-4)
    assert_close(outputs["pred_masks"].cpu(), expected["pred_masks"], atol=1e-3, rtol=1e-4)
