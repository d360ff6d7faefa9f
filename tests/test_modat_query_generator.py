"""MoDAT's query generator (early fusion + encoder-decoder layers) against the original code.

Fixture: ``<repo>/../shared/reference/modat/fixtures/query_generator.pt``; tolerances from its
README.
"""

import torch
from helpers import load_fixture
from torch.testing import assert_close

from avsegformer.checkpoint import convert_modat_query_generator
from avsegformer.modeling.transformer import AudioQueryGeneratorLayer, EncoderDecoderQueryGenerator


def build_generator(fx) -> EncoderDecoderQueryGenerator:
    generator = EncoderDecoderQueryGenerator(num_queries=fx["outputs"]["query"].shape[1])
    generator.load_state_dict(convert_modat_query_generator(fx["state_dict"]), strict=True)
    return generator.eval()


def test_query_generator_matches_reference():
    fx = load_fixture("modat/fixtures/query_generator.pt")
    generator = build_generator(fx)
    srcs, audio = list(fx["inputs"]["srcs"]), fx["inputs"]["audio_feat"]
    with torch.no_grad():
        query, kv, layers = generator(audio, srcs, return_intermediates=True)
        mta = [layer(audio, level) for layer, level in zip(generator.early_fusion.layers, srcs)]
    assert query.shape == (2, 20, 256) and kv.shape == (2, 3, 256)
    assert_close(kv, fx["outputs"]["kv"], rtol=1e-4, atol=6e-6)
    assert_close(query, fx["outputs"]["query"], rtol=1e-4, atol=3e-5)
    for ours, ref in zip(mta, fx["intermediates"]["mta_layer_outputs"]):
        assert_close(ours, ref, rtol=1e-4, atol=6e-6)
    for ours, ref in zip(layers, fx["intermediates"]["decoder_layer_outputs"]):
        assert_close(ours, ref, rtol=1e-4, atol=3e-5)
    # The generator reuses AVSegFormer's layer (no copy).
    assert all(type(layer) is AudioQueryGeneratorLayer for layer in generator.decoder)


def test_one_row_equals_running_every_query():
    """All queries start equal, so computing one row and broadcasting is the full computation."""
    torch.manual_seed(0)
    generator = EncoderDecoderQueryGenerator(
        num_queries=7, embed_dim=32, num_heads=4, hidden_dim=64
    ).eval()
    srcs = [torch.randn(2, 32, s, s) for s in (8, 4, 2)]
    audio = torch.randn(2, 1, 32)
    with torch.no_grad():
        query, kv = generator(audio, srcs)
        full = audio.repeat(1, 7, 1)
        outputs = []
        for layer in generator.decoder:
            full = layer(full, kv)
            outputs.append(full)
        full = generator.conv(torch.stack(outputs, 1)).squeeze(1)
    assert_close(query, full, rtol=1e-5, atol=1e-6)


def test_parameter_count_matches_the_original_without_the_unused_conv():
    generator = EncoderDecoderQueryGenerator()
    count = sum(p.numel() for p in generator.parameters())
    # 6,110,980 in the original, of which 590,592 are the never-used 3x3 conv + BatchNorm.
    assert count == 6_110_980 - 590_592
