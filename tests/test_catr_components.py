"""CATR's parts against the released code's fixtures (shared/reference/catr/fixtures): the
transformer with its intermediates, the multiplicative cross-attention, the FPN decoder and the
dilated-conv projections. Tolerances: the fixtures README (10 x the float64 deviation)."""

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from helpers import catr_live_state_dict, load_fixture

from avsegformer.modeling.catr import (
    BlockGate,
    CATRTransformer,
    DilatedConvSum,
    FPNSpatialDecoder,
    MultiplicativeCrossAttention,
    TemporalEncoderLayer,
)
from avsegformer.modeling.catr.temporal_encoder import clips_to_frames, frames_to_clips

RTOL = 1e-4


def _close(actual, expected, atol):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=RTOL)


@pytest.fixture(scope="module")
def transformer_fixture():
    return load_fixture("catr/fixtures/transformer.pt")


def _build_transformer(fx, **flags) -> CATRTransformer:
    c = fx["config"]
    return CATRTransformer(
        d_model=c["d_model"],
        nheads=c["nheads"],
        num_encoder_layers=c["num_encoder_layers"],
        num_decoder_layers=c["num_decoder_layers"],
        dim_feedforward=c["dim_feedforward"],
        dropout=c["dropout"],
        **flags,
    )


def _transformer(fx):
    model = _build_transformer(fx)
    model.load_state_dict(catr_live_state_dict(fx["state_dict"]))
    return model.eval()


def _inputs(fx):
    i = fx["inputs"]
    return (
        i["vid_embeds"],
        i["vid_pad_mask"],
        i["audio_feature"],
        i["audio_pad"],
        i["obj_queries"],
    )


def test_transformer_outputs_match_released_code(transformer_fixture):
    fx = transformer_fixture
    with torch.no_grad():
        hs, vid_memory = _transformer(fx)(*_inputs(fx))
    _close(hs, fx["outputs"]["hs"], 2e-5)
    _close(vid_memory, fx["outputs"]["vid_memory"], 4e-5)


def test_transformer_runs_without_padding_masks(transformer_fixture):
    # The model passes None (AVSBench has no padding); the fixture's masks are all False.
    fx = transformer_fixture
    vid_embeds, _, audio, _, queries = _inputs(fx)
    with torch.no_grad():
        hs, vid_memory = _transformer(fx)(vid_embeds, None, audio, None, queries)
    _close(hs, fx["outputs"]["hs"], 2e-5)
    _close(vid_memory, fx["outputs"]["vid_memory"], 4e-5)


def test_transformer_intermediates_match_released_code(transformer_fixture):
    fx = transformer_fixture
    model = _transformer(fx)
    vid_embeds, vid_pad, audio_feature, audio_pad, _ = _inputs(fx)
    inter = fx["intermediates"]
    t, b, c, h, w = vid_embeds.shape
    n, hw = t * b, h * w
    with torch.no_grad():
        audio = model.audio_proj(audio_feature.view(b, t, -1).transpose(0, 1))
        _close(audio, inter["audio_proj"], 1e-5)
        pos = model.video_positions(vid_pad, n, h, w, vid_embeds.device)
        _close(pos.permute(0, 2, 3, 1), inter["vid_pos_embed"], 1e-6)

        src = torch.cat(
            (vid_embeds.flatten(0, 1).flatten(2).permute(2, 0, 1), audio.repeat(1, t, 1))
        )
        video_pos = pos.flatten(2).permute(2, 0, 1)
        full_pos = torch.cat((video_pos, torch.zeros_like(audio.repeat(1, t, 1))))
        mask = torch.cat((vid_pad.reshape(n, hw), audio_pad.repeat(t, 1)), 1)
        _close(model.spatial_encoder(src, mask, full_pos), inter["spatial_memory"], 2e-5)

        layer_input = src
        for i, layer in enumerate(model.temporal_encoder.layers):
            video_tokens, layer_input = layer(
                layer_input,
                mask,
                full_pos,
                num_frames=t,
                num_video_tokens=hw,
                clip_video_pos=frames_to_clips(video_pos, t),
                clip_video_pad=vid_pad.transpose(0, 1).reshape(b, t * hw),
                audio_pad=audio_pad,
            )
            _close(video_tokens, inter["temporal_layer_src"][i], 4e-5)
            if i < len(inter["temporal_layer_memory"]):
                _close(layer_input, inter["temporal_layer_memory"][i], 4e-5)
            else:
                assert layer_input is None  # the last layer's audio update is not computed

        gate = model.temporal_encoder
        e1, t1, t2 = (s.permute(1, 2, 0).reshape(n, c, h, w) for s in inter["temporal_layer_src"])
        _close(gate.attention_feature(torch.cat((e1, t1), 1)), inter["gate_conv_call1"], 4e-5)
        g1, g2 = gate.gates(e1, t1)
        _close(g1, inter["G1"], 1e-6)
        _close(g2, inter["G2"], 1e-6)
        d1 = gate.output1(inter["G1"][:, :1] * t1)
        _close(d1, inter["D1"], 4e-5)
        _close(inter["D1"] + inter["G2"] * t2, inter["output2_input"], 1e-6)
        _close(gate.combine([e1, t1, t2]), fx["outputs"]["vid_memory"], 4e-5)


