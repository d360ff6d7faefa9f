"""Original COMBO checkpoints and COMBO's backbone files -> our COMBO model.

The original checkpoints are not available; their exact key lists and shapes are
(``<repo>/../shared/reference/combo/*.keys.txt``: six training configurations and the R50-AVSS
test variant without the Bilateral-Fusion). Each test synthesises a state dict with those names
where entry ``i`` holds the value ``i`` everywhere, states the key map a second time independently
of the converter (:func:`expected_target`) and checks that every value lands where that map says.
"""

import pickle
import re

import numpy as np
import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from helpers import (
    build_on_meta,
    expected_pvt_v2_name,
    load_config,
    load_tool,
    misplaced_entries,
    read_key_list,
    synthesize_state_dict,
)

from avsegformer.checkpoint import (
    COMBO_VISUAL_BACKBONES,
    convert_checkpoint,
    convert_combo_backbone,
    convert_combo_checkpoint,
    detect_checkpoint_family,
    families,
    load_detectron2_pickle,
)

convert_checkpoint_main = load_tool("convert_checkpoint").main
convert_pretrained_main = load_tool("convert_pretrained_weights").main

# key list -> facts the converter must report
COMBO_KEY_LISTS = {
    "COMBO_R50_s4": ("R50", 2, "MHA-B"),
    "COMBO_R50_ms3": ("R50", 2, "MHA-B"),
    "COMBO_R50_avss": ("R50", 71, "MHA-B"),
    "COMBO_PVTV2B5_s4": ("PVTv2-B5", 2, "MHA-B"),
    "COMBO_PVTV2B5_ms3": ("PVTv2-B5", 2, "MHA-B"),
    "COMBO_PVTV2B5_avss": ("PVTv2-B5", 71, "MHA-B"),
    "Test_COMBO_R50_avss": ("R50", 71, "MHA-None"),
}
OTHER_KEY_LISTS = [
    "AVSegFormer_res50_s4.keys.txt",
    "AVSegFormer_pvt2_avss.keys.txt",
    "modat/MoDAT_pvt2_s4.keys.txt",
    "catr/CATR_pvt2_s4.keys.txt",
    "vggish_keys.txt",
]


def combo_entries(name: str):
    return read_key_list(f"combo/{name}.keys.txt")


def synthesize(entries) -> dict[str, torch.Tensor]:
    # float32: exact values for all 2457 entries of the PVTv2 lists (float16 stops at 2048).
    return synthesize_state_dict(entries, torch.float32)


def without_siam_encoder(entries):
    """The key list of the same model built with ``USE_PRE_SAM False``."""
    return [
        e for e in entries if not e[0].startswith(("pre_sam_backbone.", "scale_factor_module."))
    ]


def expected_target(source: str) -> str:
    """Our name of an original COMBO entry: the same, but official PVTv2 names become timm's in
    both visual backbones."""
    for prefix in ("backbone.", "pre_sam_backbone."):
        rest = source[len(prefix) :]
        if source.startswith(prefix) and re.match(r"(patch_embed|block|norm)\d", rest):
            return prefix + expected_pvt_v2_name(rest)
    return source


def misplaced(converted: dict, entries) -> list[str]:
    """Names of the converted entries that do not hold their source's value (entry ``i`` of the
    key list holds ``i``), plus every name that is missing or not expected."""
    expected = {expected_target(name): index for index, (name, _, _) in enumerate(entries)}
    return misplaced_entries(converted, expected)


@pytest.mark.parametrize("name", list(COMBO_KEY_LISTS))
def test_every_key_list_converts_with_every_value_in_place(name):
    entries = combo_entries(name)
    converted = convert_combo_checkpoint(synthesize(entries))
    assert len(converted) == len(entries), "nothing dropped, nothing added"
    assert misplaced(converted, entries) == []
    assert "criterion.empty_weight" in converted

    output = convert_checkpoint({"model": synthesize(entries), "iteration": 7})
    backbone, num_classes, fusion = COMBO_KEY_LISTS[name]
    assert output["family"] == "COMBO"
    assert output["__author__"] == "yannqi/COMBO-AVS (converted)"
    assert (output["backbone"], output["num_classes"]) == (backbone, num_classes)
    assert (output["siam_encoder"], output["fusion_type"]) == (True, fusion)


@pytest.mark.parametrize("name", ["COMBO_R50_s4", "COMBO_PVTV2B5_avss"])
def test_checkpoints_without_siam_encoder_convert(name):
    entries = without_siam_encoder(combo_entries(name))
    assert len(entries) == {"COMBO_R50_s4": 602, "COMBO_PVTV2B5_avss": 1389}[name]
    output = convert_checkpoint(synthesize(entries))
    assert misplaced(output["model"], entries) == []
    assert output["siam_encoder"] is False


