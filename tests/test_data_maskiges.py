"""Maskiges (COMBO's second visual input): layout, painting, the mapper, the synthetic generator
and the dataset validator."""

import os
import shutil
import uuid

import numpy as np
import pytest
import torch
from avsbench_tree import make_avss_tree, make_s4_tree, write_frame, write_log_mel_pkl
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend.color_augmentation import ColorAugSSDTransform
from helpers import forget_dataset, load_tool, unique_dataset_name
from PIL import Image

import avsegformer  # noqa: F401  (Detectron2 compatibility for point_rend's colour augmentation)
from avsegformer import add_avsegformer_config
from avsegformer.data import AVSDatasetMapper
from avsegformer.data.datasets import register_avs_dataset, register_avsbench
from avsegformer.data.datasets.layout import (
    MASKIGE_FOLDER,
    avss_clip_files,
    ms3_clip_files,
    s4_clip_files,
)
from avsegformer.data.errors import AVSDataError
from avsegformer.data.maskiges import (
    ADE20K_PALETTE,
    clip_maskige_files,
    maskige_ids,
    paint_maskige,
)
from avsegformer.data.synthetic import dataset_clip, generate
from avsegformer.data.validation import validate_dataset


@pytest.fixture
def register():
    names = []

    def make(subset, root, split):
        name = f"test_maskiges_{subset}_{split}_{uuid.uuid4().hex[:6]}"
        register_avsbench(name, subset, os.fspath(root), split)
        names.append(name)
        return name

    yield make
    for name in names:
        forget_dataset(name)


def _records(name):
    return DatasetCatalog.get(name)


def _frames_as_maskiges(record):
    """Replace each maskige of ``record`` by a copy of its frame (same pixels, any format)."""
    for frame, maskige in zip(record["file_names"], clip_maskige_files(record, MASKIGE_FOLDER)):
        if frame is not None:
            shutil.copyfile(frame, maskige)


def test_layout_is_the_released_one():
    s4 = s4_clip_files("/d/Single-source", "train", "dog_barking", "vid", MASKIGE_FOLDER)
    assert s4.maskiges[0] == (
        "/d/Single-source/s4_data/pre_SAM_mask/train/dog_barking/vid/vid_1_mask_color.png"
    )
    ms3 = ms3_clip_files("/d/Multi-sources", "val", "abc", MASKIGE_FOLDER)
    assert ms3.maskiges[4] == "/d/Multi-sources/ms3_data/pre_SAM_mask/abc/abc.mp4_5_mask_color.png"
    avss = avss_clip_files("/d/AVSS", "test", "v2", "u1", MASKIGE_FOLDER)
    assert len(avss.maskiges) == 10
    assert avss.maskiges[9] == (
        "/d/AVSS/pre_SAM_mask/AVSBench_semantic/v2/u1/processed_frames/9_mask_color.png"
    )
    assert s4_clip_files("/d", "train", "c", "v").maskiges is None
    moved = ms3_clip_files("/d/Multi-sources", "val", "abc", "/elsewhere/masks")
    assert moved.maskiges[0] == "/elsewhere/masks/abc/abc.mp4_1_mask_color.png"


def test_painting_follows_area_order():
    masks = np.zeros((3, 4, 6), bool)
    masks[0, :, :] = True  # largest: the whole frame
    masks[1, :2, :3] = True  # 6 px
    masks[2, 1:3, 2:4] = True  # 4 px, overlaps mask 1 at (1, 2)
    ids = maskige_ids(masks)
    assert ids[1, 2] == 1 and ids[2, 3] == 1  # the smallest mask wins where it covers
    assert ids[0, 0] == 2 and ids[3, 5] == 3
    assert maskige_ids(np.zeros((1, 2, 2), bool)).max() == 0
    rgb = paint_maskige(masks)
    assert tuple(rgb[3, 5]) == ADE20K_PALETTE[3] and tuple(rgb[0, 0]) == ADE20K_PALETTE[2]