def test_block_gate_computes_its_gate_convolution_once(transformer_fixture):
    # The released gate applies attention_feature to (T1, T2) too and discards the result.
    fx = transformer_fixture
    model = _transformer(fx)
    calls = []
    model.temporal_encoder.attention_feature.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(*_inputs(fx))
    assert len(calls) == 1


def test_gate_batchnorm_in_training_mode_matches_released_code(transformer_fixture):
    fx = transformer_fixture
    case = fx["cases"]["gate_batchnorm_train"]
    model = _transformer(fx)
    gate = model.temporal_encoder
    gate.output1[1].train()
    gate.output2[1].train()
    with torch.no_grad():
        hs, vid_memory = model(*_inputs(fx))
    _close(vid_memory, case["outputs"]["vid_memory"], 4e-5)
    assert case["hs_equal_to_eval"]
    _close(hs, fx["outputs"]["hs"], 2e-5)
    state = model.state_dict()
    for key, expected in case["running_stats_after"].items():
        _close(state[key], expected, 1e-5)
    # Batch statistics: far from the eval-mode memory.
    assert (vid_memory - fx["outputs"]["vid_memory"]).abs().max() > 0.5


def test_clip_token_layout_round_trips():
    tokens = torch.arange(4 * 6 * 3, dtype=torch.float32).view(4, 6, 3)  # [hw, (t b), C], T=3
    clips = frames_to_clips(tokens, 3)
    assert clips.shape == (12, 2, 3)
    # Clip 1's frame 2 is frame index 2 * 2 + 1 of the (t b) order.
    torch.testing.assert_close(clips[8:12, 1], tokens[:, 5])
    torch.testing.assert_close(clips_to_frames(clips, 3), tokens)


@pytest.mark.parametrize("case", ["audio_to_video", "video_to_audio"])
def test_multiplicative_cross_attention_matches_released_code(case):
    fx = load_fixture("catr/fixtures/vl_fusion.pt")
    module = MultiplicativeCrossAttention(fx["config"]["d_model"], fx["config"]["nhead"])
    # The block's own unused 1x1 conv (key relative to the block here).
    live = {k: v for k, v in fx["state_dict"].items() if not k.startswith("vid_embed_proj.")}
    module.load_state_dict(live)
    module.eval()
    kwargs = fx["cases"][case]["kwargs"]
    with torch.no_grad():
        out = module(**kwargs)
    atol = {"audio_to_video": 9e-6, "video_to_audio": 1e-6}[case]
    _close(out, fx["cases"][case]["outputs"]["out"], atol)
    _close(
        kwargs["tgt"] * fx["cases"][case]["intermediates"]["attn_out"] ** 2,
        fx["cases"][case]["outputs"]["out"],
        atol,
    )


