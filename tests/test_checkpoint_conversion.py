"""Original AVSegFormer and pretrained checkpoints -> our models (key maps, tools, param counts).

The original checkpoints are not available; their exact key lists and shapes are
(``<repo>/../shared/reference/*.keys.txt``). Each test synthesises a state dict with those names and
shapes, where entry number ``i`` holds the value ``i`` everywhere (a float16 scalar expanded to the
shape: no memory, exact up to 2048), so every source tensor has its own value. The key map is
stated a second time here, independently of the converter's rules (:func:`expected_target`), and
each value is checked to land in the model entry that map names.
"""

import argparse
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import expected_pvt_v2_name, load_tool, read_key_list
from helpers import synthesize_state_dict as synthesize

from avsegformer import add_avsegformer_config
from avsegformer.checkpoint import (
    convert_avsegformer_checkpoint,
    convert_checkpoint,
    detect_checkpoint_family,
    families,
    load_pretrained_audio_backbone,
    register_checkpoint_family,
    unwrap_state_dict,
)
from avsegformer.modeling.audio_backbone import build_audio_backbone

REPO = Path(__file__).resolve().parents[1]
convert_checkpoint_tool = load_tool("convert_avsegformer_checkpoint")
convert_pretrained_tool = load_tool("convert_pretrained_weights")

convert_checkpoint_main = load_tool("convert_checkpoint").main

CASES = {
    # key list -> config of the matching model
    "AVSegFormer_res50_s4": "s4/avsegformer_R50.yaml",
    "AVSegFormer_res50_ms3": "ms3/avsegformer_R50.yaml",
    "AVSegFormer_res50_avss": "avss/avsegformer_R50.yaml",
    "AVSegFormer_pvt2_s4": "s4/avsegformer_pvtv2_b5.yaml",
    "AVSegFormer_pvt2_ms3": "ms3/avsegformer_pvtv2_b5.yaml",
    "AVSegFormer_pvt2_avss": "avss/avsegformer_pvtv2_b5.yaml",
}
DEAD_GROUPS = {
    "res50": ["backbone.layer3_2.", "backbone.layer4_2.", "head.fpn.", "head.attn_fc."],
    "pvt2": ["head.fpn.", "head.attn_fc."],
}


def config(relative_path: str):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / relative_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.AUDIO.WEIGHTS = ""
    return cfg


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """One full-size model per key list, built once for this module (about 1 GB each)."""
    name = request.param
    entries = read_key_list(f"{name}.keys.txt")
    model = build_model(config(CASES[name]))
    yield name, entries, model
    del model


# The key map, stated from the model descriptions rather than from the converter's rules.
_HEAD_PREFIXES = [
    ("head.level_embed", "pixel_decoder.level_embed"),
    ("head.in_proj.", "pixel_decoder.input_proj."),
    ("head.transformer.encoder.", "pixel_decoder.encoder."),
    ("head.lateral_conv.", "pixel_decoder.lateral_conv."),
    ("head.out_conv.", "pixel_decoder.output_conv."),
    ("head.query_generator.", "query_generator."),
    ("head.learnable_query.", "learnable_query."),
    ("head.transformer.decoder.", "transformer_decoder."),
    ("head.fusion_block.", "mixer."),
    ("head.mlp.", "mask_head.mlp."),
    ("head.fc.", "mask_head.fc."),
    ("vggish.", "audio_backbone."),
    ("audio_proj.", "audio_proj."),
]
_RESNET_STAGES = {"layer1": "res2", "layer2": "res3", "layer3_1": "res4", "layer4_1": "res5"}


def _expected_resnet(parts: list[str]) -> str:
    if parts[0] == "conv1":
        return "stem.conv1." + parts[1]
    if parts[0] == "bn1":
        return "stem.conv1.norm." + parts[1]
    stage, block, layer, leaf = _RESNET_STAGES[parts[0]], parts[1], parts[2], parts[-1]
    if layer.startswith("conv"):
        return f"{stage}.{block}.{layer}.{leaf}"
    if layer.startswith("bn"):
        return f"{stage}.{block}.conv{layer[2:]}.norm.{leaf}"
    assert layer == "downsample", parts
    return f"{stage}.{block}.shortcut{'' if parts[3] == '0' else '.norm'}.{leaf}"