def test_a_swap_of_the_two_backbones_is_caught():
    """The value check finds a converter that mixes up the frame and the maskige backbone."""
    entries = combo_entries("COMBO_PVTV2B5_s4")
    converted = convert_combo_checkpoint(synthesize(entries))
    a = "backbone.stages.2.blocks.3.attn.q.weight"
    b = "pre_sam_backbone.stages.2.blocks.3.attn.q.weight"
    assert expected_target("backbone.block3.3.attn.q.weight") == a
    converted[a], converted[b] = converted[b], converted[a]
    assert misplaced(converted, entries) == [a, b]


@pytest.mark.parametrize(
    "bogus",
    [
        "sem_seg_head.predictor.bogus.weight",
        "sem_seg_head.fusion_module.b_attn.attn_list.1.v_proj.weight",
        "backbone.res6.0.conv1.weight",
        "pre_sam_backbone.stem.conv1.norm.num_batches_tracked",
        "scale_factor_module.4.fc1.weight",
        "audio_backbone.features.1.weight",
        "criterion.other_weight",
    ],
)
def test_unknown_entries_are_an_error_that_names_them(bogus):
    checkpoint = synthesize(combo_entries("COMBO_R50_s4"))
    with pytest.raises(KeyError, match=re.escape(bogus)):
        convert_combo_checkpoint({**checkpoint, bogus: torch.zeros(1)})


def test_pvt_names_in_an_r50_checkpoint_are_unknown():
    checkpoint = synthesize(combo_entries("COMBO_R50_s4"))
    with pytest.raises(KeyError, match=r"pre_sam_backbone\.block1\.0\.norm1\.weight"):
        convert_combo_checkpoint(
            {**checkpoint, "pre_sam_backbone.block1.0.norm1.weight": torch.zeros(1)}
        )
    with pytest.raises(ValueError, match="neither backbone.stem.conv1.weight"):
        convert_combo_checkpoint({"criterion.empty_weight": torch.ones(3)})


def test_the_families_never_confuse_combo_and_other_checkpoints():
    combo = families._FAMILIES["COMBO"]
    others = [f for f in families._FAMILIES.values() if f is not combo]
    for name in COMBO_KEY_LISTS:
        entries = combo_entries(name)
        for variant in (entries, without_siam_encoder(entries)):
            state_dict = synthesize(variant)
            assert detect_checkpoint_family(state_dict).name == "COMBO"
            assert not [f.name for f in others if f.recognizes(state_dict)], name
    for keys in OTHER_KEY_LISTS:
        assert not combo.recognizes(synthesize(read_key_list(keys))), keys


def test_convert_checkpoint_tool_accepts_combo(tmp_path):
    entries = combo_entries("Test_COMBO_R50_avss")
    source, destination = tmp_path / "model_best.pth", tmp_path / "out" / "combo_r50_avss.pth"
    torch.save({"model": synthesize(entries), "iteration": 89999}, source)
    convert_checkpoint_main([str(source), str(destination)])
    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert (saved["family"], saved["fusion_type"], saved["num_classes"]) == (
        "COMBO",
        "MHA-None",
        71,
    )
    assert saved["source"] == "model_best.pth" and saved["matching_heuristics"] is False
    assert misplaced(saved["model"], entries) == []

    torch.save({**synthesize(entries), "sem_seg_head.extra.weight": torch.ones(1)}, source)
    with pytest.raises(SystemExit, match=r"model_best.pth.*sem_seg_head\.extra\.weight"):
        convert_checkpoint_main([str(source), str(tmp_path / "bad.pth")])
    assert not (tmp_path / "bad.pth").exists()


# ---------------------------------------------------------------------------------------------
# COMBO's ImageNet backbone files -> both visual backbones
# ---------------------------------------------------------------------------------------------
def d2_resnet_name(torchvision_name: str) -> str:
    """The name Mask2Former's convert-torchvision-to-d2 gives a torchvision ResNet entry: what
    is not in a stage goes under ``stem.``, stages ``layerK`` -> ``res{K+1}``, ``bnJ`` ->
    ``convJ.norm``, ``downsample.{0,1}`` -> ``shortcut{,.norm}``."""
    name = torchvision_name if "layer" in torchvision_name else "stem." + torchvision_name
    for k in (1, 2, 3, 4):
        name = name.replace(f"layer{k}", f"res{k + 1}")
    for j in (1, 2, 3):
        name = name.replace(f"bn{j}", f"conv{j}.norm")
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def write_d2_pickle(path, weights: dict, author: str) -> None:
    """A Detectron2 backbone pickle as COMBO's tools write them."""
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": author, "matching_heuristics": True}, f)