def test_off_by_default_and_never_read(tmp_path, register):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    assert cfg.INPUT.MASKIGE_FOLDER == ""
    cfg.INPUT.FRAME_SIZE = (24, 24)
    name = register("s4", make_s4_tree(tmp_path / "Single-source")["root"], "val")
    record = _records(name)[0]
    # The tree has no maskige at all: nothing may try to read one.
    out = AVSDatasetMapper(cfg, is_train=True)(record)
    assert "maskiges" not in out and "maskige_file_names" not in out
    cfg.INPUT.MASKIGE_FOLDER = MASKIGE_FOLDER
    with pytest.raises(AVSDataError, match="_1_mask_color.png: missing maskige"):
        AVSDatasetMapper(cfg, is_train=False)(record)


@pytest.mark.parametrize("is_train", [True, False])
def test_maskiges_follow_the_frames_geometry(tmp_path, register, is_train):
    root = make_s4_tree(tmp_path / "Single-source", maskiges=True)["root"]
    record = _records(register("s4", root, "train"))[0]
    _frames_as_maskiges(record)
    augmentations = [
        T.ResizeShortestEdge([40, 48], max_size=64, sample_style="choice"),
        T.RandomCrop("absolute", (30, 26)),
        T.RandomFlip(prob=1.0),
    ]
    mapper = AVSDatasetMapper(
        is_train,
        frame_size=(32, 32),
        maskige_folder=MASKIGE_FOLDER,
        augmentations=augmentations if is_train else (),
    )
    out = mapper(record)
    frames, maskiges = out["frames"], out["maskiges"]
    expected_size = (30, 26) if is_train else (32, 32)
    assert maskiges.dtype == torch.uint8 and maskiges.shape == (5, 3, *expected_size)
    assert torch.equal(maskiges, frames)
    video = record["video_id"]
    suffix = f"pre_SAM_mask/train/{record['category']}/{video}/{video}_1_mask_color.png"
    assert out["maskige_file_names"][0].endswith(suffix)


def test_avss_padding_crop_and_own_colour_jitter(tmp_path, register):
    root = make_avss_tree(tmp_path / "AVSS", maskiges=True)["root"]
    records = _records(register("avss", root, "train"))
    record = next(r for r in records if r["avss_label"] == "v1m")
    _frames_as_maskiges(record)
    base = {"frame_size": (16, 16), "resize_mode": "crop", "maskige_folder": MASKIGE_FOLDER}
    out = AVSDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)], **base)(record)
    assert out["maskiges"].shape == (10, 3, 16, 16)
    assert torch.equal(out["maskiges"], out["frames"])
    assert out["maskige_file_names"][5:] == [None] * 5
    assert not out["maskiges"][5:].any()  # padded frames: zeros, like the frames

    class ColorJitterSSD(T.Augmentation):
        def get_transform(self, image):
            return ColorAugSSDTransform(img_format="RGB")

    np.random.seed(0)
    jittered = AVSDatasetMapper(True, augmentations=[ColorJitterSSD()], **base)(record)
    plain = AVSDatasetMapper(True, **base)(record)
    # Every frame and every maskige draws its own colour jitter, as COMBO trains.
    changed = [not torch.equal(jittered["maskiges"][t], plain["maskiges"][t]) for t in range(5)]
    differs = [not torch.equal(jittered["maskiges"][t], jittered["frames"][t]) for t in range(5)]
    assert any(changed) and any(differs)


def test_records_own_maskige_list_and_mismatch(tmp_path):
    frames = [os.fspath(tmp_path / f"{i}.png") for i in range(2)]
    record = {"video_id": "mine", "file_names": frames, "maskige_file_names": ["a.png"]}
    with pytest.raises(AVSDataError, match="2 frames but 1 maskiges"):
        clip_maskige_files(record, MASKIGE_FOLDER)
    record["maskige_file_names"] = ["a.png", None]
    with pytest.raises(AVSDataError, match="1.png: no maskige"):
        clip_maskige_files(record, MASKIGE_FOLDER)
    record = {"video_id": "mine", "file_names": frames, "dataset_name": "not_registered_x"}
    with pytest.raises(AVSDataError, match="not in the AVSBench layout"):
        clip_maskige_files(record, MASKIGE_FOLDER)


