"""AVSDatasetMapper on generated S4 / MS3 / AVSS trees."""

import os
import pickle

import numpy as np
import pytest
import torch
from avsbench_tree import make_avss_tree, make_ms3_tree, make_s4_tree
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from PIL import Image

from avsegformer import add_avsegformer_config
from avsegformer.data import AVSDatasetMapper
from avsegformer.data.audio import wav_to_log_mel
from avsegformer.data.dataset_mapper import resize_geometry
from avsegformer.data.datasets import (
    AVSDataError,
    load_avsbench_avss,
    load_avsbench_ms3,
    load_avsbench_s4,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("avsbench")
    return {
        "s4": make_s4_tree(root / "Single-source")["root"],
        "ms3": make_ms3_tree(root / "Multi-sources")["root"],
        "avss": make_avss_tree(root / "AVSS")["root"],
    }


def _mapper(is_train=True, **kwargs):
    kwargs.setdefault("frame_size", (32, 32))
    return AVSDatasetMapper(is_train, **kwargs)


def _pil_resize(path, size_wh, resample, crop=None, mode="RGB"):
    image = Image.open(path).convert(mode).resize(size_wh, resample)
    return np.asarray(image.crop(crop) if crop else image)


def test_resize_geometry_reproduces_avss_crop():
    # short side -> target, long side truncated with int, centre offset with round()
    assert resize_geometry((20, 32), (16, 16), "crop") == ((25, 16), (4, 0, 20, 16))
    assert resize_geometry((40, 30), (16, 16), "crop") == ((16, 21), (0, 2, 16, 18))
    assert resize_geometry((24, 24), (32, 32), "crop") == ((32, 32), (0, 0, 32, 32))
    assert resize_geometry((20, 32), (16, 16), "resize") == ((16, 16), None)
    with pytest.raises(ValueError, match="resize mode"):
        resize_geometry((20, 32), (16, 16), "pad")


def test_s4_train_clip(tree):
    record = load_avsbench_s4(os.fspath(tree["s4"]), "train")[0]
    out = _mapper(eval_size=(32, 32))(record)
    frames, sem_seg = out["frames"], out["sem_seg"]
    assert frames.dtype == torch.uint8 and frames.shape == (5, 3, 32, 32)
    for k, path in enumerate(record["file_names"]):
        expected = _pil_resize(path, (32, 32), Image.BILINEAR)
        assert np.array_equal(frames[k].permute(1, 2, 0).numpy(), expected)
    assert sem_seg.dtype == torch.int64 and sem_seg.shape == (5, 32, 32)
    grey = _pil_resize(record["sem_seg_file_names"][0], (32, 32), Image.NEAREST, mode="L")
    assert np.array_equal(sem_seg[0].numpy(), (grey > 127).astype(np.int64))
    assert sem_seg[0].max() == 1 and sem_seg[0].min() == 0
    assert torch.all(sem_seg[1:] == 255), "unannotated S4 train frames must be ignored"
    with open(record["audio_file_name"], "rb") as f:
        stored = pickle.load(f).detach()
    assert out["log_mel"].dtype == torch.float32 and out["log_mel"].shape == (5, 96, 64)
    assert torch.equal(out["log_mel"], stored[:, 0])
    assert out["frame_valid"].dtype == torch.bool and out["frame_valid"].all()
    assert (out["height"], out["width"]) == (32, 32)
    for key in ("video_id", "file_names", "sem_seg_file_names", "audio_file_name"):
        assert out[key] == record[key]
    assert record.get("sem_seg") is None, "the input record must not be modified"


def test_ms3_eval_clip_reads_no_ground_truth(tree, tmp_path):
    record = load_avsbench_ms3(os.fspath(tree["ms3"]), "val")[0]
    # The model ignores the ground truth in evaluation and the evaluator reads the files itself:
    # the eval mapper must not open them (a missing mask is not its business).
    record["sem_seg_file_names"] = [os.fspath(tmp_path / f"absent_{k}.png") for k in range(5)]
    out = _mapper(is_train=False, eval_size=(0, 0))(record)
    assert "sem_seg" not in out
    assert out["frames"].shape == (5, 3, 32, 32)
    assert (out["height"], out["width"]) == (24, 24)  # scored at the stored size
    assert out["sem_seg_file_names"] == record["sem_seg_file_names"]

    upscaled = _mapper(is_train=False, eval_size=(48, 40))(record)
    assert "sem_seg" not in upscaled
    assert (upscaled["height"], upscaled["width"]) == (48, 40)
    with pytest.raises(AVSDataError, match="absent_0.png"):
        _mapper(is_train=True)(record)  # training does read them


def test_avss_train_crop_padding_and_labels(tree):
    records = {r["video_id"]: r for r in load_avsbench_avss(os.fspath(tree["avss"]), "train")}
    mapper = _mapper(frame_size=(16, 16), resize_mode="crop", audio_pad="zero")

    v1s = mapper(records["uidS"])
    assert v1s["frames"].shape == (10, 3, 16, 16) and v1s["sem_seg"].shape == (10, 16, 16)
    assert v1s["frame_valid"].tolist() == [True] * 5 + [False] * 5
    assert torch.all(v1s["frames"][5:] == 0), "padded frames are zeros"
    assert torch.all(v1s["sem_seg"][1:] == 255), "v1s train: only frame 0 annotated"
    # 20x32 frames: resize to 25x16 (w x h), crop x from round(4.5) = 4
    path = records["uidS"]["file_names"][0]
    expected = _pil_resize(path, (25, 16), Image.BILINEAR, crop=(4, 0, 20, 16))
    assert np.array_equal(v1s["frames"][0].permute(1, 2, 0).numpy(), expected)
    stored = np.zeros((20, 32), np.uint8)
    stripes = np.array_split(np.arange(32), 3)
    for cls, cols in zip((0, 5, 70), stripes):
        stored[:, cols] = cls
    expected_labels = np.asarray(
        Image.fromarray(stored).resize((25, 16), Image.NEAREST).crop((4, 0, 20, 16))
    )
    assert np.array_equal(v1s["sem_seg"][0].numpy(), expected_labels.astype(np.int64))
    assert set(v1s["sem_seg"][0].unique().tolist()) == {0, 5, 70}

    # 5 s of audio for a clip padded to 10 frames: 5 examples, then zeros (AVSS original)
    expected_audio = wav_to_log_mel(records["uidS"]["audio_file_name"])
    assert torch.equal(v1s["log_mel"][:5], expected_audio)
    assert torch.all(v1s["log_mel"][5:] == 0)

    v2 = mapper(records["uidV2"])
    assert v2["frame_valid"].all() and (v2["sem_seg"] != 255).all()
    assert v2["log_mel"].shape == (10, 96, 64)

    repeated = _mapper(frame_size=(16, 16), audio_pad="repeat")(records["uidM"])
    assert torch.equal(repeated["log_mel"][9], repeated["log_mel"][4])


def test_avss_eval_squashes_and_keeps_padding_flags(tree):
    record = load_avsbench_avss(os.fspath(tree["avss"]), "test")[0]  # v1m
    out = _mapper(is_train=False, frame_size=(16, 16), eval_size=(16, 16))(record)
    path = record["file_names"][0]
    assert np.array_equal(
        out["frames"][0].permute(1, 2, 0).numpy(), _pil_resize(path, (16, 16), Image.BILINEAR)
    )
    assert out["frames"].shape == (10, 3, 16, 16) and torch.all(out["frames"][5:] == 0)
    assert out["frame_valid"].tolist() == [True] * 5 + [False] * 5
    assert "sem_seg" not in out


def test_unknown_colour_is_an_error_naming_file_and_colour(tmp_path):
    root = make_avss_tree(tmp_path / "AVSS", clips={"val": [("uidX", "v1m")]})["root"]
    mask = root / "v1m" / "uidX" / "labels_rgb" / "2.png"
    rgb = np.array(Image.open(mask).convert("RGB"))
    rgb[3, 4] = (10, 20, 30)
    Image.fromarray(rgb).save(mask)
    record = load_avsbench_avss(os.fspath(root), "val")[0]
    with pytest.raises(AVSDataError, match=r"2.png.*\(10, 20, 30\)"):
        _mapper()(record)


def test_bad_files_name_the_file(tmp_path):
    root = make_ms3_tree(tmp_path / "Multi-sources", videos={"val": ["vid"]})["root"]
    record = load_avsbench_ms3(os.fspath(root), "val")[0]
    frame = record["file_names"][3]
    with open(frame, "wb") as f:
        f.write(b"not a png")
    with pytest.raises(AVSDataError, match="vid.mp4_4.png"):
        _mapper()(record)

    root = make_ms3_tree(tmp_path / "Other", videos={"val": ["vid2"]})["root"]
    record = load_avsbench_ms3(os.fspath(root), "val")[0]
    os.remove(record["audio_file_name"])
    with pytest.raises(AVSDataError, match="vid2.pkl"):
        _mapper()(record)
    os.remove(record["sem_seg_file_names"][1])
    with pytest.raises(AVSDataError, match="vid2_2.png"):
        _mapper()(record)


def test_wav_source_bgr_and_clip_consistent_augmentation(tree):
    record = load_avsbench_s4(os.fspath(tree["s4"]), "val")[0]
    plain = _mapper()(record)
    wav = _mapper(audio_source="wav")(record)
    assert torch.equal(wav["log_mel"], wav_to_log_mel(record["audio_wav_file_name"]))
    bgr = _mapper(image_format="BGR")(record)
    assert torch.equal(bgr["frames"], plain["frames"].flip(1))
    flipped = _mapper(augmentations=[T.RandomFlip(prob=1.0)])(record)
    assert torch.equal(flipped["frames"], plain["frames"].flip(-1))
    assert torch.equal(flipped["sem_seg"], plain["sem_seg"].flip(-1))

    pkl_only = dict(record, audio_wav_file_name=None)
    with pytest.raises(AVSDataError, match="AUDIO_SOURCE"):
        _mapper(audio_source="wav")(pkl_only)


def test_from_config(tree):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.INPUT.FRAME_SIZE = (16, 16)
    cfg.INPUT.TRAIN_RESIZE_MODE = "crop"
    cfg.INPUT.AUDIO_PAD = "zero"
    cfg.TEST.AVS.EVAL_SIZE = (0, 0)
    train = AVSDatasetMapper(cfg, is_train=True)
    test = AVSDatasetMapper(cfg, is_train=False)
    assert train.resize_mode == "crop" and test.resize_mode == "resize"
    assert train.frame_size == (16, 16) and train.audio_pad == "zero"
    record = load_avsbench_avss(os.fspath(tree["avss"]), "val")[0]
    out = test(record)
    assert (out["height"], out["width"]) == (20, 32)
    assert "sem_seg" not in out
    cfg.INPUT.AUDIO_SOURCE = "mp3"
    with pytest.raises(ValueError, match="audio_source"):
        AVSDatasetMapper(cfg, is_train=True)
