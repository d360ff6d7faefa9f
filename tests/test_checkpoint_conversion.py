"""Original AVSegFormer and pretrained checkpoints -> our models (key maps, tools, param counts).

The original checkpoints are not available; their exact key lists and shapes are
(``<repo>/../shared/reference/*.keys.txt``). Each test synthesises a state dict with those names and
shapes, where entry number ``i`` holds the value ``i`` everywhere (a float16 scalar expanded to the
shape: no memory, exact up to 2048), so after loading every model tensor tells which original
entry it came from.
"""

import argparse
import logging
import re
from pathlib import Path

import avsegformer  # noqa: F401  (before any detectron2 sub-package)
from avsegformer import add_avsegformer_config
from avsegformer.checkpoint import convert_avsegformer_checkpoint, unwrap_state_dict
from avsegformer.modeling.audio_backbone import build_audio_backbone

import numpy as np
import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import load_tool, read_key_list

REPO = Path(__file__).resolve().parents[1]
convert_checkpoint_tool = load_tool("convert_avsegformer_checkpoint")
convert_pretrained_tool = load_tool("convert_pretrained_weights")

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


def synthesize(entries, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Entry ``i`` -> value ``i`` (an expanded scalar of ``dtype``, or an int64 counter)."""
    state_dict = {}
    for index, (name, shape, stored_dtype) in enumerate(entries):
        if stored_dtype == "int64":
            state_dict[name] = torch.tensor(index, dtype=torch.long)
        else:
            state_dict[name] = torch.tensor(float(index), dtype=dtype).expand(shape)
    return state_dict


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


def value_of(tensor: torch.Tensor) -> float:
    return tensor.reshape(-1)[0].item()


def test_original_checkpoint_loads_strictly_with_every_value_in_place(case, caplog):
    name, entries, model = case
    original = synthesize(entries)
    with caplog.at_level(logging.INFO, logger="avsegformer.checkpoint.convert"):
        converted = convert_avsegformer_checkpoint(original)

    model.load_state_dict(converted, strict=True)
    # Every model tensor is constant and equal to the index of the original entry mapped onto it.
    index_of = {n: i for i, (n, _, _) in enumerate(entries)}
    source_of = {}
    for target, tensor in model.state_dict().items():
        values = tensor.reshape(-1)
        assert values.min() == values.max(), f"{target} was filled from several entries"
        source_of[target] = entries[int(value_of(tensor))][0]
        assert index_of[source_of[target]] == int(value_of(tensor))

    expected_pairs = {
        "audio_proj.weight": "audio_proj.weight",
        "audio_backbone.embeddings.0.weight": "vggish.embeddings.0.weight",
        "pixel_decoder.input_proj.3.1.bias": "head.in_proj.3.1.bias",
        "pixel_decoder.level_embed": "head.level_embed",
        "pixel_decoder.encoder.layers.5.self_attn.sampling_offsets.weight": (
            "head.transformer.encoder.layers.5.self_attn.sampling_offsets.weight"
        ),
        "pixel_decoder.lateral_conv.1.weight": "head.lateral_conv.1.weight",
        "pixel_decoder.output_conv.0.weight": "head.out_conv.0.weight",
        "query_generator.layers.2.cross_attn.in_proj_weight": (
            "head.query_generator.layers.2.cross_attn.in_proj_weight"
        ),
        "learnable_query.weight": "head.learnable_query.weight",
        "transformer_decoder.layers.4.linear2.bias": "head.transformer.decoder.layers.4.linear2.bias",
        "mixer.kv_proj.weight": "head.fusion_block.kv_proj.weight",
        "mask_head.mlp.layers.0.weight": "head.mlp.layers.0.weight",
        "mask_head.fc.4.weight": "head.fc.4.weight",
    }
    if "res50" in name:
        expected_pairs.update(
            {
                "backbone.stem.conv1.weight": "backbone.conv1.weight",
                "backbone.stem.conv1.norm.running_var": "backbone.bn1.running_var",
                "backbone.res2.0.shortcut.norm.weight": "backbone.layer1.0.downsample.1.weight",
                "backbone.res4.5.conv2.norm.bias": "backbone.layer3_1.5.bn2.bias",
                "backbone.res5.0.shortcut.weight": "backbone.layer4_1.0.downsample.0.weight",
            }
        )
    else:
        expected_pairs.update(
            {
                "backbone.patch_embed.proj.weight": "backbone.patch_embed1.proj.weight",
                "backbone.stages.2.downsample.norm.bias": "backbone.patch_embed3.norm.bias",
                "backbone.stages.2.blocks.39.mlp.dwconv.weight": (
                    "backbone.block3.39.mlp.dwconv.dwconv.weight"
                ),
                "backbone.stages.0.blocks.2.attn.sr.weight": "backbone.block1.2.attn.sr.weight",
                "backbone.stages.3.norm.weight": "backbone.norm4.weight",
            }
        )
    for target, source in expected_pairs.items():
        assert source_of[target] == source, target

    # Only the dead groups were dropped, each announced by exactly one log line.
    dead = DEAD_GROUPS[name.split("_")[1]]
    dropped = set(original) - set(source_of.values())
    assert dropped == {k for k in original if k.startswith(tuple(dead))}
    for prefix in dead:
        lines = [r.getMessage() for r in caplog.records if f"dropped {prefix}*" in r.getMessage()]
        assert len(lines) == 1, prefix


def test_converted_file_loads_with_detection_checkpointer(case, tmp_path):
    name, entries, model = case
    source = tmp_path / f"{name}.pth"
    destination = tmp_path / f"{name}_converted.pth"
    torch.save(synthesize(entries), source)
    convert_checkpoint_tool.main([str(source), str(destination)])

    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert saved["backbone"] == ("R50" if "res50" in name else "PVTv2-B5")
    assert saved["num_classes"] == (71 if "avss" in name else 1)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(destination)))
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    assert incompatible.incorrect_shapes == []
    checkpointer.load(str(destination))  # the public path, with its logging, works too


# Published in the brief of issue #3 (the original models without their dead groups).
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
    for index, (key, _, _) in enumerate(vggish_entries):
        assert (vggish.state_dict()[key] == index).all(), key
    assert torch.equal(vggish.postprocessor.pca_eigen_vectors, torch.eye(128))
    assert torch.equal(vggish.postprocessor.pca_means, torch.ones(128))
