"""Config-to-model wiring of the shipped paper configs that shapes do not reveal.

Head counts, dropout, activations and the positional encoding leave every parameter shape
unchanged, so a checkpoint loads and runs whatever they are, only with other numbers. Each shipped
YAML builds the head the way ``AVSegFormer.from_config`` does, and every setting is checked
against the original model (vvvb-github/AVSegFormer): deformable encoder 6 layers, 3 levels,
8 heads, 4 points, GELU FFN 2048, dropout 0.1; sine positional encoding of raw indices
(normalize=False), temperature 10000, 128 features per axis; query generator 300 queries, 6 layers,
8 heads, GELU FFN 1024, no dropout, no attention bias; decoder 6 layers, 8 heads, GELU FFN 2048,
dropout 0.1 on attention weights and residual branches; mixer 8 heads without q/kv bias; mask head
MLP 300 -> 2048 -> 2048 -> 256 and conv head 256 -> 128 -> (x4) -> 32 -> K without bias.
"""

import pytest
import torch.nn.functional as F
from detectron2.modeling import build_backbone
from helpers import load_config
from torch import nn

from avsegformer.modeling.meta_arch.avsegformer import AVSegFormer

PAPER_CONFIGS = {
    f"{task}/avsegformer_{backbone}.yaml": classes
    for task, classes in (("s4", 1), ("ms3", 1), ("avss", 71))
    for backbone in ("R50", "pvtv2_b5")
}


def build_head(config: str) -> dict[str, nn.Module]:
    cfg = load_config(config)
    cfg.MODEL.DEVICE = "cpu"
    # Backbone depth does not change its output shapes, which are all the head sees.
    cfg.MODEL.PVT.DEPTHS = [1, 1, 1, 1]
    return AVSegFormer.build_head(cfg, build_backbone(cfg).output_shape())


@pytest.fixture(scope="module", params=list(PAPER_CONFIGS))
def head(request):
    return request.param, build_head(request.param)


def dropouts(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]


def test_pixel_decoder_settings(head):
    _, modules = head
    decoder = modules["pixel_decoder"]
    assert decoder.conv_dim == 256 and decoder.num_levels == 3
    assert decoder.transformer_in_features == ["res3", "res4", "res5"]
    layers = decoder.encoder.layers
    assert len(layers) == 6
    for layer in layers:
        attn = layer.self_attn
        assert (attn.n_heads, attn.n_levels, attn.n_points) == (8, 3, 4)
        assert layer.linear1.out_features == 2048
        assert layer.activation is F.gelu
        assert dropouts(layer) == [0.1, 0.1, 0.1]
    pe = decoder.pe_layer
    assert (pe.normalize, pe.temperature, pe.num_pos_feats) == (False, 10000.0, 128)
    groups = [m.num_groups for m in decoder.modules() if isinstance(m, nn.GroupNorm)]
    assert groups and set(groups) == {32}


def test_query_generator_and_learnable_queries(head):
    _, modules = head
    generator = modules["query_generator"]
    assert generator.query.weight.shape == (300, 256)
    assert len(generator.layers) == 6
    for layer in generator.layers:
        for attn in (layer.self_attn, layer.cross_attn):
            assert attn.num_heads == 8 and attn.dropout == 0.0 and attn.in_proj_bias is None
        assert layer.ffn[0].out_features == 1024 and isinstance(layer.ffn[1], nn.GELU)
        assert dropouts(layer) == []
    assert modules["learnable_query"].weight.shape == (300, 256)


def test_transformer_decoder_settings(head):
    _, modules = head
    layers = modules["transformer_decoder"].layers
    assert len(layers) == 6
    for layer in layers:
        for attn in (layer.self_attn, layer.cross_attn):
            assert attn.num_heads == 8 and attn.dropout == 0.1 and attn.in_proj_bias is not None
        assert layer.linear1.out_features == 2048
        assert layer.activation is F.gelu
        assert dropouts(layer) == [0.1] * 4


def test_mixer_and_mask_head(head):
    config, modules = head
    mixer = modules["mixer"]
    assert mixer.num_heads == 8 and mixer.q_proj.bias is None and mixer.kv_proj.bias is None
    assert mixer.proj.bias is not None
    mlp = modules["mask_head"].mlp.layers
    assert [(c.in_channels, c.out_channels) for c in mlp] == [
        (300, 2048),
        (2048, 2048),
        (2048, 256),
    ]
    fc = modules["mask_head"].fc
    assert (fc[0].in_channels, fc[0].out_channels, fc[0].kernel_size) == (256, 128, (3, 3))
    assert fc[1].scale_factor == 4 and fc[1].mode == "bilinear" and not fc[1].align_corners
    assert (fc[2].out_channels, fc[2].kernel_size) == (32, (3, 3)) and isinstance(fc[3], nn.ReLU)
    assert fc[4].out_channels == PAPER_CONFIGS[config] and fc[4].bias is None


def test_pixel_decoder_takes_mask2former_settings_from_the_config():
    """The shared pixel decoder serves other models: ReLU FFN of width 1024 and normalised
    positions (Mask2Former's) come from config keys, not from code changes."""
    cfg = load_config("s4/avsegformer_R50.yaml")
    cfg.MODEL.DEVICE = "cpu"
    head = cfg.MODEL.SEM_SEG_HEAD
    head.DEFORMABLE_TRANSFORMER_ENCODER_ACTIVATION = "relu"
    head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024
    head.POSITION_ENCODING_NORMALIZE = True
    decoder = AVSegFormer.build_head(cfg, build_backbone(cfg).output_shape())["pixel_decoder"]
    for layer in decoder.encoder.layers:
        assert layer.activation is F.relu and layer.linear1.out_features == 1024
    assert decoder.pe_layer.normalize
    head.DEFORMABLE_TRANSFORMER_ENCODER_ACTIVATION = "swish"
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        AVSegFormer.build_head(cfg, build_backbone(cfg).output_shape())
