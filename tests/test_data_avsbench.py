"""AVSBench loaders, registration, class tables, palette and mask decoding."""

import json
import os

import numpy as np
import pytest
from avsbench_tree import (
    FRAME_SIZE,
    avss_class_names,
    make_avss_tree,
    make_ms3_tree,
    make_s4_tree,
    write_binary_mask,
    write_frame,
)
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from avsegformer.data.datasets import (
    AVSDataError,
    avss_palette,
    load_avsbench_avss,
    load_avsbench_ms3,
    load_avsbench_s4,
    read_avs_mask,
    read_avss_classes,
    register_all_avsbench,
    register_avs_dataset,
    register_avsbench,
    voc_palette,
)
from avsegformer.data.datasets.builtin import BUILTIN_AVSBENCH_NAMES, default_avsbench_root
from avsegformer.data.datasets.layout import avss_clip_files, ms3_clip_files, s4_clip_files


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory):
    return make_s4_tree(tmp_path_factory.mktemp("avsbench") / "Single-source")["root"]


@pytest.fixture(scope="module")
def ms3_root(tmp_path_factory):
    return make_ms3_tree(tmp_path_factory.mktemp("avsbench") / "Multi-sources")["root"]


@pytest.fixture(scope="module")
def avss_root(tmp_path_factory):
    return make_avss_tree(tmp_path_factory.mktemp("avsbench") / "AVSS")["root"]


# ---------------------------------------------------------------------------------------------
# palette and classes
# ---------------------------------------------------------------------------------------------
def test_avss_palette_matches_spec_checks():
    palette = avss_palette()
    assert len(palette) == 71 and len(set(palette)) == 71
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        7: (128, 128, 128),
        8: (64, 0, 0),
        9: (192, 0, 0),
        64: (32, 0, 0),
        70: (32, 128, 128),
    }
    for index, color in expected.items():
        assert palette[index] == color
    assert voc_palette(3) == palette[:3]


def test_avss_classes_follow_json_values(avss_root, tmp_path):
    assert read_avss_classes(os.fspath(avss_root / "label2idx.json")) == avss_class_names()
    short = tmp_path / "label2idx.json"
    short.write_text(json.dumps({"background": 0, "dog": 1}))
    with pytest.raises(AVSDataError, match="label2idx.json.*71"):
        read_avss_classes(os.fspath(short))
    duplicate = {name: i for i, name in enumerate(avss_class_names())}
    duplicate["class_70"] = 3
    short.write_text(json.dumps(duplicate))
    with pytest.raises(AVSDataError, match="distinct"):
        read_avss_classes(os.fspath(short))


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def test_layout_file_names_are_avsbench_s():
    """Every path the loaders, the generator and the test trees use, spelled out once here."""

    def rel(paths):
        return [None if p is None else os.path.relpath(p, "R") for p in paths]

    s4 = s4_clip_files("R", "train", "dog_barking", "vid")
    assert rel(s4.frames) == [f"s4_data/visual_frames/train/dog_barking/vid/vid_{k}.png"
                              for k in range(1, 6)]  # fmt: skip
    assert rel(s4.masks) == ["s4_data/gt_masks/train/dog_barking/vid/vid_1.png"] + [None] * 4
    assert rel([s4.audio_log_mel, s4.audio_wav]) == [
        "s4_data/audio_log_mel/train/dog_barking/vid.pkl",
        "s4_data/audio_wav/train/dog_barking/vid.wav",
    ]
    assert all(s4_clip_files("R", "test", "dog_barking", "vid").masks)

    ms3 = ms3_clip_files("R", "train", "vid")
    assert rel(ms3.frames) == [f"ms3_data/visual_frames/vid/vid.mp4_{k}.png" for k in range(1, 6)]
    assert rel(ms3.masks) == [f"ms3_data/gt_masks/train/vid/vid_{k}.png" for k in range(1, 6)]
    assert rel([ms3.audio_log_mel, ms3.audio_wav]) == [
        "ms3_data/audio_log_mel/train/vid.pkl",
        "ms3_data/audio_wav/train/vid.wav",
    ]

    v1s = avss_clip_files("R", "train", "v1s", "uid")
    assert rel(v1s.frames) == [f"v1s/uid/frames/{i}.jpg" for i in range(5)]
    assert rel(v1s.masks) == ["v1s/uid/labels_rgb/0.png"] + [None] * 4
    assert rel(v1s.semantic_masks) == ["v1s/uid/labels_semantic/0.png"] + [None] * 4
    assert rel([v1s.audio_wav]) == ["v1s/uid/audio.wav"] and v1s.audio_log_mel is None
    v2 = avss_clip_files("R", "train", "v2", "uid")
    assert rel(v2.masks) == [f"v2/uid/labels_rgb/{i}.png" for i in range(10)]
    assert all(avss_clip_files("R", "val", "v1s", "uid").masks)
    with pytest.raises(ValueError, match="v3"):
        avss_clip_files("R", "train", "v3", "uid")


