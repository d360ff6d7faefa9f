"""Write tiny AVSBench trees (S4, MS3, AVSS) in the exact on-disk layout, for tests.

Frames are small (24x24 by default, AVSS 32x20 JPEGs) and audio is short, so a whole tree is
written in well under a second. With ``maskiges=True`` every frame also gets a maskige (a painted
region map of the frame's size) in the released maskiges' folder. Every builder returns a
description of what it wrote.
"""

import csv
import json
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

from avsegformer.data.datasets.layout import (
    AVSBENCH_SUBSETS,
    AVSS_CLASS_FILE,
    MASKIGE_FOLDER,
    METADATA_COLUMNS,
    S4_CATEGORIES,
    avss_clip_files,
    ms3_clip_files,
    s4_clip_files,
)
from avsegformer.data.maskiges import save_maskige
from avsegformer.data.masks import avss_palette

FRAME_SIZE = (24, 24)  # (H, W) of S4/MS3 frames here (224 in the real data)
AVSS_FRAME_SIZE = (20, 32)  # (H, W), a landscape frame to exercise the short-side crop


def _rng(seed_text: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(seed_text.encode()))


def write_frame(path: Path, size=FRAME_SIZE, seed: str = "", fmt: str = "PNG") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _rng(seed or str(path)).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt, quality=95)
    return pixels


def write_binary_mask(path: Path, size=FRAME_SIZE, box=None) -> np.ndarray:
    """A 0/255 single-channel PNG with a white rectangle ``box = (top, left, bottom, right)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    top, left, bottom, right = box or (2, 3, size[0] // 2 + 2, size[1] // 2 + 3)
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)
    return mask


def write_palette_mask(path: Path, size=AVSS_FRAME_SIZE, classes=(0, 5, 70)) -> np.ndarray:
    """An RGB PNG whose pixels are AVSS palette colours; returns the class map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.zeros(size, np.uint8)
    stripes = np.array_split(np.arange(size[1]), len(classes))
    for cls, cols in zip(classes, stripes):
        labels[:, cols] = cls
    palette = np.array(avss_palette(), np.uint8)
    Image.fromarray(palette[labels]).save(path)
    return labels


