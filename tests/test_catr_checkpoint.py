"""Original CATR checkpoints -> our CATR model names (key map, family, converter tool).

No CATR checkpoint is released, but its exact key list is
(``<repo>/../shared/reference/catr/CATR_pvt2_s4.keys.txt``). Each test synthesises a state dict
with those names where entry ``i`` holds the value ``i``, states the key map a second time
independently of the converter (:func:`expected_target`) and checks that every value lands where
that map says. The strict load into the built model is checked by the standalone test.
"""

import logging
import re

import pytest
import torch
from helpers import (
    expected_pvt_v2_name,
    load_tool,
    misplaced_entries,
    read_key_list,
    synthesize_state_dict,
)

from avsegformer.checkpoint import (
    convert_catr_checkpoint,
    convert_checkpoint,
    convert_pvt_v2,
    detect_checkpoint_family,
    families,
)

convert_checkpoint_main = load_tool("convert_checkpoint").main

KEY_LIST = "catr/CATR_pvt2_s4.keys.txt"
OTHER_KEY_LISTS = [
    "AVSegFormer_res50_s4.keys.txt",
    "AVSegFormer_pvt2_avss.keys.txt",
    "modat/MoDAT_pvt2_s4.keys.txt",
    "combo/COMBO_PVTV2B5_s4.keys.txt",
    "combo/COMBO_R50_s4.keys.txt",
    "vggish_keys.txt",
]
# The weights the released model saves but never uses, from the list of its dead modules: the
# FeatureFusionBlocks, the stride-4 projection, the never-called fusion modules, the unused
# 15680-channel convs and the last temporal layer's audio update.
DEAD_PREFIXES = (
    "path1.",
    "path2.",
    "path3.",
    "path4.",
    "conv1.",
    "fusion_module.",
    "transformer.temporal_encoder.av_atten.",
    "transformer.temporal_encoder.va_atten.",
    "transformer.temporal_encoder.layers.2.va_atten.",
)
# Spec figures: 118,599,462 parameters + 1026 BatchNorm buffer values, 11,931,520 of them dead.
DEAD_VALUES = 11_931_520
LIVE_VALUES = 118_599_462 + 1026 - DEAD_VALUES


@pytest.fixture(scope="module")
def entries():
    return read_key_list(KEY_LIST)


def synthesize(entries) -> dict[str, torch.Tensor]:
    return synthesize_state_dict(entries)


def expected_target(source: str) -> str | None:
    """Our name of an original entry (None: dropped): the backbone moves from
    ``encoder_backbone.`` to ``backbone.`` with timm's PVTv2 names, the rest keeps its name."""
    if source.startswith(DEAD_PREFIXES) or ".vid_embed_proj." in source:
        return None
    if source.startswith("encoder_backbone."):
        return "backbone." + expected_pvt_v2_name(source[len("encoder_backbone.") :])
    return source


def misplaced(converted: dict, entries) -> list[str]:
    """Converted names that do not hold their source's value, are missing or not expected."""
    expected = {
        target: index
        for index, (name, _, _) in enumerate(entries)
        if (target := expected_target(name)) is not None
    }
    return misplaced_entries(converted, expected)


def test_every_entry_lands_in_place_and_the_dead_ones_go_with_one_log_line(entries, caplog):
    assert len(entries) == 1351
    with caplog.at_level(logging.INFO, logger="avsegformer.checkpoint"):
        output = convert_checkpoint(synthesize(entries), source="S4_best.pth")
    converted = output["model"]
    assert misplaced(converted, entries) == []
    assert sum(t.numel() for t in converted.values()) == LIVE_VALUES
    assert not any(k.startswith(("encoder_backbone.", "audio_backbone.")) for k in converted)
    # The top-level video projection is live; the decoder's degenerate first layer is kept.
    assert "vid_embed_proj.weight" in converted
    assert "transformer.decoder.layers.0.self_attn.in_proj_weight" in converted
    assert "transformer.temporal_encoder.layers.1.va_atten.multihead_attn.in_proj_weight" in (
        converted
    )
    assert "transformer.temporal_encoder.output2.1.num_batches_tracked" in converted

    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1, dropped
    assert f"74 tensors, {DEAD_VALUES} values" in dropped[0]
    assert dropped[0].startswith("CATR PVTv2: dropped the weights the original never uses")

    assert output["family"] == "CATR"
    assert output["__author__"] == "aspirinone/CATR.github.io (converted)"
    facts = {k: v for k, v in output.items() if k not in ("model", "__author__", "family")}
    assert facts == {
        "matching_heuristics": False,
        "backbone": "PVTv2-B5",
        "num_classes": 1,
        "num_queries": 50,
        "encoder_layers": 3,
        "decoder_layers": 3,
        "dim_feedforward": 2048,
        "audio_backbone": "not included: MODEL.AUDIO.WEIGHTS gives VGGish",
    }


