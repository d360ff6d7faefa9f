"""Training augmentations from the config: off for AVSegFormer, COMBO's recipe replayed over a
clip's frames, masks and maskiges."""

import os
import random

import numpy as np
import pytest
import torch
from avsbench_tree import write_log_mel_pkl
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image
from scipy.ndimage import binary_erosion

from avsegformer import add_avsegformer_config
from avsegformer.data import AVSDatasetMapper
from avsegformer.data.augmentations import build_train_augmentations, pad_to_square

NUM_FRAMES = 5
STORED_SIZE = (48, 64)  # (H, W)
BOX = (8, 6, 30, 26)  # top, left, bottom, right: off-centre, so a flip moves it


def _cfg(recipe: str | None = None):
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    if recipe == "s4":  # COMBO S4/MS3, scaled down: 24..64 short side, 32x32 crop, pad to 32
        cfg.INPUT.AUGMENT = True
        cfg.INPUT.FRAME_SIZE = STORED_SIZE
        cfg.INPUT.MIN_SIZE_TRAIN = (24, 48, 64)
        cfg.INPUT.MAX_SIZE_TRAIN = 128
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = (32, 32)
        cfg.INPUT.COLOR_AUG_SSD = True
        cfg.INPUT.SIZE_DIVISIBILITY = 32
    elif recipe == "avss":  # COMBO AVSS: the mapper resizes, then colour jitter and flip only
        cfg.INPUT.AUGMENT = True
        cfg.INPUT.FRAME_SIZE = (32, 32)
        cfg.INPUT.MIN_SIZE_TRAIN = (0,)
        cfg.INPUT.COLOR_AUG_SSD = True
    return cfg


def test_off_by_default_although_detectron2_flips():
    cfg = _cfg()
    # Detectron2's own defaults would flip (and its mapper would resize); ours add nothing.
    assert cfg.INPUT.RANDOM_FLIP == "horizontal" and not cfg.INPUT.CROP.ENABLED
    assert not cfg.INPUT.AUGMENT and cfg.INPUT.SIZE_DIVISIBILITY == -1
    assert build_train_augmentations(cfg) == []
    cfg.INPUT.CROP.ENABLED = cfg.INPUT.COLOR_AUG_SSD = True
    assert build_train_augmentations(cfg) == []
    cfg.INPUT.FRAME_SIZE = (16, 16)
    mapper = AVSDatasetMapper(cfg, is_train=True)
    assert mapper.augmentations is None and mapper.pad_size == -1


def test_recipes_from_the_config():
    s4 = build_train_augmentations(_cfg("s4"))
    assert [type(a) for a in s4] == [
        T.ResizeShortestEdge,
        T.RandomCrop_CategoryAreaConstraint,
        ColorAugSSDTransform,
        T.RandomFlip,
    ]
    resize, crop, color, flip = s4
    assert resize.short_edge_length == (24, 48, 64) and resize.max_size == 128
    assert resize.is_range is False  # MIN_SIZE_TRAIN_SAMPLING "choice"
    assert crop.crop_aug.crop_type == "absolute" and tuple(crop.crop_aug.crop_size) == (32, 32)
    assert crop.single_category_max_area == 1.0 and crop.ignored_category == 255
    assert color.is_rgb  # the mapper augments RGB arrays whatever INPUT.FORMAT is
    assert flip.horizontal and not flip.vertical and flip.prob == 0.5
    avss = build_train_augmentations(_cfg("avss"))
    assert [type(a) for a in avss] == [ColorAugSSDTransform, T.RandomFlip]
    cfg = _cfg("avss")
    cfg.INPUT.RANDOM_FLIP = "none"
    assert [type(a) for a in build_train_augmentations(cfg)] == [ColorAugSSDTransform]
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match="INPUT.RANDOM_FLIP"):
        build_train_augmentations(cfg)


