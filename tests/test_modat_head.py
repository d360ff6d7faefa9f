"""The MoDAT head (everything after the backbones) against the original code's reduced head.

Fixture: ``<repo>/../shared/reference/modat/fixtures/head_tiny.pt`` (binary and AVSS cases);
tolerances from its README. The MoE draws come from the global generator, seeded right before
the forward as the fixture was made.
"""

import pytest
import torch
from helpers import FeaturesBackbone, load_config, load_fixture
from torch import nn
from torch.testing import assert_close

from avsegformer.checkpoint import convert_modat_head
from avsegformer.modeling.meta_arch import MoDAT


def tiny_modat_cfg(num_classes: int):
    """The fixture's reduced head: 20 queries, 2 encoder and 2 decoder layers with FFN 512."""
    cfg = load_config("Base-AVSegFormer.yaml")
    cfg.MODEL.META_ARCHITECTURE = "MoDAT"
    m = cfg.MODEL.AVSEGFORMER
    m.NUM_CLASSES = num_classes
    m.MASK_LOSS = "dice" if num_classes == 1 else "ce"
    m.NUM_QUERIES = 20
    m.DEC_LAYERS = 2
    m.DIM_FEEDFORWARD = 512
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 2
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 512
    return cfg


def build_modat_head(num_classes: int) -> MoDAT:
    cfg = tiny_modat_cfg(num_classes)
    backbone = FeaturesBackbone([64, 128, 320, 512], [4, 8, 16, 32])
    modules = MoDAT.build_head(cfg, backbone.output_shape())
    model = MoDAT(
        backbone=backbone,
        audio_backbone=nn.Identity(),
        audio_proj=nn.Linear(128, 256),
        **modules,
        criterion=nn.Identity(),
        num_classes=num_classes,
        freeze_audio_backbone=True,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        size_divisibility=32,
    )
    return model.eval()


@pytest.fixture(scope="module")
def head_fixture():
    return load_fixture("modat/fixtures/head_tiny.pt")


@pytest.mark.parametrize("case_name", ["binary", "avss"])
@torch.no_grad()
def test_head_matches_reference(head_fixture, case_name):
    fx = head_fixture
    case = fx["cases"][case_name]
    model = build_modat_head(1 if case_name == "binary" else 71)
    state = {**fx["state_dict"], **case.get("state_dict_overrides", {})}
    missing, unexpected = model.load_state_dict(convert_modat_head(state), strict=False)
    assert [k for k in missing if not k.startswith("audio_proj.")] == [] and unexpected == []

    features = {f"res{i + 2}": f for i, f in enumerate(case["inputs"]["feats"])}
    audio = case["inputs"]["audio_feat"]
    ref = case["intermediates"]
    torch.manual_seed(fx["moe_seed"])
    outputs = model.forward_head(features, audio)
    atol = 2e-5 if case_name == "binary" else 9e-6
    assert_close(outputs["pred_logits"], case["outputs"]["pred"], rtol=1e-4, atol=atol)
    assert_close(outputs["mask_feature"], case["outputs"]["mask_feature"], rtol=1e-4, atol=2e-5)
    assert_close(outputs["balance_loss"], case["outputs"]["loss"], rtol=0, atol=1e-6)

    _, memory, shapes, _, levels = model.pixel_decoder.forward_features_and_levels(features)
    assert shapes.tolist() == ref["encoder_spatial_shapes"].tolist()
    assert_close(memory, ref["transformer_memory"], rtol=1e-4, atol=6e-5)
    queries, components = model.query_generator(audio, levels)
    assert_close(queries, ref["query_generator_out"], rtol=1e-4, atol=3e-5)
    assert_close(components, ref["generator_kv"], rtol=1e-4, atol=6e-6)

    # Another seed routes differently; the balance loss does not depend on the draws.
    torch.manual_seed(fx["moe_seed"] + 1)
    other = model.forward_head(features, audio)
    assert (other["mask_feature"] - outputs["mask_feature"]).abs().max() > 1e-2
    assert torch.equal(other["balance_loss"], outputs["balance_loss"])