def _check_common(record):
    assert record["length"] == len(record["file_names"]) == len(record["sem_seg_file_names"])
    assert len(record["frame_valid"]) == record["length"]
    for path in record["file_names"]:
        assert path is None or os.path.isfile(path)
    for path in record["sem_seg_file_names"]:
        assert path is None or os.path.isfile(path)
    assert os.path.isfile(record["audio_file_name"])


def test_s4_train_has_only_first_mask(s4_root):
    records = load_avsbench_s4(os.fspath(s4_root), "train")
    assert [r["video_id"] for r in records] == ["trainA", "trainB"]  # CSV order
    for record in records:
        _check_common(record)
        name = record["video_id"]
        assert [os.path.basename(f) for f in record["file_names"]] == [
            f"{name}_{k}.png" for k in range(1, 6)
        ]
        assert record["sem_seg_file_names"][0].endswith(f"{name}_1.png")
        assert record["sem_seg_file_names"][1:] == [None] * 4
        assert record["frame_valid"] == [True] * 5
        assert (record["height"], record["width"]) == FRAME_SIZE
        assert record["audio_file_name"].endswith(".pkl")
        assert os.path.isfile(record["audio_wav_file_name"])
        assert record["mask_format"] == "binary"
    assert records[1]["category"] == "lions_roaring"


def test_s4_val_test_have_every_mask(s4_root):
    for split, count in (("val", 1), ("test", 2)):
        records = load_avsbench_s4(os.fspath(s4_root), split)
        assert len(records) == count
        for record in records:
            _check_common(record)
            assert all(record["sem_seg_file_names"])


def test_ms3_frame_names_have_mp4_infix(ms3_root):
    records = load_avsbench_ms3(os.fspath(ms3_root), "train")
    assert [r["video_id"] for r in records] == ["msTrainA", "msTrainB"]
    for record in records:
        _check_common(record)
        name = record["video_id"]
        assert [os.path.basename(f) for f in record["file_names"]] == [
            f"{name}.mp4_{k}.png" for k in range(1, 6)
        ]
        assert [os.path.basename(f) for f in record["sem_seg_file_names"]] == [
            f"{name}_{k}.png" for k in range(1, 6)
        ]
        assert f"{os.sep}train{os.sep}" not in record["file_names"][0]  # no split folder


def test_avss_records_padding_and_annotation(avss_root):
    records = {r["video_id"]: r for r in load_avsbench_avss(os.fspath(avss_root), "train")}
    assert list(records) == ["uidS", "uidM", "uidV2"]
    for record in records.values():
        _check_common(record)
        assert record["length"] == 10 and record["mask_format"] == "palette"
        assert record["audio_file_name"].endswith("audio.wav")
    v1s, v1m, v2 = records["uidS"], records["uidM"], records["uidV2"]
    assert v1s["frame_valid"] == [True] * 5 + [False] * 5
    assert v1s["file_names"][5:] == [None] * 5
    assert [os.path.basename(f) for f in v1s["file_names"][:5]] == [f"{i}.jpg" for i in range(5)]
    assert v1s["sem_seg_file_names"][0].endswith("0.png")
    assert v1s["sem_seg_file_names"][1:] == [None] * 9
    assert all(v1m["sem_seg_file_names"][:5]) and v1m["sem_seg_file_names"][5:] == [None] * 5
    assert v2["frame_valid"] == [True] * 10 and all(v2["sem_seg_file_names"])
    assert [os.path.basename(f) for f in v2["file_names"]] == [f"{i}.jpg" for i in range(10)]
    assert (v2["height"], v2["width"]) == (20, 32)

    val = load_avsbench_avss(os.fspath(avss_root), "val")
    assert all(val[0]["sem_seg_file_names"][:5])  # v1s val: every real frame annotated

    unpadded = load_avsbench_avss(os.fspath(avss_root), "train", pad_to=None)
    assert [r["length"] for r in unpadded] == [5, 5, 10]