def expected_target(source: str) -> str | None:
    """Our name for an original entry, or None for the groups the original never uses."""
    if source.startswith(tuple(sum(DEAD_GROUPS.values(), []))):
        return None
    for old, new in _HEAD_PREFIXES:
        if source.startswith(old):
            return new + source[len(old) :]
    parts = source.split(".")[1:]
    assert source.startswith("backbone."), source
    if parts[0].startswith(("patch_embed", "block")) or re.fullmatch(r"norm\d", parts[0]):
        return "backbone." + expected_pvt_v2_name(".".join(parts))
    return "backbone." + _expected_resnet(parts)


def test_original_checkpoint_loads_strictly_with_every_value_in_place(case, caplog):
    name, entries, model = case
    original = synthesize(entries)
    with caplog.at_level(logging.INFO, logger="avsegformer.checkpoint"):
        converted = convert_avsegformer_checkpoint(original)
    model.load_state_dict(converted, strict=True)

    ours = model.state_dict()
    targets = {}
    for index, (source, _, _) in enumerate(entries):
        target = expected_target(source)
        if target is None:
            continue
        targets[target] = source
        # The value of entry ``index``, everywhere in the model entry the map names.
        assert torch.equal(ours[target], torch.full_like(ours[target], index)), (source, target)
    assert set(targets) == set(ours), "every model entry is filled by exactly one original entry"
    assert len(targets) == len(converted)

    # Only the dead groups were dropped, each announced by exactly one log line.
    dead = DEAD_GROUPS[name.split("_")[1]]
    dropped = set(original) - set(targets.values())
    assert dropped == {k for k in original if k.startswith(tuple(dead))}
    for prefix in dead:
        lines = [r.getMessage() for r in caplog.records if f"dropped {prefix}*" in r.getMessage()]
        assert len(lines) == 1, prefix


def test_a_swapped_pair_of_entries_is_caught(case):
    """The check above fails for a converter that puts two same-shaped entries in each
    other's place (here two norms of a decoder layer)."""
    name, entries, model = case
    index_of = {source: i for i, (source, _, _) in enumerate(entries)}
    converted = convert_avsegformer_checkpoint(synthesize(entries))
    a, b = "transformer_decoder.layers.0.norm1.weight", "transformer_decoder.layers.0.norm2.weight"
    converted[a], converted[b] = converted[b], converted[a]
    model.load_state_dict(converted, strict=True)
    source = "head.transformer.decoder.layers.0.norm1.weight"
    assert expected_target(source) == a
    assert not torch.equal(model.state_dict()[a], torch.full_like(converted[a], index_of[source]))


def test_converted_file_loads_with_detection_checkpointer(case, tmp_path):
    name, entries, model = case
    source = tmp_path / f"{name}.pth"
    destination = tmp_path / f"{name}_converted.pth"
    torch.save(synthesize(entries), source)
    convert_checkpoint_tool.main([str(source), str(destination)])

    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert saved["family"] == "AVSegFormer"
    assert saved["backbone"] == ("R50" if "res50" in name else "PVTv2-B5")
    assert saved["num_classes"] == (71 if "avss" in name else 1)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(destination)))
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    checkpointer.load(str(destination))  # the public path, with its logging, works too


# The original models' parameter counts, without their dead groups.
PARAMETER_COUNTS = {"AVSegFormer_res50_s4": 126_737_216, "AVSegFormer_pvt2_s4": 183_951_296}


def test_parameter_counts(case):
    name, entries, model = case
    count = sum(p.numel() for p in model.parameters())
    # The original checkpoint's parameters (float entries but BatchNorm statistics) without its
    # dead groups.
    dead = tuple(DEAD_GROUPS[name.split("_")[1]])
    original = sum(
        int(np.prod(shape))
        for key, shape, dtype in entries
        if dtype == "float32"
        and not key.startswith(dead)
        and not key.endswith(("running_mean", "running_var"))
    )
    assert count == original
    if name in PARAMETER_COUNTS:
        assert count == PARAMETER_COUNTS[name]


