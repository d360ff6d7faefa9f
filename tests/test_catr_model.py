"""The CATR meta-architecture: the released model after its backbone (model_tiny.pt) incl.
test.py's per-frame query selection, clip order for any batch size, training and inference of
a tiny model, configs, and the checkpoint key contract."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from helpers import (
    FeaturesBackbone,
    catr_live_state_dict,
    expected_pvt_v2_name,
    is_dead_catr_key,
    load_config,
    load_fixture,
    random_clip,
    read_key_list,
    synthesize_state_dict,
    tiny_catr_cfg,
)

from avsegformer.checkpoint import convert_catr_checkpoint
from avsegformer.modeling.catr import select_referred_masks
from avsegformer.modeling.clip_io import stack_log_mel
from avsegformer.modeling.meta_arch.catr import CATR

RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_fixture():
    return load_fixture("catr/fixtures/model_tiny.pt")


def _fixture_model(fx, strict_compat: bool = False):
    """Our CATR with the fixture's configuration and weights, fed the stored backbone features
    (the fixture's model replaces its PVT by them); ``strict_compat``: built with
    MODEL.CATR.STRICT_COMPAT and loaded with every fixture entry, the unused ones included."""
    y = fx["config"]["yaml"]
    cfg = tiny_catr_cfg(num_frames=fx["config"]["T"])
    c = cfg.MODEL.CATR
    c.STRICT_COMPAT = strict_compat
    c.D_MODEL = y["d_model"]
    c.NHEADS = y["nheads"]
    c.NUM_ENCODER_LAYERS = y["num_encoder_layers"]
    c.NUM_DECODER_LAYERS = y["num_decoder_layers"]
    c.DIM_FEEDFORWARD = y["dim_feedforward"]
    c.DROPOUT = y["dropout"]
    c.NUM_QUERIES = fx["config"]["num_queries"]
    c.MASK_KERNELS_DIM = fx["config"]["mask_kernels_dim"]
    cfg.MODEL.PVT.EMBED_DIMS = [64, 128, 320, 512]  # the channels of the stored features
    kwargs = CATR.from_config(cfg)
    kwargs["backbone"] = FeaturesBackbone([64, 128, 320, 512], [4, 8, 16, 32])
    kwargs["in_features"] = ["res2", "res3", "res4", "res5"][0 if strict_compat else 1 :]
    model = CATR(**kwargs)
    state_dict = fx["state_dict"] if strict_compat else catr_live_state_dict(fx["state_dict"])
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    assert not unexpected
    assert all(k.startswith("audio_backbone.") for k in missing), missing
    return model.eval()


def _run(model, case, with_aux=True):
    inputs = case["inputs"]
    with torch.no_grad():
        return model.forward_features(
            list(inputs["backbone_feats"][1:]), inputs["audio_feature"], with_aux=with_aux
        )


@pytest.mark.parametrize("strict_compat", [False, True])
def test_model_after_backbone_matches_released_test_pipeline(tiny_fixture, strict_compat):
    fx = tiny_fixture
    model = _fixture_model(fx, strict_compat)
    case = fx["cases"]["b1_test_pipeline"]
    expected = case["outputs"]
    out = _run(model, case)
    torch.testing.assert_close(
        out["pred_masks"][:, 0], expected["pred_masks"], atol=1e-4, rtol=RTOL
    )
    torch.testing.assert_close(
        out["pred_is_referred"][:, 0], expected["pred_is_referred"], atol=9e-6, rtol=RTOL
    )
    for i, aux in enumerate(out["aux_outputs"]):
        torch.testing.assert_close(
            aux["pred_masks"], expected["aux_pred_masks"][i], atol=1e-4, rtol=RTOL
        )
        torch.testing.assert_close(
            aux["pred_is_referred"], expected["aux_pred_is_referred"][i], atol=9e-6, rtol=RTOL
        )
    # test.py: per frame the argmax query, its mask upsampled to 224x224.
    masks, query, scores = select_referred_masks(out["pred_masks"], out["pred_is_referred"])
    torch.testing.assert_close(scores[:, 0], expected["scores"], atol=4e-6, rtol=RTOL)
    assert query[:, 0].tolist() == expected["query"].tolist()
    size = fx["config"]["output_size"]
    logits = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected["logits"], atol=9e-5, rtol=RTOL)
    # Inference without auxiliary layers gives the same last layer.
    last = _run(model, case, with_aux=False)
    assert "aux_outputs" not in last
    torch.testing.assert_close(last["pred_masks"], out["pred_masks"])


def test_model_intermediates_match_released_code(tiny_fixture):
    fx = tiny_fixture
    model = _fixture_model(fx)
    case = fx["cases"]["b1_test_pipeline"]
    feats, inter = case["inputs"]["backbone_feats"], case["intermediates"]
    with torch.no_grad():
        torch.testing.assert_close(model.conv3(feats[2]), inter["conv3"], atol=1e-5, rtol=RTOL)
        torch.testing.assert_close(model.conv4(feats[3]), inter["conv4"], atol=1e-5, rtol=RTOL)
        torch.testing.assert_close(
            model.vid_embed_proj(model.conv2(feats[1])), inter["vid_embeds"], atol=1e-5, rtol=RTOL
        )


def test_two_clips_in_t_b_order_match_released_code(tiny_fixture):
    fx = tiny_fixture
    model = _fixture_model(fx)
    case = fx["cases"]["b2_eval"]
    out = _run(model, case)
    expected = case["outputs"]
    torch.testing.assert_close(out["pred_masks"], expected["pred_masks"], atol=8e-5, rtol=RTOL)
    torch.testing.assert_close(
        out["pred_is_referred"], expected["pred_is_referred"], atol=9e-6, rtol=RTOL
    )


def _clip(seed, num_frames=5, size=32, with_target=True):
    g = torch.Generator().manual_seed(seed)
    clip = {
        "frames": torch.randint(
            0, 256, (num_frames, 3, size, size), generator=g, dtype=torch.uint8
        ),
        "log_mel": torch.randn(num_frames, 96, 64, generator=g),
        "video_id": f"clip{seed}",
    }
    if with_target:
        sem_seg = torch.full((num_frames, size, size), 255, dtype=torch.long)
        sem_seg[0] = (torch.rand(size, size, generator=g) > 0.6).long()
        clip["sem_seg"] = sem_seg
    return clip


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_catr_cfg())


def test_tiny_model_trains_one_step_and_runs_inference(tiny_model):
    model = tiny_model
    model.train()
    batch = [_clip(1), _clip(2)]
    losses = model(batch)
    expected_keys = {
        f"{k}{s}"
        for k in ("loss_is_referred", "loss_sigmoid_focal", "loss_dice", "bce_loss")
        for s in ("", "_0", "_1")
    }
    assert set(losses) == expected_keys
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.zero_grad()
    total.backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.transformer.temporal_encoder.output2[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.audio_backbone.parameters())
    optimizer.step()
    model.eval()
    with torch.no_grad():
        results = model(
            [
                _clip(3, with_target=False),
                {**_clip(4, with_target=False), "height": 20, "width": 24},
            ]
        )
    assert results[0]["sem_seg"].shape == (5, 1, 32, 32)
    assert results[1]["sem_seg"].shape == (5, 1, 20, 24)
    for r in results:
        assert ((r["sem_seg"] > 0) & (r["sem_seg"] < 1)).all()


def _network_outputs(model, clips):
    frames = model.preprocess_frames(clips)
    audio = model.audio_backbone(stack_log_mel(clips, model.device))
    return model.predict(frames, audio, with_aux=False)


def test_clip_outputs_do_not_depend_on_the_batch(tiny_model):
    # Frames are put in (t b) order inside the model: a clip's outputs are the same alone or
    # with other clips (eval mode), for any batch size.
    model = tiny_model.eval()
    clips = [_clip(5, with_target=False), _clip(6, with_target=False), _clip(7, with_target=False)]
    with torch.no_grad():
        together = _network_outputs(model, clips)
        alone = [_network_outputs(model, [clip]) for clip in clips]
    for b, single in enumerate(alone):
        for key in ("pred_masks", "pred_is_referred"):
            torch.testing.assert_close(together[key][:, b], single[key][:, 0], atol=1e-5, rtol=1e-4)
    masks = together["pred_masks"]
    assert (masks[:, 0] - masks[:, 1]).abs().max() > 1e-3


def test_frozen_audio_embeddings_are_computed_once_per_example(tiny_model):
    """A clip seen again reuses its VGGish embeddings, and the output is the same."""
    model = tiny_model.eval()
    model.audio_embeddings.clear()
    clip = _clip(8, with_target=False)
    examples = []
    hook = model.audio_backbone.register_forward_hook(
        lambda module, args, output: examples.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            first = model([clip])[0]["sem_seg"]
            second = model([clip])[0]["sem_seg"]
    finally:
        hook.remove()
    assert examples == [clip["log_mel"].shape[0]]  # the second pass did not run the backbone
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_training_supervises_frame_zero_only(tiny_model):
    model = tiny_model.train()
    clip = _clip(8)
    losses = model([clip])
    changed = dict(clip, sem_seg=clip["sem_seg"].clone())
    changed["sem_seg"][1:] = 1  # annotations on the other frames are not read
    torch.manual_seed(0)
    again = model([changed])
    for key in losses:
        torch.testing.assert_close(again[key], losses[key])


def test_clip_length_is_a_parameter():
    torch.manual_seed(0)
    model = build_model(tiny_catr_cfg(num_frames=10)).eval()
    with torch.no_grad():
        result = model([_clip(9, num_frames=10, with_target=False)])
    assert result[0]["sem_seg"].shape == (10, 1, 32, 32)
    with pytest.raises(ValueError, match="NUM_FRAMES=10"):
        model([_clip(9, num_frames=5, with_target=False)])


def test_supervised_frames_annotated_mode():
    cfg = tiny_catr_cfg()
    cfg.MODEL.CATR.SUPERVISED_FRAMES = "annotated"
    model = build_model(cfg)
    labels = torch.full((5, 2, 4, 4), 255)
    labels[[0, 3]] = 0
    assert model.supervised_times(labels).tolist() == [0, 3]
    labels[3, 1] = 255
    with pytest.raises(ValueError, match="same frames"):
        model.supervised_times(labels)


def test_mask_stride_8_reads_the_video_memory_for_masks_twice_as_fine(tiny_model):
    torch.manual_seed(0)
    cfg = tiny_catr_cfg()
    cfg.MODEL.CATR.MASK_STRIDE = 8
    model = build_model(cfg).eval()
    clips = [_clip(10, with_target=False)]
    with torch.no_grad():
        fine = _network_outputs(model, clips)["pred_masks"]
        released = _network_outputs(tiny_model.eval(), clips)["pred_masks"]
    # 64x64 model input: stride-16 masks are 4x4, stride-8 masks 8x8.
    assert released.shape[-2:] == (4, 4)
    assert fine.shape == (*released.shape[:-2], 8, 8)
    # A stride-16 (released-layout) state dict loads with exactly the new stage missing.
    missing, unexpected = model.load_state_dict(tiny_model.state_dict(), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        f"spatial_decoder.{name}.{p}"
        for name in ("adapter3", "lay5", "gn5")
        for p in ("weight", "bias")
    )
    model.train()
    losses = model([_clip(11)])
    sum(losses.values()).backward()
    assert model.spatial_decoder.adapter3.weight.grad.abs().sum() > 0
    seen = {}

    def keep(name, value):
        seen.setdefault(name, value)  # returns None: the hooks do not replace outputs

    hooks = [
        model.spatial_decoder.adapter3.register_forward_hook(
            lambda module, args, output: keep("lateral", args[0])
        ),
        model.transformer.register_forward_hook(
            lambda module, args, output: keep("memory", output[1])
        ),
    ]
    try:
        with torch.no_grad():
            model.eval()(clips)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(seen["lateral"], seen["memory"], rtol=0, atol=0)


def test_unknown_mask_stride_is_refused():
    cfg = tiny_catr_cfg()
    cfg.MODEL.CATR.MASK_STRIDE = 4
    with pytest.raises(ValueError, match="MASK_STRIDE must be one of \\[8, 16\\], got 4"):
        build_model(cfg)


def test_model_declares_backbone_prefixes_and_float32_modules(tiny_model):
    names = dict(tiny_model.named_children())
    assert all(name in names for name in tiny_model.float32_modules)
    assert any(
        n.startswith(tiny_model.visual_backbone_prefixes) for n, _ in tiny_model.named_parameters()
    )
    prefixes = tiny_model.visual_backbone_prefixes
    assert {
        n.split(".")[0] for n, _ in tiny_model.named_parameters() if n.startswith(prefixes)
    } == {"backbone"}


def test_s4_config_builds_the_released_layout():
    cfg = load_config("s4/catr_pvtv2_b5.yaml")
    c = cfg.MODEL.CATR
    assert cfg.MODEL.META_ARCHITECTURE == "CATR"
    assert tuple(c.INPUT_SIZE) == (448, 448) and tuple(cfg.INPUT.FRAME_SIZE) == (224, 224)
    assert (c.NUM_FRAMES, c.NUM_QUERIES, c.MASK_KERNELS_DIM, c.D_MODEL) == (5, 50, 64, 256)
    assert (c.NHEADS, c.NUM_ENCODER_LAYERS, c.NUM_DECODER_LAYERS, c.DIM_FEEDFORWARD) == (
        8,
        3,
        3,
        2048,
    )
    assert (c.SET_COST_IS_REFERRED, c.SET_COST_DICE, c.DICE_LOSS_COEF, c.EOS_COEF) == (2, 7, 5, 0.1)
    assert c.BCE_DOUBLE_SIGMOID and c.SUPERVISED_FRAMES == "first" and c.AUX_LOSS
    assert c.MASK_STRIDE == 16
    s = cfg.SOLVER
    assert (s.BASE_LR, s.WEIGHT_DECAY, s.IMS_PER_BATCH, s.CLIP_GRADIENTS.CLIP_VALUE) == (
        1e-5,
        0.0,
        2,
        5.0,
    )
    assert s.MAX_ITER == 100 * 1726 and cfg.SEED == 123


def _released_live_keys():
    """The released S4 checkpoint's live keys, with the PVT under the project's names, plus the
    project's VGGish (the released checkpoint has none)."""
    keys = set()
    for name, _, _ in read_key_list("catr/CATR_pvt2_s4.keys.txt"):
        if name.startswith("encoder_backbone."):
            keys.add("backbone." + expected_pvt_v2_name(name[len("encoder_backbone.") :]))
        elif not is_dead_catr_key(name):
            keys.add(name)
    for name, _, _ in read_key_list("catr/CATR_vggish.keys.txt"):
        keys.add("audio_backbone." + name)
    return keys


def test_state_dict_keys_are_the_released_live_keys():
    cfg = load_config("s4/catr_pvtv2_b5.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.AUDIO.WEIGHTS = ""
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        model = CATR(**CATR.from_config(cfg))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    released = _released_live_keys()
    assert set(ours) == released
    shapes = {
        name: shape
        for name, shape, _ in read_key_list("catr/CATR_pvt2_s4.keys.txt")
        if not name.startswith("encoder_backbone.") and not is_dead_catr_key(name)
    }
    assert {k: ours[k] for k in shapes} == shapes


def test_converted_original_checkpoint_fills_every_non_audio_entry():
    # The checkpoint family's converter and the model agree on every name and shape.
    from avsegformer.checkpoint.catr import convert_catr_checkpoint

    cfg = load_config("s4/catr_pvtv2_b5.yaml")
    cfg.MODEL.AUDIO.WEIGHTS = ""
    with torch.device("meta"):
        model = CATR(**CATR.from_config(cfg))
    converted = convert_catr_checkpoint(
        synthesize_state_dict(read_key_list("catr/CATR_pvt2_s4.keys.txt"))
    )
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: s for k, s in ours.items() if not k.startswith("audio_backbone.")
    }


# MODEL.CATR.STRICT_COMPAT: the released modules no output depends on are built, and what the
# release computes for nothing is computed; no output changes.


def _strict(cfg):
    cfg.MODEL.CATR.STRICT_COMPAT = True
    return cfg


def _released_keys_in_our_names(entries):
    return {
        "backbone." + expected_pvt_v2_name(name[len("encoder_backbone.") :])
        if name.startswith("encoder_backbone.")
        else name: tuple(shape)
        for name, shape, _ in entries
    }


def test_strict_compat_model_has_every_released_key_and_loads_a_kept_conversion():
    entries = read_key_list("catr/CATR_pvt2_s4.keys.txt")
    cfg = load_config("s4/catr_pvtv2_b5.yaml")
    cfg.MODEL.AUDIO.WEIGHTS = ""
    cfg.MODEL.CATR.STRICT_COMPAT = True
    with torch.device("meta"):
        model = CATR(**CATR.from_config(cfg))
    ours = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith("audio_backbone.")
    }
    assert ours == _released_keys_in_our_names(entries)
    converted = convert_catr_checkpoint(synthesize_state_dict(entries), keep_unused=True)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    # Converted without keep_unused, the same checkpoint drops exactly the unused entries.
    dropped = set(converted) - set(convert_catr_checkpoint(synthesize_state_dict(entries)))
    assert dropped and all(
        k.startswith(("conv1.", "path", "fusion_module.", "transformer.temporal_encoder."))
        for k in dropped
    )