def test_own_clips_carry_their_maskiges(tmp_path):
    frames = [tmp_path / f"f{t}.png" for t in range(3)]
    maskiges = [tmp_path / "seg" / f"f{t}.png" for t in range(3)]
    for frame, maskige in zip(frames, maskiges):
        write_frame(frame, seed=frame.name)
        write_frame(maskige, seed=frame.name)  # same pixels as the frame
    write_log_mel_pkl(tmp_path / "a.pkl", num_examples=3)
    audio = os.fspath(tmp_path / "a.pkl")
    clip = {"file_names": frames, "maskige_file_names": maskiges, "audio_file_name": audio}
    name = unique_dataset_name("maskiges")
    register_avs_dataset(name, [clip], num_frames=5)
    try:
        record = _records(name)[0]
        out = AVSDatasetMapper(False, frame_size=(16, 16), maskige_folder=MASKIGE_FOLDER)(record)
    finally:
        forget_dataset(name)
    assert out["maskige_file_names"][3:] == [None, None]
    assert torch.equal(out["maskiges"], out["frames"]) and not out["maskiges"][3:].any()


def test_generator_writes_maskiges_of_every_object(tmp_path, register):
    sizes = {"train": 2, "val": 0, "test": 0}
    generate(str(tmp_path), split_sizes=sizes, num_classes=4, seed=5, size=48, progress=False)
    for subset, folder in (("s4", "Single-source"), ("ms3", "Multi-sources"), ("avss", "AVSS")):
        records = _records(register(subset, tmp_path / folder, "train"))
        for index, record in enumerate(records):
            clip = dataset_clip(5, subset, "train", index, num_classes=4, size=48)
            paths = [p for p in clip_maskige_files(record, MASKIGE_FOLDER) if p is not None]
            assert len(paths) == len(clip.frames)
            for t, path in enumerate(paths):
                with Image.open(path) as image:
                    assert image.mode == "P"
                    ids = np.asarray(image)
                    rgb = np.asarray(image.convert("RGB"))
                assert np.array_equal(ids, maskige_ids(clip.object_masks[t]))
                # Every object, sounding or not, has a colour of its own, the background another.
                colors = {tuple(rgb[m].reshape(-1, 3)[0]) for m in clip.object_masks[t] if m.any()}
                assert len(colors) == len(clip.objects)
                assert tuple(rgb[~clip.object_masks[t].any(0)][0]) == ADE20K_PALETTE[0]
    generate(
        str(tmp_path / "none"), subsets=["ms3"], split_sizes=sizes, num_classes=4, seed=5,
        size=48, maskiges=False, progress=False,
    )  # fmt: skip
    assert not (tmp_path / "none" / "Multi-sources" / "ms3_data" / MASKIGE_FOLDER).exists()


def test_validator_checks_maskiges_when_asked(tmp_path, register):
    s4 = register("s4", make_s4_tree(tmp_path / "Single-source", maskiges=True)["root"], "val")
    avss = register("avss", make_avss_tree(tmp_path / "AVSS", maskiges=True)["root"], "test")
    for name in (s4, avss):
        problems, clips = validate_dataset(name, maskige_folder=MASKIGE_FOLDER)
        assert problems == [] and clips > 0

    s4_paths = clip_maskige_files(_records(s4)[0], MASKIGE_FOLDER)
    os.remove(s4_paths[2])
    Image.new("RGB", (7, 9)).save(s4_paths[3])
    avss_paths = clip_maskige_files(_records(avss)[0], MASKIGE_FOLDER)
    Image.new("RGB", (224, 224)).save(avss_paths[0])  # the released AVSS maskiges' size
    with open(avss_paths[1], "wb") as f:
        f.write(b"not a png")

    problems, _ = validate_dataset(s4, maskige_folder=MASKIGE_FOLDER)
    assert problems == [
        f"{s4}: {s4_paths[2]}: missing maskige",
        f"{s4}: {s4_paths[3]}: maskige size (9, 7) differs from its frame (24, 24)",
    ]
    problems, _ = validate_dataset(avss, maskige_folder=MASKIGE_FOLDER)
    assert len(problems) == 1 and problems[0].startswith(f"{avss}: {avss_paths[1]}: unreadable")
    # Not asked for: maskiges are not looked at.
    assert validate_dataset(s4) == ([], len(_records(s4)))
    tool = load_tool("validate_dataset")
    assert tool.main([s4]) == 0
    assert tool.main(["--maskiges", MASKIGE_FOLDER, s4]) == 1