# ---------------------------------------------------------------------------------------------
# wrappers, prefixes and errors (no model needed)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r50_checkpoint():
    return synthesize(read_key_list("AVSegFormer_res50_s4.keys.txt"))


def test_wrappers_and_module_prefix_give_the_same_result(r50_checkpoint):
    bare = convert_avsegformer_checkpoint(r50_checkpoint)
    prefixed = {f"module.{k}": v for k, v in r50_checkpoint.items()}
    for variant in (
        {"model": r50_checkpoint},
        {"state_dict": r50_checkpoint, "epoch": 3},
        prefixed,
        {"model": prefixed},
    ):
        converted = convert_avsegformer_checkpoint(variant)
        assert converted.keys() == bare.keys()
        assert all(converted[k] is bare[k] for k in bare)


def test_unknown_entries_are_an_error_that_names_them(r50_checkpoint):
    for bogus in (
        "head.bogus.weight",
        "head.query_generator.layers.0.bogus.weight",
        "backbone.layer5.0.conv1.weight",
        "vggish.features.1.weight",
    ):
        with pytest.raises(KeyError, match=re.escape(bogus)):
            convert_avsegformer_checkpoint({**r50_checkpoint, bogus: torch.zeros(1)})


def test_inputs_that_are_not_avsegformer_state_dicts():
    with pytest.raises(ValueError, match="not a state dict"):
        convert_avsegformer_checkpoint([torch.zeros(1)])
    with pytest.raises(ValueError, match="not tensors"):
        convert_avsegformer_checkpoint({"model": {"backbone.conv1.weight": 1.0}})
    with pytest.raises(ValueError, match="neither backbone.conv1.weight"):
        convert_avsegformer_checkpoint({"head.level_embed": torch.zeros(3, 256)})
    assert unwrap_state_dict({"module.a": torch.zeros(1), "module.b": torch.zeros(1)}).keys() == {
        "a",
        "b",
    }


def test_tools_refuse_files_that_are_not_state_dicts(tmp_path):
    pickled = tmp_path / "pickled.pth"
    # Arbitrary pickled objects (here training arguments) are refused by weights_only loading.
    torch.save({"model": {}, "args": argparse.Namespace(lr=2e-5)}, pickled)
    with pytest.raises(SystemExit, match="could not be loaded as a plain state dict"):
        convert_checkpoint_tool.main([str(pickled), str(tmp_path / "out.pth")])
    with pytest.raises(SystemExit, match="does not exist"):
        convert_pretrained_tool.main(["resnet50", str(tmp_path / "nope.pth"), "out.pth"])
    torch.save({"conv1.weight": torch.zeros(1), "layer9.weight": torch.zeros(1)}, pickled)
    with pytest.raises(SystemExit, match="layer9.weight"):
        convert_pretrained_tool.main(["resnet50", str(pickled), str(tmp_path / "out.pth")])


# ---------------------------------------------------------------------------------------------
# checkpoint families: the source is told from its keys, unknown ones are refused
# ---------------------------------------------------------------------------------------------
def test_family_is_detected_from_the_keys(r50_checkpoint):
    assert detect_checkpoint_family(r50_checkpoint).name == "AVSegFormer"
    pvt = synthesize(read_key_list("AVSegFormer_pvt2_avss.keys.txt"))
    output = convert_checkpoint({"state_dict": pvt}, source="pvt.pth")
    assert output["family"] == "AVSegFormer"
    assert (output["backbone"], output["num_classes"]) == ("PVTv2-B5", 71)
    assert output["model"].keys() == convert_avsegformer_checkpoint(pvt).keys()


@pytest.mark.parametrize("keys", ["vggish_keys.txt"])
def test_checkpoints_of_unknown_families_are_refused(keys, tmp_path):
    checkpoint = synthesize(read_key_list(keys))
    with pytest.raises(ValueError, match="not a checkpoint of a known family .*AVSegFormer.*COMBO"):
        convert_checkpoint(checkpoint, source="other.pth")
    source = tmp_path / "other.pth"
    torch.save(checkpoint, source)
    with pytest.raises(SystemExit, match="other.pth: not a checkpoint of a known family"):
        convert_checkpoint_main([str(source), str(tmp_path / "out.pth")])
    assert not (tmp_path / "out.pth").exists()


