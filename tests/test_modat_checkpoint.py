"""Original MoDAT checkpoints -> our MoDAT model (key map, converter tool, parameter counts).

As for AVSegFormer, the checkpoints are not available but their key lists are
(``<repo>/../shared/reference/modat/*.keys.txt``): entry ``i`` of a synthesised state dict holds
the value ``i``, and each value must land where an independently stated key map says. Entries
MoDAT shares with AVSegFormer must map as AVSegFormer's converter maps them.
"""

import logging

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import CONFIG_DIR, load_tool, read_key_list, synthesize_state_dict

from avsegformer import add_avsegformer_config
from avsegformer.checkpoint import (
    convert_avsegformer_checkpoint,
    convert_checkpoint,
    convert_modat_checkpoint,
)

convert_checkpoint_main = load_tool("convert_checkpoint").main

DEAD = ("head.query_generator.early_fusion.conv.", "head.fpn.", "head.attn_fc.")
MODAT_ONLY = ("head.query_generator.", "head.fusion_block.")


def modat_config(task: str):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(CONFIG_DIR / task / "modat_pvtv2_b5.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.AUDIO.WEIGHTS = ""
    return cfg


@pytest.fixture(scope="module")
def s4_model():
    """The full-size S4 model (about 0.8 GB), built once."""
    model = build_model(modat_config("s4"))
    yield model
    del model


def expected_modat_target(source: str) -> tuple[str, bool] | None:
    """Our name for a MoDAT-only entry and whether it is transposed; None if dropped."""
    if source.startswith(DEAD):
        return None
    name = source.removeprefix("head.")
    name = name.replace("fusion_block.", "mixer.").replace(".experts.experts.", ".experts.")
    if name.endswith(".gate.w_gating"):
        return name.replace(".gate.w_gating", ".gate.proj.weight"), True
    return name, False


@pytest.mark.parametrize("task", ["s4", "ms3", "avss"])
def test_original_checkpoint_maps_every_entry(task, s4_model, caplog):
    entries = read_key_list(f"modat/MoDAT_pvt2_{task}.keys.txt")
    original = synthesize_state_dict(entries)
    with caplog.at_level(logging.INFO, logger="avsegformer.checkpoint"):
        output = convert_checkpoint(original, source=f"MoDAT_{task}.pth")
    assert output["family"] == "MoDAT" and output["__author__"] == "jnjz/MoDAT (converted)"
    assert output["num_classes"] == (71 if task == "avss" else 1)
    converted = output["model"]

    shared = {k: v for k, v in original.items() if not k.startswith(MODAT_ONLY)}
    shared_map = convert_avsegformer_checkpoint(shared)
    expected = {}
    for index, (source, shape, _) in enumerate(entries):
        if source.startswith(MODAT_ONLY):
            target = expected_modat_target(source)
            if target is None:
                continue
            name, transposed = target
            expected[name] = (index, tuple(reversed(shape)) if transposed else shape)
    for name, tensor in shared_map.items():
        expected[name] = (int(tensor.flatten()[0]), tuple(tensor.shape))
    assert set(converted) == set(expected)
    for name, (index, shape) in expected.items():
        assert tuple(converted[name].shape) == shape, name
        assert (converted[name] == index).all(), name

    ours = s4_model.state_dict()
    assert set(converted) == set(ours), "every model entry is filled, nothing else"
    if task != "avss":
        s4_model.load_state_dict(converted, strict=True)
        w_gating = original["head.fusion_block.channel_attn.gate.w_gating"]
        assert torch.equal(s4_model.mixer.channel_attn.gate.proj.weight.t(), w_gating.float())
    for prefix in DEAD:
        lines = [r.getMessage() for r in caplog.records if f"dropped {prefix}*" in r.getMessage()]
        assert len(lines) == 1, prefix


def test_parameter_counts_match_the_original(s4_model):
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # The original's totals minus the groups it never uses (MTA conv 590,592; fpn 1,770,240;
    # attn_fc 331,968), which are not built here.
    dead = 590_592 + 1_770_240 + 331_968
    assert count(s4_model) == 193_918_854 - dead
    assert count(s4_model.backbone) == 81_443_008
    assert count(s4_model.audio_backbone) == 72_141_184
    assert count(s4_model.audio_proj) == 33_024
    head = count(s4_model) - 81_443_008 - 72_141_184 - 33_024
    assert head == 40_301_638 - dead
    assert count(s4_model.mixer) == 8_401_922
    assert count(s4_model.query_generator) == 6_110_980 - 590_592


def test_converter_tool_accepts_modat_and_refuses_unknown_entries(tmp_path):
    entries = read_key_list("modat/MoDAT_pvt2_s4.keys.txt")
    original = synthesize_state_dict(entries)
    source, destination = tmp_path / "MoDAT_s4.pth", tmp_path / "modat_s4.pth"
    torch.save(original, source)
    convert_checkpoint_main([str(source), str(destination)])
    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert saved["family"] == "MoDAT" and saved["backbone"] == "PVTv2-B5"
    assert saved["model"].keys() == convert_modat_checkpoint(original).keys()

    original["head.fusion_block.channel_attn.experts.experts.16.proj.bias"] = torch.zeros(256)
    torch.save(original, source)
    with pytest.raises(SystemExit, match=r"1 unknown entries: head\.fusion_block\.channel_attn"):
        convert_checkpoint_main([str(source), str(tmp_path / "bad.pth")])
    del original["head.fusion_block.channel_attn.experts.experts.16.proj.bias"]
    original["head.fusion_block.channel_attn.gate.w_noise"] = torch.zeros(256, 16)
    torch.save(original, source)
    with pytest.raises(SystemExit, match=r"unknown entries: .*gate\.w_noise"):
        convert_checkpoint_main([str(source), str(tmp_path / "bad.pth")])
    assert not (tmp_path / "bad.pth").exists()