def test_backbone_maps_as_an_official_pvt_file_does(entries):
    """The backbone map is the project's PVTv2 map, not a second one."""
    original = synthesize(entries)
    backbone = {
        k[len("encoder_backbone.") :]: v
        for k, v in original.items()
        if k.startswith("encoder_backbone.")
    }
    assert len(backbone) == 1052
    converted = convert_catr_checkpoint(original)
    for name, tensor in convert_pvt_v2(backbone).items():
        assert converted[f"backbone.{name}"] is tensor, name


def test_a_swapped_pair_is_caught(entries):
    converted = convert_catr_checkpoint(synthesize(entries))
    a, b = "conv2.conv2d_list.0.weight", "conv3.conv2d_list.0.weight"
    converted[a], converted[b] = converted[b], converted[a]
    assert sorted(misplaced(converted, entries)) == sorted([a, b])


def test_wrappers_and_module_prefix_give_the_same_result(entries):
    plain = convert_catr_checkpoint(synthesize(entries))
    wrapped = convert_catr_checkpoint({"model": synthesize(entries), "epoch": 3})
    prefixed = convert_catr_checkpoint({f"module.{k}": v for k, v in synthesize(entries).items()})
    assert set(plain) == set(wrapped) == set(prefixed)
    assert all(torch.equal(plain[k], prefixed[k]) for k in plain)


@pytest.mark.parametrize(
    "bogus",
    [
        "conv5.conv2d_list.0.weight",
        "conv2.conv2d_list.4.weight",
        "transformer.temporal_encoder.gate.weight",
        "transformer.decoder.layers.0.norm4.weight",
        "spatial_decoder.lay5.weight",
        "instance_kernels_head.layers.2.weight",
        "encoder_backbone.head.weight",
        "audio_extractor.features.0.weight",
    ],
)
def test_unknown_entries_are_an_error_that_names_them(entries, bogus):
    with pytest.raises(KeyError, match=re.escape(bogus)):
        convert_catr_checkpoint({**synthesize(entries), bogus: torch.zeros(1)})


def test_a_checkpoint_without_pvt_backbone_is_refused(entries):
    without = {k: v for k, v in synthesize(entries).items() if "patch_embed1" not in k}
    with pytest.raises(ValueError, match="PVTv2-B5 only"):
        convert_catr_checkpoint(without)


def test_the_families_never_confuse_catr_and_other_checkpoints(entries):
    catr = families._FAMILIES["CATR"]
    state_dict = synthesize(entries)
    assert detect_checkpoint_family(state_dict).name == "CATR"
    others = [f.name for f in families._FAMILIES.values() if f is not catr]
    assert not [name for name in others if families._FAMILIES[name].recognizes(state_dict)]
    for keys in OTHER_KEY_LISTS:
        assert not catr.recognizes(synthesize(read_key_list(keys))), keys
    # A converted file (our names) is not mistaken for an original one.
    assert not catr.recognizes(convert_catr_checkpoint(state_dict))


def test_convert_checkpoint_tool_accepts_catr(entries, tmp_path):
    source, destination = tmp_path / "S4_best.pth", tmp_path / "out" / "catr_pvtv2_s4.pth"
    torch.save(synthesize(entries), source)
    convert_checkpoint_main([str(source), str(destination)])
    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert (saved["family"], saved["source"], saved["backbone"]) == (
        "CATR",
        "S4_best.pth",
        "PVTv2-B5",
    )
    assert misplaced(saved["model"], entries) == []

    torch.save({**synthesize(entries), "spatial_decoder.extra.weight": torch.ones(1)}, source)
    with pytest.raises(SystemExit, match=r"S4_best.pth.*spatial_decoder\.extra\.weight"):
        convert_checkpoint_main([str(source), str(tmp_path / "bad.pth")])
    assert not (tmp_path / "bad.pth").exists()


def test_keeping_unused_entries_is_refused_for_families_without_such_a_model():
    state_dict = synthesize_state_dict(read_key_list("AVSegFormer_res50_s4.keys.txt"))
    with pytest.raises(ValueError, match="AVSegFormer checkpoint's unused entries cannot be kept"):
        convert_checkpoint(state_dict, "res50.pth", keep_unused=True)


def test_convert_tool_keeps_unused_entries(tmp_path):
    source, destination = tmp_path / "S4_best.pth", tmp_path / "strict.pth"
    torch.save(synthesize_state_dict(read_key_list(KEY_LIST)), source)
    convert_checkpoint_main(["--keep-unused", str(source), str(destination)])
    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert saved["unused_entries_kept"] and "path1.resConfUnit1.conv1.weight" in saved["model"]