def test_registered_families_are_used_and_must_not_overlap(monkeypatch, r50_checkpoint):
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    register_checkpoint_family(
        "Toy",
        author="nowhere/toy",
        recognizes=lambda sd: "toy.weight" in sd,
        convert=lambda sd: {"renamed.weight": sd["toy.weight"]},
        describe=lambda converted: {"num_classes": 3},
    )
    output = convert_checkpoint({"toy.weight": torch.ones(2)})
    assert output["family"] == "Toy" and output["__author__"] == "nowhere/toy (converted)"
    assert list(output["model"]) == ["renamed.weight"] and output["num_classes"] == 3
    with pytest.raises(ValueError, match="already registered"):
        register_checkpoint_family(
            "Toy", author="", recognizes=lambda sd: False, convert=lambda sd: {}
        )
    register_checkpoint_family(
        "Greedy", author="", recognizes=lambda sd: True, convert=lambda sd: {}
    )
    with pytest.raises(ValueError, match="several checkpoint families"):
        convert_checkpoint(r50_checkpoint)


# ---------------------------------------------------------------------------------------------
# pretrained backbone and VGGish files
# ---------------------------------------------------------------------------------------------
def test_pretrained_files_fill_every_backbone_and_audio_entry(case, tmp_path):
    name, entries, model = case
    if "res50" in name:
        # resnet50-19c8e357.pth: torchvision names, with fc, without num_batches_tracked.
        names = torchvision.models.resnet50(weights=None).state_dict()
        original = {
            k: torch.tensor(1.0, dtype=torch.float16).expand(v.shape)
            for k, v in names.items()
            if not k.endswith("num_batches_tracked")
        }
        kind = "resnet50"
    else:
        # pvt_v2_b5.pth: the official names (the original's backbone.*) plus the classifier.
        original = {
            key[len("backbone.") :]: torch.tensor(1.0, dtype=torch.float16).expand(shape)
            for key, shape, _ in entries
            if key.startswith("backbone.")
        }
        original["head.weight"] = torch.zeros(1000, 512)
        original["head.bias"] = torch.zeros(1000)
        kind = "pvt_v2"
    source, destination = tmp_path / "src.pth", tmp_path / "backbone.pth"
    torch.save(original, source)
    convert_pretrained_tool.main([kind, str(source), str(destination)])

    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(destination)))
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.")]
    assert [k for k in incompatible.missing_keys if not k.startswith("backbone.")]
    for key, tensor in model.backbone.state_dict().items():
        expected = 0 if key.endswith("num_batches_tracked") else 1
        assert (tensor == expected).all(), key


def test_pretrained_vggish_file_with_numpy_pca_parameters(tmp_path):
    # The released PCA file stores NumPy arrays; the tool must read it without unsafe unpickling.
    vggish_entries = read_key_list("vggish_keys.txt")
    source = tmp_path / "src.pth"
    torch.save(synthesize(vggish_entries, torch.float32), source)
    pca_source = tmp_path / "pca.pth"
    torch.save({"pca_eigen_vectors": np.eye(128), "pca_means": np.ones((128, 1))}, pca_source)
    audio_weights = tmp_path / "vggish.pth"
    convert_pretrained_tool.main(
        ["vggish", str(source), str(audio_weights), "--pca", str(pca_source)]
    )
    assert audio_weights.stat().st_size < 1_000_000, "expanded scalars stay small"

    cfg = config("s4/avsegformer_R50.yaml")
    cfg.MODEL.AUDIO.WEIGHTS = str(audio_weights)
    cfg.MODEL.AUDIO.PCA = True
    vggish = build_audio_backbone(cfg)
    load_pretrained_audio_backbone(cfg, vggish)
    for index, (key, _, _) in enumerate(vggish_entries):
        assert (vggish.state_dict()[key] == index).all(), key
    assert torch.equal(vggish.postprocessor.pca_eigen_vectors, torch.eye(128))
    assert torch.equal(vggish.postprocessor.pca_means, torch.ones(128))
