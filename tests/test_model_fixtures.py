"""AVSegFormer head, transformer parts and losses against the original code's outputs.

The fixtures (``<repo>/../shared/reference/fixtures``) were produced by running the original
AVSegFormer; tolerances are those suggested in their README.
"""

import pytest
import torch
from helpers import FeaturesBackbone, load_fixture
from torch import nn
from torch.testing import assert_close

from avsegformer.checkpoint import convert_avsegformer_head
from avsegformer.layers import MSDeformAttn
from avsegformer.modeling.criterion import AVSegFormerCriterion
from avsegformer.modeling.mask_head import AVSegMaskHead
from avsegformer.modeling.meta_arch.avsegformer import AVSegFormer
from avsegformer.modeling.meta_arch.head_init import init_head_parameters
from avsegformer.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from avsegformer.modeling.transformer import (
    AudioQueryGenerator,
    AVSTransformerDecoder,
    CrossModalMixer,
    PositionEmbeddingSine,
)


def build_tiny_head(config):
    """An AVSegFormer whose head has the fixture's reduced configuration."""
    dim = config["embed_dim"]
    backbone = FeaturesBackbone(config["in_channels"], config["feature_strides"])
    pixel_decoder = MSDeformAttnPixelDecoder(
        backbone.output_shape(),
        in_features=["res2", "res3", "res4", "res5"],
        transformer_in_features=["res3", "res4", "res5"],
        conv_dim=dim,
        norm="GN",
        num_encoder_layers=config["encoder_num_layers"],
        num_heads=config["encoder_msdeform_n_heads"],
        num_points=config["encoder_msdeform_n_points"],
        dim_feedforward=config["layer_ffn_dim"],
        dropout=config["layer_dropout"],
    )
    modules = {
        "pixel_decoder": pixel_decoder,
        "query_generator": AudioQueryGenerator(
            num_queries=config["query_num"],
            embed_dim=dim,
            num_layers=config["query_generator_num_layers"],
            num_heads=config["query_generator_num_heads"],
            hidden_dim=config["query_generator_hidden_dim"],
        ),
        "learnable_query": nn.Embedding(config["query_num"], dim),
        "transformer_decoder": AVSTransformerDecoder(
            num_layers=config["decoder_num_layers"],
            dim=dim,
            num_heads=config["decoder_num_heads"],
            dim_feedforward=config["layer_ffn_dim"],
            dropout=config["layer_dropout"],
        ),
        "mixer": CrossModalMixer(dim=config["mixer_dim"], num_heads=config["mixer_n_heads"]),
        "mask_head": AVSegMaskHead(
            num_queries=config["query_num"],
            hidden_dim=dim,
            mlp_dim=config["mlp_hidden_dim"],
            num_classes=config["num_classes"],
            upsample_factor=config["scale_factor"],
        ),
    }
    init_head_parameters(modules.values(), level_embed=pixel_decoder.level_embed)
    model = AVSegFormer(
        backbone=backbone,
        audio_backbone=nn.Identity(),
        audio_proj=nn.Linear(128, dim),
        **modules,
        criterion=AVSegFormerCriterion(),
        num_classes=config["num_classes"],
        freeze_audio_backbone=True,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        size_divisibility=32,
    )
    return model.eval()


@pytest.fixture(scope="module", params=["head_tiny.pt", "head_tiny_avss.pt"])
def head_case(request):
    fx = load_fixture(request.param)
    model = build_tiny_head(fx["config"])
    missing, unexpected = model.load_state_dict(
        convert_avsegformer_head(fx["state_dict"]), strict=False
    )
    head_missing = [k for k in missing if not k.startswith(("audio_proj.",))]
    assert head_missing == [] and unexpected == []
    features = {f"res{i + 2}": f for i, f in enumerate(fx["inputs"]["feats"])}
    return fx, model, features


@torch.no_grad()
def test_head_outputs_match_reference(head_case):
    fx, model, features = head_case
    outputs = model.forward_head(features, fx["inputs"]["audio_feat"])
    assert_close(outputs["pred_logits"], fx["outputs"]["pred"], rtol=1e-4, atol=3e-5)
    assert_close(outputs["mask_feature"], fx["outputs"]["mask_feature"], rtol=1e-4, atol=2e-5)