def test_pad_to_square_pads_and_cuts():
    image = np.ones((3, 5, 3), np.uint8)
    padded = pad_to_square(image, 4, 128)
    assert padded.shape == (4, 4, 3)
    assert (padded[:3, :4] == 1).all() and (padded[3] == 128).all()


def _paint_clip(tmp_path) -> dict:
    """A clip whose frames (white box on black), masks (box = 1) and maskiges (black box on
    white) all hold the same box; every frame identical."""
    box = np.zeros(STORED_SIZE, bool)
    top, left, bottom, right = BOX
    box[top:bottom, left:right] = True
    rgb_box = np.repeat(box[..., None], 3, axis=2)
    painted = {
        "frame": np.where(rgb_box, 255, 0),
        "mask": np.where(box, 255, 0),
        "maskige": np.where(rgb_box, 0, 255),
    }
    files = {kind: [] for kind in painted}
    for t in range(NUM_FRAMES):
        for kind, pixels in painted.items():
            path = tmp_path / f"{kind}_{t}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            files[kind].append(os.fspath(path))
    audio = tmp_path / "audio.pkl"
    write_log_mel_pkl(audio, NUM_FRAMES)
    return {
        "video_id": "painted",
        "file_names": files["frame"],
        "sem_seg_file_names": files["mask"],
        "maskige_file_names": files["maskige"],
        "audio_file_name": os.fspath(audio),
        "mask_format": "binary",
    }


def _agrees(shape: np.ndarray, box: np.ndarray) -> bool:
    """``shape`` (a thresholded image) holds ``box`` away from its blended 2-pixel border."""
    inside = binary_erosion(box, iterations=2)
    outside = binary_erosion(~box, iterations=2)
    return bool(shape[inside].all() and not shape[outside].any())


@pytest.mark.parametrize("recipe", ["s4", "avss"])
def test_clip_stays_aligned_under_combo_augmentations(tmp_path, recipe):
    cfg = _cfg(recipe)
    cfg.INPUT.MASKIGE_FOLDER = "pre_SAM_mask"  # the record lists its own maskiges
    mapper = AVSDatasetMapper(cfg, is_train=True)
    record = _paint_clip(tmp_path)
    outcomes, padded_draws, jittered_clips, visible = set(), 0, 0, 0
    for seed in range(12):
        np.random.seed(seed)
        random.seed(seed)
        out = mapper(record)
        frames, maskiges, labels = out["frames"], out["maskiges"], out["sem_seg"]
        assert frames.shape == maskiges.shape == (NUM_FRAMES, 3, 32, 32)
        assert labels.shape == (NUM_FRAMES, 32, 32)
        # Every frame drew the same resize, crop and flip.
        assert all(torch.equal(labels[t], labels[0]) for t in range(NUM_FRAMES))
        padding = labels[0] == 255
        box = (labels[0] == 1).numpy()
        for t in range(NUM_FRAMES):
            frame = frames[t].float().mean(0)
            maskige = maskiges[t].float().mean(0)
            assert _agrees((frame > 80).numpy() & ~padding.numpy(), box), (seed, t)
            assert _agrees((maskige < 80).numpy() & ~padding.numpy(), box), (seed, t)
            # Padding (after the colour jitter): 128 in frames and maskiges.
            assert (frames[t][:, padding] == 128).all() and (maskiges[t][:, padding] == 128).all()
        padded_draws += bool(padding.any())
        visible += bool(box.any())
        # Identical frames, but each frame (and maskige) draws its own colour jitter.
        jittered_clips += len({frames[t].numpy().tobytes() for t in range(NUM_FRAMES)}) > 1
        outcomes.add(labels[0].numpy().tobytes())
    # The draws really varied (scales, crops, flips), so the checks above saw several.
    assert len(outcomes) >= 2 if recipe == "avss" else len(outcomes) >= 6
    assert jittered_clips >= 10 and visible >= 6
    if recipe == "s4":
        assert padded_draws >= 1  # short side 24 < crop 32: padded to 32
    else:
        assert padded_draws == 0