def test_missing_first_frame_is_an_error_naming_it(tmp_path):
    root = make_ms3_tree(tmp_path / "Multi-sources", videos={"val": ["vid"]})["root"]
    frame = root / "ms3_data" / "visual_frames" / "vid" / "vid.mp4_1.png"
    frame.unlink()
    with pytest.raises(AVSDataError, match="vid.mp4_1.png"):
        load_avsbench_ms3(os.fspath(root), "val")
    assert len(load_avsbench_ms3(os.fspath(root), "val", probe_sizes=False)) == 1


def test_csv_errors_name_the_file(tmp_path):
    root = tmp_path / "Single-source"
    root.mkdir()
    (root / "s4_meta_data.csv").write_text("name,start,category,part\nvid,0,dog_barking,train\n")
    with pytest.raises(AVSDataError, match=r"s4_meta_data.csv.*'split'"):
        load_avsbench_s4(os.fspath(root), "train")
    (root / "s4_meta_data.csv").write_text("name,start,category,split\nvid,0,dog_barking,val\n")
    with pytest.raises(AVSDataError, match=r"s4_meta_data.csv: no row has split 'train'"):
        load_avsbench_s4(os.fspath(root), "train")
    with pytest.raises(AVSDataError, match="s4_meta_data.csv"):
        load_avsbench_s4(os.fspath(tmp_path / "nowhere"), "train")
    avss = tmp_path / "AVSS"
    avss.mkdir()
    (avss / "metadata.csv").write_text("uid,label,split\nclip,v3,train\n")
    with pytest.raises(AVSDataError, match=r"metadata.csv: clip 'clip' has label 'v3'"):
        load_avsbench_avss(os.fspath(avss), "train")


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
def test_builtin_names_are_registered_lazily():
    registered = set(DatasetCatalog.list())
    assert set(BUILTIN_AVSBENCH_NAMES) <= registered
    assert len(BUILTIN_AVSBENCH_NAMES) == 9
    meta = MetadataCatalog.get("avsbench_ms3_val")
    assert meta.subset == "ms3" and meta.task == "binary" and meta.evaluator_type == "avsbench"
    assert meta.stuff_classes == ["background", "object"] and meta.ignore_label == 255
    assert meta.dataset_root == os.path.join(default_avsbench_root(), "Multi-sources")
    assert MetadataCatalog.get("avsbench_avss_test").num_frames == 10
    synthetic = MetadataCatalog.get("synthetic_s4_train")
    assert synthetic.subset == "s4" and "synthetic_avsbench" in synthetic.dataset_root


def test_builtin_root_can_be_replaced(tmp_path):
    root = tmp_path / "AVSBench"
    make_s4_tree(root / "Single-source")
    make_avss_tree(root / "AVSS")
    try:
        register_all_avsbench(os.fspath(root), replace=True)
        assert [r["video_id"] for r in DatasetCatalog.get("avsbench_s4_test")] == [
            "testA",
            "testB",
        ]
        meta = MetadataCatalog.get("avsbench_avss_train")
        assert meta.stuff_classes == avss_class_names()  # read lazily from label2idx.json
        assert meta.stuff_colors == avss_palette()
        assert meta.as_dict()["stuff_classes"] == avss_class_names()
    finally:
        register_all_avsbench(default_avsbench_root(), replace=True)


def test_avss_classes_are_read_only_on_access(tmp_path, new_dataset_name):
    name = new_dataset_name("avss")
    register_avsbench(name, "avss", os.fspath(tmp_path / "absent"), "val")  # no disk access
    meta = MetadataCatalog.get(name)
    assert meta.task == "semantic" and len(meta.stuff_colors) == 71
    with pytest.raises(AVSDataError, match="absent.*label2idx.json"):
        _ = meta.stuff_classes