def r50_pickle_weights(shapes: bool) -> dict[str, np.ndarray]:
    """R-50.pkl: torchvision resnet50 entries (with ``fc``, and the ``num_batches_tracked``
    counters newer torchvision files have) under Detectron2 names; entry ``i`` holds ``i``."""
    names = torchvision.models.resnet50(weights=None).state_dict()
    return {
        d2_resnet_name(name): np.full(tuple(tensor.shape) if shapes else (1,), i, np.float16)
        for i, (name, tensor) in enumerate(names.items())
    }


def combo_backbone_names(name: str) -> set[str]:
    return {
        expected_target(k)
        for k, _, _ in combo_entries(name)
        if k.startswith(COMBO_VISUAL_BACKBONES)
    }


def test_r50_pickle_fills_both_backbones(tmp_path):
    weights = r50_pickle_weights(shapes=False)
    source, destination = tmp_path / "R-50.pkl", tmp_path / "pretrained" / "combo_R-50.pth"
    write_d2_pickle(source, weights, "torchvision")
    convert_pretrained_main(["combo-backbone", str(source), str(destination)])

    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert (saved["backbone"], saved["matching_heuristics"]) == ("R50", False)
    model = saved["model"]
    assert set(model) == combo_backbone_names("COMBO_R50_s4")
    for name, value in weights.items():
        if name.startswith("stem.fc.") or name.endswith("num_batches_tracked"):
            continue
        for prefix in COMBO_VISUAL_BACKBONES:
            assert model[prefix + name].item() == value.item(), prefix + name

    convert_pretrained_main(["combo-backbone", "--no-siam", str(source), str(destination)])
    saved = torch.load(destination, map_location="cpu", weights_only=True)
    assert set(saved["model"]) == {
        k for k in combo_backbone_names("COMBO_R50_s4") if k.startswith("backbone.")
    }


def test_pvt_pickle_and_official_file_fill_both_backbones(tmp_path):
    official = {
        key[len("backbone.") :]: index
        for index, (key, _, _) in enumerate(combo_entries("COMBO_PVTV2B5_s4"))
        if key.startswith("backbone.")
    }
    official |= {"head.weight": -1, "head.bias": -2}
    source = tmp_path / "d2_pvt_v2_b5.pkl"
    write_d2_pickle(
        source, {k: np.full((1,), v, np.float32) for k, v in official.items()}, "PVT_V2_B5"
    )
    pth = tmp_path / "pvt_v2_b5.pth"
    torch.save({k: torch.full((1,), float(v)) for k, v in official.items()}, pth)
    for src in (source, pth):
        destination = tmp_path / f"combo_{src.name}.pth"
        convert_pretrained_main(["combo-backbone", str(src), str(destination)])
        saved = torch.load(destination, map_location="cpu", weights_only=True)
        assert saved["backbone"] == "PVTv2"
        model = saved["model"]
        assert set(model) == combo_backbone_names("COMBO_PVTV2B5_s4")
        for name, value in official.items():
            if name.startswith("head."):
                continue
            for prefix in COMBO_VISUAL_BACKBONES:
                assert model[prefix + expected_pvt_v2_name(name)].item() == value, (src, name)


def test_torchvision_resnet_gives_the_same_names_as_the_pickle():
    tv = {k: torch.zeros(1) for k in torchvision.models.resnet50(weights=None).state_dict()}
    from_tv, kind = convert_combo_backbone(tv, "resnet50.pth")
    assert kind == "R50"
    assert set(from_tv) == combo_backbone_names("COMBO_R50_s4")


def test_backbone_pickles_are_read_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": Payload()}}, f)
    with pytest.raises(SystemExit, match=r"evil.pkl.*refusing to load io.open"):
        convert_pretrained_main(["combo-backbone", str(evil), str(tmp_path / "out.pth")])
    assert not marker.exists()
    assert not (tmp_path / "out.pth").exists()

    caffe2 = tmp_path / "MSRA-R-50.pkl"
    write_d2_pickle(caffe2, {"conv1_w": np.zeros(1), "res2_0_branch2a_w": np.zeros(1)}, "C2")
    with pytest.raises(SystemExit, match="Caffe2 names"):
        convert_pretrained_main(["combo-backbone", str(caffe2), str(tmp_path / "out.pth")])

    weights = r50_pickle_weights(shapes=False)
    weights["res5.0.conv4.weight"] = np.zeros(1)
    odd = tmp_path / "odd.pkl"
    write_d2_pickle(odd, weights, "torchvision")
    with pytest.raises(SystemExit, match=r"odd.pkl.*res5\.0\.conv4\.weight"):
        convert_pretrained_main(["combo-backbone", str(odd), str(tmp_path / "out.pth")])

    assert load_detectron2_pickle(odd)["res5.0.conv4.weight"].dtype == torch.float64
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([np.zeros(1)]))
    with pytest.raises(ValueError, match="list.pkl: expected a dict of arrays"):
        load_detectron2_pickle(tmp_path / "list.pkl")