def _tiny_pair():
    """A tiny CATR and its STRICT_COMPAT twin with the same live weights (train mode)."""
    torch.manual_seed(0)
    plain = build_model(tiny_catr_cfg())
    strict = build_model(_strict(tiny_catr_cfg()))
    missing, unexpected = strict.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    return plain, strict


def test_strict_compat_computes_what_the_release_computes_and_changes_no_output():
    plain, strict = _tiny_pair()
    calls = {"conv1": [], "gate conv": [], "last audio update": []}
    strict.conv1.register_forward_hook(lambda *a: calls["conv1"].append(1))
    gate_conv = strict.transformer.temporal_encoder.attention_feature
    gate_conv.register_forward_hook(lambda *a: calls["gate conv"].append(1))
    last = strict.transformer.temporal_encoder.layers[-1].va_atten
    last.register_forward_hook(lambda *a: calls["last audio update"].append(1))
    clips = [random_clip(seed, frames=5, size=32) for seed in (1, 2)]
    torch.manual_seed(3)
    losses = plain.train()(clips)
    torch.manual_seed(3)
    losses_strict = strict.train()(clips)
    assert calls == {"conv1": [1], "gate conv": [1, 1], "last audio update": [1]}
    for key in losses:
        torch.testing.assert_close(losses_strict[key], losses[key])
    plain.eval(), strict.eval()
    with torch.no_grad():
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(strict.state_dict()[key], value)
        inputs = [{k: v for k, v in clip.items() if k != "sem_seg"} for clip in clips]
        for a, b in zip(plain(inputs), strict(inputs)):
            torch.testing.assert_close(b["sem_seg"], a["sem_seg"])