@torch.no_grad()
def test_head_intermediates_match_reference(head_case):
    fx, model, features = head_case
    ref = fx["intermediates"]
    audio = fx["inputs"]["audio_feat"]
    raw_mask_feature, memory, shapes, start_index = model.pixel_decoder.forward_features(features)
    assert shapes.tolist() == ref["encoder_spatial_shapes"].tolist()
    assert start_index.tolist() == ref["encoder_level_start_index"].tolist()
    assert_close(memory, ref["transformer_memory"], rtol=1e-4, atol=6e-5)

    generated = model.query_generator(audio)
    assert_close(generated, ref["query_generator_out"], rtol=1e-4, atol=2e-5)
    queries = generated + model.learnable_query.weight
    last, layer_outputs = model.transformer_decoder(queries, memory, return_intermediates=True)
    assert len(layer_outputs) == len(ref["decoder_outputs"])
    for ours, theirs in zip(layer_outputs, ref["decoder_outputs"]):
        assert_close(ours, theirs, rtol=1e-4, atol=3e-5)
    assert last is layer_outputs[-1]
    gate_logits = model.mixer.gate_logits(raw_mask_feature, audio)
    assert_close(gate_logits, ref["mixer_gate_logits"], rtol=1e-4, atol=2e-5)


def test_head_init_matches_reference_statistics():
    fx = load_fixture("head_tiny.pt")
    torch.manual_seed(0)
    model = build_tiny_head(fx["config"])
    ours = model.state_dict()
    checked = 0
    for our_key, stats in convert_avsegformer_head(fx["init_stats"]).items():
        mean, std, low, high = stats.tolist()
        value = ours[our_key].double()
        if value.numel() < 64:
            continue
        # Same distribution: std within 10 %, and for uniform inits (support sqrt(3) std) the
        # same support.
        assert abs(value.std().item() - std) <= 0.1 * std + 1e-6, our_key
        if high <= 1.8 * std:
            assert value.min().item() >= low - 0.1 * abs(low) - 1e-6, our_key
            assert value.max().item() <= high + 0.1 * abs(high) + 1e-6, our_key
        checked += 1
    assert checked > 50


@torch.no_grad()
def test_query_generator_matches_reference():
    fx = load_fixture("query_generator.pt")
    cfg = fx["config"]
    qg = AudioQueryGenerator(
        num_queries=cfg["query_num"],
        embed_dim=cfg["embed_dim"],
        num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"],
        hidden_dim=cfg["hidden_dim"],
    ).eval()
    qg.load_state_dict(fx["state_dict"])
    queries, layers = qg(fx["inputs"]["audio_feat"], return_intermediates=True)
    assert_close(queries, fx["outputs"]["queries"], rtol=1e-4, atol=2e-5)
    for ours, theirs in zip(layers, fx["intermediates"]["layer_outputs"], strict=True):
        assert_close(ours, theirs, rtol=1e-4, atol=2e-5)


@torch.no_grad()
def test_mixer_matches_reference_and_handles_one_frame():
    fx = load_fixture("mixer.pt")
    mixer = CrossModalMixer(dim=fx["config"]["dim"], num_heads=fx["config"]["n_heads"]).eval()
    mixer.load_state_dict(fx["state_dict"])
    feature_map, audio = fx["inputs"]["feature_map"], fx["inputs"]["audio_feature"]
    assert_close(mixer(feature_map, audio), fx["outputs"]["out"], rtol=1e-4, atol=3e-6)
    gate_logits = mixer.gate_logits(feature_map, audio)
    assert_close(gate_logits, fx["intermediates"]["gate_logits"], rtol=1e-4, atol=3e-6)
    # One frame: the original's squeeze() crashed here; each frame is independent.
    single = mixer(feature_map[1:2], audio[1:2])
    assert single.shape == (1, *feature_map.shape[1:])
    assert_close(single[0], fx["outputs"]["out"][1], rtol=1e-4, atol=3e-6)


def test_position_encoding_matches_reference():
    fx = load_fixture("posenc.pt")
    cfg = fx["config"]
    assert cfg["normalize"] is False
    pe = PositionEmbeddingSine(num_pos_feats=cfg["num_feats"], temperature=cfg["temperature"])
    mask = fx["inputs"]["mask"]
    x = torch.zeros(mask.shape[0], 1, *mask.shape[1:])
    assert_close(pe(x, mask), fx["outputs"]["pos"], rtol=0, atol=4e-6)
    # Without a mask (the model's path) the single encoding broadcasts to the same values.
    assert_close(pe(x).expand_as(fx["outputs"]["pos"]), fx["outputs"]["pos"], rtol=0, atol=4e-6)