# ---------------------------------------------------------------------------------------------
# into the COMBO model (R50 built for real; a PVTv2-B5 COMBO takes a minute to build on a busy
# CPU, so its strict load runs on a model built on the meta device)
# ---------------------------------------------------------------------------------------------
MODELS = {
    # key list, config, overrides of the model the key list was measured on
    "siam": ("COMBO_R50_s4", "s4/combo_R50.yaml", []),
    "mha_none": (
        "Test_COMBO_R50_avss",
        "avss/combo_R50.yaml",
        ["MODEL.COMBO.FUSION_TYPE", "MHA-None"],
    ),
    "no_siam": ("COMBO_R50_ms3", "ms3/combo_R50.yaml", ["MODEL.COMBO.SIAM_ENCODER", False]),
}


@pytest.fixture(scope="module", params=list(MODELS))
def combo_model(request):
    """One R50 COMBO model per variant, built once for this module (about 0.7 GB each)."""
    name, config, overrides = MODELS[request.param]
    cfg = load_config(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.AUDIO.WEIGHTS", ""])
    cfg.merge_from_list(overrides)
    entries = combo_entries(name)
    if request.param == "no_siam":
        entries = without_siam_encoder(entries)
    model = build_model(cfg)
    yield request.param, entries, model
    del model


def test_converted_checkpoint_loads_strictly_into_the_model(combo_model, tmp_path):
    variant, entries, model = combo_model
    source, destination = tmp_path / "model_best.pth", tmp_path / "combo.pth"
    torch.save({"model": synthesize(entries), "iteration": 1}, source)
    convert_checkpoint_main([str(source), str(destination)])
    converted = torch.load(destination, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(converted, strict=True)
    assert misplaced(model.state_dict(), entries) == []
    assert model.uses_maskiges == (variant != "no_siam")


@pytest.mark.parametrize("task", ["s4", "ms3", "avss"])
def test_converted_pvt_checkpoint_loads_strictly_into_the_model(task, tmp_path):
    entries = combo_entries(f"COMBO_PVTV2B5_{task}")
    model = build_on_meta(f"{task}/combo_pvtv2_b5.yaml")
    source, destination = tmp_path / "model_best.pth", tmp_path / "combo.pth"
    torch.save({"model": synthesize(entries), "iteration": 1}, source)
    convert_checkpoint_main([str(source), str(destination)])
    converted = torch.load(destination, map_location="cpu", weights_only=True)["model"]
    # strict: every name of the model and no other; a shape that differs is an error too.
    model.load_state_dict(converted, strict=True, assign=True)
    state = model.state_dict()
    assert not [name for name, tensor in state.items() if tensor.is_meta]
    assert misplaced(state, entries) == []
    assert model.uses_maskiges


@pytest.fixture(scope="module")
def r50_pickle(tmp_path_factory):
    """An R-50.pkl with the real shapes (float16: 50 MB), written once, and its weights."""
    weights = r50_pickle_weights(shapes=True)
    path = tmp_path_factory.mktemp("pretrained") / "R-50.pkl"
    write_d2_pickle(path, weights, "torchvision")
    return path, weights


def test_backbone_pickle_initialises_both_backbones_of_the_model(combo_model, r50_pickle, tmp_path):
    variant, _, model = combo_model
    source, weights = r50_pickle
    destination = tmp_path / "combo_R-50.pth"
    flags = ["--no-siam"] if variant == "no_siam" else []
    convert_pretrained_main(["combo-backbone", *flags, str(source), str(destination)])

    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(destination)))
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    visual = [k for k in model.state_dict() if k.startswith(COMBO_VISUAL_BACKBONES)]
    assert not set(visual) & set(incompatible.missing_keys)
    assert set(incompatible.missing_keys) == set(model.state_dict()) - set(visual)
    ours = model.state_dict()
    for name, value in weights.items():
        if name.startswith("stem.fc.") or name.endswith("num_batches_tracked"):
            continue
        for prefix in COMBO_VISUAL_BACKBONES[: 1 if variant == "no_siam" else 2]:
            assert (ours[prefix + name] == float(value.flat[0])).all(), prefix + name