def test_fpn_decoder_matches_released_code():
    fx = load_fixture("catr/fixtures/fpn_decoder.pt")
    c = fx["config"]
    module = FPNSpatialDecoder(c["context_dim"], tuple(c["fpn_dims"]), c["mask_kernels_dim"])
    module.load_state_dict(fx["state_dict"])
    module.eval()
    with torch.no_grad():
        out = module(fx["inputs"]["x"], fx["inputs"]["layer_features"])
        lay1 = module.lay1(fx["inputs"]["x"])
    _close(out, fx["outputs"]["out"], 2e-5)
    _close(lay1, fx["intermediates"]["lay1"], 2e-5)


def test_fpn_decoder_third_level_doubles_the_mask_resolution():
    torch.manual_seed(0)
    module = FPNSpatialDecoder(64, (64, 64, 32), 16)
    x = torch.randn(2, 64, 8, 8)
    levels = [torch.randn(2, 64, 2, 2), torch.randn(2, 64, 4, 4), torch.randn(2, 32, 8, 8)]
    assert module(x, levels).shape == (2, 16, 8, 8)
    assert module.num_levels == 3
    with pytest.raises(ValueError, match="reads 3 levels, got 2"):
        module(x, levels[:2])
    with pytest.raises(ValueError, match="two or three lateral levels"):
        FPNSpatialDecoder(64, (64,), 16)


def test_dilated_conv_projection_matches_released_code():
    fx = load_fixture("catr/fixtures/aspp.pt")
    c = fx["config"]
    assert c["dilation_series"] == c["padding_series"]
    module = DilatedConvSum(c["input_channel"], c["NoLabels"], c["dilation_series"])
    module.load_state_dict(fx["state_dict"])
    with torch.no_grad():
        out = module(fx["inputs"]["x"])
    _close(out, fx["outputs"]["out"], 3e-6)


def test_dilated_conv_projection_initialisation():
    torch.manual_seed(0)
    module = DilatedConvSum(64, 256)
    weights = torch.cat([conv.weight.flatten() for conv in module.conv2d_list])
    assert abs(weights.std().item() - 0.01) < 5e-4
    assert [conv.dilation for conv in module.conv2d_list] == [(d, d) for d in (3, 6, 12, 18)]


# Named deviations from the released code (MODEL.CATR.TEMPORAL_OWN_FRAME_AUDIO,
# GATE_G2_FROM_LAYERS, GATE_NORM; MASK_STRIDE in test_catr_model.py and above): each changes
# what it names and nothing else; off, the released numbers above hold.


def _flagged_transformer(fx, **flags):
    """The fixture's transformer (released weights) with ``flags``, and the load's missing and
    unexpected keys."""
    model = _build_transformer(fx, **flags)
    missing, unexpected = model.load_state_dict(
        catr_live_state_dict(fx["state_dict"]), strict=False
    )
    return model.eval(), missing, unexpected


def _outputs(model, fx):
    with torch.no_grad():
        return model(*_inputs(fx))


def _layer_inputs(seed: int, t=3, b=2, hw=4, audio=2, c=16):
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(hw + audio, t * b, c, generator=g)
    pos = torch.cat((torch.randn(hw, t * b, c, generator=g), torch.zeros(audio, t * b, c)))
    kwargs = {
        "num_frames": t,
        "num_video_tokens": hw,
        "clip_video_pos": frames_to_clips(pos[:hw], t),
        "clip_video_pad": None,
        "audio_pad": None,
    }
    return src, pos, kwargs