def _msdeform_module(fx):
    cfg = fx["config"]
    return MSDeformAttn(cfg["d_model"], cfg["n_levels"], cfg["n_heads"], cfg["n_points"]).eval()


@pytest.mark.parametrize("case", ["init", "perturbed"])
@torch.no_grad()
def test_msdeform_module_matches_reference(case):
    fx = load_fixture("msdeform.pt")
    module = _msdeform_module(fx)
    module.load_state_dict(fx["module"][case]["state_dict"])
    inputs = fx["module"]["inputs"]
    out = module(
        inputs["query"],
        inputs["reference_points"],
        inputs["input_flatten"],
        inputs["input_spatial_shapes"],
        inputs["input_level_start_index"],
        None,
    )
    atol = 5e-6 if case == "init" else 2e-5
    assert_close(out, fx["module"][case]["output"], rtol=1e-4, atol=atol)


def test_msdeform_init_matches_reference_after_head_init():
    """The head's xavier pass is undone by the deformable attention's own initialisation."""
    fx = load_fixture("msdeform.pt")
    module = _msdeform_module(fx)
    level_embed = nn.Parameter(torch.empty(3, 4))
    init_head_parameters([module], level_embed=level_embed)
    ref = fx["module"]["init"]["state_dict"]
    for key in ("sampling_offsets.weight", "sampling_offsets.bias", "attention_weights.weight"):
        assert_close(module.state_dict()[key], ref[key], rtol=0, atol=0)
    assert module.value_proj.bias.abs().max() == 0


def _loss_targets(case_name, args):
    """The fixture's float GT and flags, as the model's int64 ``sem_seg`` with 255 = ignore."""
    num_frames = args["pred_masks"].shape[0]
    if case_name.startswith("s4"):
        # The S4 loader gives the first frame of each 5-frame clip only.
        targets = torch.full((num_frames, *args["pred_masks"].shape[-2:]), 255, dtype=torch.long)
        targets[0::5] = args["gt_mask"].flatten(0, 2).long()
        return targets
    if case_name.startswith("ms3"):
        return args["gt_mask"][:, 0].long()
    targets = args["gt_mask"].clone()
    targets[args["gt_temporal_mask_flag"] == 0] = 255
    return targets


@pytest.mark.parametrize("case_name", ["s4_dice", "s4_bce", "ms3_dice", "ms3_bce", "avss"])
def test_losses_match_reference(case_name):
    case = load_fixture("losses.pt")["cases"][case_name]
    args = case["args"]
    mask_loss = "ce" if case_name == "avss" else case["kwargs"]["loss_type"]
    weights = case["kwargs"]["weight_dict"]
    criterion = AVSegFormerCriterion(
        mask_loss=mask_loss,
        mask_loss_weight=weights["iou_loss"],
        mix_loss_weight=weights["mix_loss"],
    )
    pred = args["pred_masks"].clone().requires_grad_(True)
    mask_feature = args["mask_feature"].clone().requires_grad_(True)
    losses = criterion(pred, mask_feature, _loss_targets(case_name, args))

    tol = {"rtol": 1e-5, "atol": 1e-6}
    assert_close(losses["loss_mask"].item(), case["loss_dict"]["iou_loss"], **tol)
    assert_close(losses["loss_mix"].item(), case["loss_dict"]["mix_loss"], **tol)
    total = losses["loss_mask"] + losses["loss_mix"]
    assert_close(total.detach(), case["total_loss"], **tol)

    total.backward()
    assert_close(mask_feature.grad, case["grad_mask_feature"], rtol=1e-4, atol=1e-8)
    if case_name == "avss":
        assert_close(pred.grad[0], case["grad_pred_masks_frame0"], rtol=1e-4, atol=1e-8)
        per_frame = pred.grad.double().flatten(1)
        assert_close(
            per_frame.abs().sum(1), case["grad_pred_masks_abs_sum_per_frame"], rtol=1e-4, atol=1e-9
        )
        assert_close(per_frame.sum(1), case["grad_pred_masks_sum_per_frame"], rtol=1e-4, atol=1e-8)
    else:
        assert_close(pred.grad, case["grad_pred_masks"], rtol=1e-4, atol=1e-8)