def test_register_folder_and_records_carry_name(ms3_root, new_dataset_name):
    name = new_dataset_name("folder")
    register_avs_dataset(name, ms3_root, split="test")
    records = DatasetCatalog.get(name)
    assert [r["video_id"] for r in records] == ["msTestA"]
    assert records[0]["dataset_name"] == name
    assert MetadataCatalog.get(name).subset == "ms3"
    with pytest.raises(ValueError, match="split"):
        register_avs_dataset(new_dataset_name(), ms3_root)
    with pytest.raises(ValueError, match="already registered"):
        register_avs_dataset(name, ms3_root, split="val")


def test_register_own_clips(tmp_path, new_dataset_name):
    frames = [tmp_path / f"f{i}.png" for i in range(3)]
    for path in frames:
        write_frame(path, size=(10, 14))
    write_binary_mask(tmp_path / "m0.png", size=(10, 14))
    clips = [
        {
            "video_id": "mine",
            "file_names": [os.fspath(p) for p in frames],
            "sem_seg_file_names": [os.fspath(tmp_path / "m0.png"), None, None],
            "audio_file_name": os.fspath(tmp_path / "a.wav"),
        }
    ]
    name = new_dataset_name("clips")
    register_avs_dataset(name, clips, num_frames=4)
    (record,) = DatasetCatalog.get(name)
    assert record["length"] == 4 and record["frame_valid"] == [True, True, True, False]
    assert record["file_names"][3] is None and (record["height"], record["width"]) == (10, 14)
    assert record["mask_format"] == "binary" and record["dataset_name"] == name
    meta = MetadataCatalog.get(name)
    assert meta.task == "binary" and meta.subset == "custom"

    semantic = new_dataset_name("semantic")
    register_avs_dataset(semantic, clips, classes=["background", "cat", "dog"])
    meta = MetadataCatalog.get(semantic)
    assert meta.task == "semantic" and meta.mask_format == "palette"
    assert meta.stuff_colors == voc_palette(3)

    with pytest.raises(ValueError, match="classes"):
        register_avs_dataset(new_dataset_name(), clips, task="semantic")
    broken = new_dataset_name("broken")
    register_avs_dataset(broken, [{"file_names": [os.fspath(frames[0])]}])
    with pytest.raises(AVSDataError, match=rf"{broken}.*clip #0.*audio_file_name"):
        DatasetCatalog.get(broken)


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def test_binary_mask_threshold_rule(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 100, 127, 128, 200, 255]], np.uint8)).save(path)
    assert read_avs_mask(os.fspath(path)).tolist() == [[0, 0, 0, 1, 1, 1]]
    one_bit = tmp_path / "bits.png"
    Image.fromarray(np.array([[0, 255, 255]], np.uint8)).convert("1").save(one_bit)
    assert read_avs_mask(os.fspath(one_bit)).tolist() == [[0, 1, 1]]


def test_palette_mask_decoding_and_unknown_colour(tmp_path):
    palette = np.array(avss_palette(), np.uint8)
    labels = np.array([[0, 1, 70], [8, 64, 9]], np.uint8)
    path = tmp_path / "ok.png"
    Image.fromarray(palette[labels]).save(path)
    assert np.array_equal(read_avs_mask(os.fspath(path), "palette"), labels)

    rgb = palette[labels].copy()
    rgb[0, 0] = (1, 2, 3)
    bad = tmp_path / "bad.png"
    Image.fromarray(rgb).save(bad)
    with pytest.raises(AVSDataError, match=r"bad.png.*\(1, 2, 3\)"):
        read_avs_mask(os.fspath(bad), "palette")


def test_index_mask_range(tmp_path):
    path = tmp_path / "index.png"
    Image.fromarray(np.array([[0, 2, 255]], np.uint8)).save(path)
    assert read_avs_mask(os.fspath(path), "index", num_classes=3).tolist() == [[0, 2, 255]]
    Image.fromarray(np.array([[0, 3]], np.uint8)).save(path)
    with pytest.raises(
        AVSDataError, match=r"index.png: 1 pixels have class ids outside 0\.\.2.*: 3"
    ):
        read_avs_mask(os.fspath(path), "index", num_classes=3)
    with pytest.raises(AVSDataError, match="missing.png"):
        read_avs_mask(os.fspath(tmp_path / "missing.png"))