def test_own_frame_audio_changes_the_temporal_layers_only_for_later_frames():
    torch.manual_seed(0)
    released = TemporalEncoderLayer(16, 4, dim_feedforward=8, dropout=0.0).eval()
    own = TemporalEncoderLayer(16, 4, dim_feedforward=8, dropout=0.0, own_frame_audio=True)
    own.load_state_dict(released.state_dict())
    src, pos, kwargs = _layer_inputs(1)
    with torch.no_grad():
        video, memory = released(src, None, pos, **kwargs)
        video_own, memory_own = own.eval()(src, None, pos, **kwargs)
    b = 2
    # Frame 0 of every clip (the first B columns in (t b) order) attends to its own audio in
    # both; the other frames now to theirs instead of frame 0's.
    torch.testing.assert_close(video_own[:, :b], video[:, :b])
    assert (video_own[:, b:] - video[:, b:]).abs().amax() > 1e-3
    # The next layer's audio tokens: one copy per clip before, one per frame now.
    audio, audio_own = memory[4:], memory_own[4:]
    torch.testing.assert_close(audio[:, :b], audio[:, b : 2 * b])
    assert (audio_own[:, :b] - audio_own[:, b : 2 * b]).abs().amax() > 1e-3


def test_own_frame_audio_changes_the_video_memory_not_the_decoder(transformer_fixture):
    fx = transformer_fixture
    model, missing, unexpected = _flagged_transformer(fx, own_frame_audio=True)
    assert not missing and not unexpected
    hs, vid_memory = _outputs(model, fx)
    torch.testing.assert_close(hs, fx["outputs"]["hs"], atol=2e-5, rtol=1e-4)
    assert (vid_memory - fx["outputs"]["vid_memory"]).abs().amax() > 1e-3


def test_g2_from_layers_uses_the_discarded_convolution(transformer_fixture):
    fx = transformer_fixture
    model, missing, unexpected = _flagged_transformer(fx, g2_from_layers=True)
    assert not missing and not unexpected
    hs, vid_memory = _outputs(model, fx)
    torch.testing.assert_close(hs, fx["outputs"]["hs"], atol=2e-5, rtol=1e-4)
    gate = model.temporal_encoder
    inter = fx["intermediates"]
    n, c, h, w = vid_memory.shape
    e1, t1, t2 = (s.permute(1, 2, 0).reshape(n, c, h, w) for s in inter["temporal_layer_src"])
    with torch.no_grad():
        g2 = torch.sigmoid(gate.attention_feature(torch.cat((t1, t2), 1))).mean((2, 3))[:, :1]
        expected = gate.output2(inter["D1"] + g2[..., None, None] * t2)
    torch.testing.assert_close(vid_memory, expected, atol=4e-5, rtol=1e-4)
    assert (vid_memory - fx["outputs"]["vid_memory"]).abs().amax() > 1e-3


def _gate_maps(seed: int, frames: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(frames, 32, 5, 5, generator=g) for _ in range(3)]


@pytest.mark.parametrize(
    ("norm", "batch_dependent"), [("BN", True), ("FrozenBN", False), ("GN", False)]
)
def test_gate_norm_decides_whether_a_frame_depends_on_its_batch(norm, batch_dependent):
    torch.manual_seed(0)
    gate = BlockGate(32, norm=norm).train()  # GN: 32 groups
    maps = _gate_maps(2, 4)
    with torch.no_grad():
        together = gate(maps)
        alone = gate([m[:1] for m in maps])
    assert ((together[:1] - alone).abs().amax() > 1e-3) == batch_dependent
    expected_type = {"BN": torch.nn.BatchNorm2d, "FrozenBN": FrozenBatchNorm2d}
    expected_type["GN"] = torch.nn.GroupNorm
    assert isinstance(gate.output1[1], expected_type[norm])


def test_frozen_gate_norm_equals_released_evaluation(transformer_fixture):
    # FrozenBN keeps the released running statistics and affine: evaluation is unchanged.
    fx = transformer_fixture
    model, missing, unexpected = _flagged_transformer(fx, gate_norm="FrozenBN")
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)
    hs, vid_memory = _outputs(model, fx)
    torch.testing.assert_close(hs, fx["outputs"]["hs"], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(vid_memory, fx["outputs"]["vid_memory"], atol=4e-5, rtol=1e-4)


def test_unknown_gate_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.CATR.GATE_NORM must be one of"):
        BlockGate(16, norm="LN")