def write_maskige(path: Path, size=FRAME_SIZE) -> None:
    """A maskige of two overlapping boxes on a background, painted like the released ones."""
    height, width = size
    masks = np.zeros((2, height, width), bool)
    masks[0, : height // 2, : width // 2] = True
    masks[1, height // 4 :, width // 3 :] = True
    save_maskige(masks, os.fspath(path))


def _write_maskiges(files, size=FRAME_SIZE) -> None:
    for path in files.maskiges or ():
        write_maskige(Path(path), size)


def write_log_mel_pkl(path: Path, num_examples: int = 5, seed: str = "") -> torch.Tensor:
    """A pickled ``[N, 1, 96, 64]`` tensor with requires_grad, as AVSBench wrote them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(zlib.crc32((seed or str(path)).encode()))
    tensor = torch.randn(num_examples, 1, 96, 64, generator=gen).requires_grad_()
    with open(path, "wb") as f:
        pickle.dump(tensor, f)
    return tensor.detach()


def write_wav(path: Path, seconds: float = 5.0, rate: int = 16000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    soundfile.write(os.fspath(path), data, rate, subtype="PCM_16")


def _write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _metadata_table(root: Path, subset: str) -> Path:
    return root / AVSBENCH_SUBSETS[subset]["metadata_file"]


def make_s4_tree(root: Path, videos=None, with_wav: bool = True, maskiges: bool = False) -> dict:
    """``Single-source`` layout. ``videos``: {split: [(name, category), ...]}."""
    folder = MASKIGE_FOLDER if maskiges else None
    videos = videos or {
        "train": [("trainA", S4_CATEGORIES[0]), ("trainB", S4_CATEGORIES[5])],
        "val": [("valA", S4_CATEGORIES[1])],
        "test": [("testA", S4_CATEGORIES[2]), ("testB", S4_CATEGORIES[2])],
    }
    rows = []
    for split, items in videos.items():
        for name, category in items:
            rows.append([name, 0, category, split])
            files = s4_clip_files(os.fspath(root), split, category, name, folder)
            for frame, mask in zip(files.frames, files.masks):
                write_frame(Path(frame))
                if mask is not None:
                    write_binary_mask(Path(mask))
            _write_maskiges(files)
            write_log_mel_pkl(Path(files.audio_log_mel))
            if with_wav:
                write_wav(Path(files.audio_wav), channels=2)
    _write_csv(_metadata_table(root, "s4"), METADATA_COLUMNS["s4"], rows)
    return {"root": root, "videos": videos}


def make_ms3_tree(root: Path, videos=None, maskiges: bool = False) -> dict:
    """``Multi-sources`` layout (frames ``visual_frames/<v>/<v>.mp4_<k>.png``)."""
    folder = MASKIGE_FOLDER if maskiges else None
    videos = videos or {"train": ["msTrainA", "msTrainB"], "val": ["msValA"], "test": ["msTestA"]}
    rows = []
    for split, names in videos.items():
        for name in names:
            rows.append([name, split])
            files = ms3_clip_files(os.fspath(root), split, name, folder)
            for frame, mask in zip(files.frames, files.masks):
                write_frame(Path(frame))
                write_binary_mask(Path(mask))
            _write_maskiges(files)
            write_log_mel_pkl(Path(files.audio_log_mel))
            write_wav(Path(files.audio_wav))
    _write_csv(_metadata_table(root, "ms3"), METADATA_COLUMNS["ms3"], rows)
    return {"root": root, "videos": videos}


def avss_class_names() -> list[str]:
    return ["background"] + [f"class_{i:02d}" for i in range(1, 71)]


def make_avss_tree(root: Path, clips=None, wav_rate: int = 16000, maskiges: bool = False) -> dict:
    """AVSS layout. ``clips``: {split: [(uid, label), ...]} with label v1s/v1m/v2."""
    folder = MASKIGE_FOLDER if maskiges else None
    clips = clips or {
        "train": [("uidS", "v1s"), ("uidM", "v1m"), ("uidV2", "v2")],
        "val": [("uidValS", "v1s")],
        "test": [("uidTestM", "v1m"), ("uidTestV2", "v2")],
    }
    rows = []
    for split, items in clips.items():
        for uid, label in items:
            rows.append([uid[:6], uid, 0, 5, "obj", split, label])
            files = avss_clip_files(os.fspath(root), split, label, uid, folder)
            for frame, mask in zip(files.frames, files.masks):
                write_frame(Path(frame), AVSS_FRAME_SIZE, fmt="JPEG")
                if mask is not None:
                    write_palette_mask(Path(mask))
            _write_maskiges(files, AVSS_FRAME_SIZE)
            write_wav(Path(files.audio_wav), seconds=len(files.frames) * 1.0, rate=wav_rate)
    _write_csv(_metadata_table(root, "avss"), METADATA_COLUMNS["avss"], rows)
    # Written in reverse order on purpose: the class order must come from the values.
    names = avss_class_names()
    mapping = {name: index for index, name in reversed(list(enumerate(names)))}
    (root / AVSS_CLASS_FILE).write_text(json.dumps(mapping))
    return {"root": root, "clips": clips}


def make_avsbench_tree(root: Path, maskiges: bool = False) -> dict:
    """All three subsets under ``root`` (the ``AVSBench`` folder)."""
    return {
        subset: make(root / AVSBENCH_SUBSETS[subset]["folder"], maskiges=maskiges)
        for subset, make in (("s4", make_s4_tree), ("ms3", make_ms3_tree), ("avss", make_avss_tree))
    }
