"""Writing synthetic clips in AVSBench's exact on-disk format (paths from the shared layout).

Audio is written as 16 kHz 16-bit wav and, for S4/MS3, as AVSBench's pickled float32 log-mel
tensor ``[T, 1, 96, 64]`` computed from the written samples by
:func:`avsegformer.data.audio.waveform_to_examples`. Maskiges (COMBO's second input) go to the
released maskiges' folder: every object, sounding or not, is one region of a class-agnostic
segmentation painted by :func:`avsegformer.data.maskiges.save_maskige`, the background another.
Each subset also gets ``clip_classes.json`` (:data:`~avsegformer.data.datasets.layout.CLIP_CLASSES_FILE`):
the sounding and the visible classes of every clip, silent objects included.
"""

import csv
import json
import os
import pickle
from typing import Dict, List, Sequence

import numpy as np
import soundfile
from PIL import Image
from tqdm import tqdm

from ..audio import SAMPLE_RATE, waveform_to_examples
from ..datasets.layout import (
    AVSBENCH_SUBSETS,
    AVSS_CLASS_FILE,
    CLIP_CLASSES_FILE,
    MASKIGE_FOLDER,
    METADATA_COLUMNS,
    SPLITS,
    avss_clip_files,
    ms3_clip_files,
    s4_clip_files,
)
from ..maskiges import save_maskige
from ..masks import AVSS_NUM_CLASSES, avss_palette
from .clips import SUBSETS, SyntheticClip, avss_part, dataset_clip
from .scene import CLASS_LOOKS, MAX_CLASSES

__all__ = [
    "avss_class_names",
    "clip_classes_entry",
    "generate",
    "write_avss_clip",
    "write_ms3_clip",
    "write_s4_clip",
]


def _makedirs_for(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)


def _save_png(array: np.ndarray, path: str, mode: str) -> None:
    _makedirs_for(path)
    Image.fromarray(array, mode=mode).save(path, format="PNG", compress_level=1)


def _save_jpg(array: np.ndarray, path: str) -> None:
    _makedirs_for(path)
    Image.fromarray(array, mode="RGB").save(path, format="JPEG", quality=92)


def _save_wav(waveform: np.ndarray, path: str) -> None:
    _makedirs_for(path)
    samples = np.round(waveform * 32768.0).astype(np.int16)
    soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")


def _save_log_mel(waveform: np.ndarray, path: str, num_frames: int) -> None:
    """AVSBench's ``audio_log_mel/*.pkl``: a pickled float32 tensor [T, 1, 96, 64]."""
    examples = waveform_to_examples(waveform, SAMPLE_RATE)[:num_frames].unsqueeze(1)
    if examples.shape[0] != num_frames:
        raise RuntimeError(f"{path}: {examples.shape[0]} log-mel examples for {num_frames} s")
    _makedirs_for(path)
    with open(path, "wb") as f:
        pickle.dump(examples.contiguous(), f)


def _binary_png(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 255, 0).astype(np.uint8)


def _write_maskiges(files, clip: SyntheticClip) -> None:
    for t, path in enumerate(files.maskiges or ()):
        save_maskige(clip.object_masks[t], path)


def _write_binary_clip(files, clip: SyntheticClip) -> None:
    """Frames, the masks the layout annotates, wav, log-mel and maskiges of an S4/MS3 clip."""
    gt = clip.sounding_mask
    for t, (frame, mask) in enumerate(zip(files.frames, files.masks)):
        _save_png(clip.frames[t], frame, "RGB")
        if mask is not None:
            _save_png(_binary_png(gt[t]), mask, "L")
    _write_maskiges(files, clip)
    _save_wav(clip.waveform, files.audio_wav)
    _save_log_mel(clip.waveform, files.audio_log_mel, len(clip.frames))


def write_s4_clip(
    root: str, split: str, name: str, clip: SyntheticClip, maskige_folder: str | None = None
) -> str:
    """Write one S4 clip under the ``Single-source`` folder ``root`` (its maskiges too with a
    ``maskige_folder``); returns its category (the sounding class)."""
    category = CLASS_LOOKS[clip.sounding_classes[0]].name
    _write_binary_clip(s4_clip_files(root, split, category, name, maskige_folder), clip)
    return category


def write_ms3_clip(
    root: str, split: str, name: str, clip: SyntheticClip, maskige_folder: str | None = None
) -> None:
    """Write one MS3 clip under the ``Multi-sources`` folder ``root`` (its maskiges too with a
    ``maskige_folder``)."""
    _write_binary_clip(ms3_clip_files(root, split, name, maskige_folder), clip)


def write_avss_clip(
    root: str,
    split: str,
    part: str,
    uid: str,
    clip: SyntheticClip,
    palette: np.ndarray,
    maskige_folder: str | None = None,
) -> None:
    """Write one AVSS clip of ``part`` (v1s/v1m/v2) under the ``AVSS`` folder ``root``:
    JPEG frames, palette and class-id masks where the layout annotates, the wav, and with a
    ``maskige_folder`` the maskiges."""
    files = avss_clip_files(root, split, part, uid, maskige_folder)
    labels = clip.semantic_labels
    for i, frame in enumerate(files.frames):
        _save_jpg(clip.frames[i], frame)
        if files.masks[i] is not None:
            _save_png(palette[labels[i]], files.masks[i], "RGB")
            _save_png(labels[i], files.semantic_masks[i], "L")
    _save_wav(clip.waveform, files.audio_wav)
    _write_maskiges(files, clip)


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    _makedirs_for(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def avss_class_names(num_classes: int) -> List[str]:
    """The 71 AVSS class names: background, the synthetic classes, then unused placeholders."""
    names = ["background"] + [look.name for look in CLASS_LOOKS[:num_classes]]
    return names + [f"unused_{i}" for i in range(len(names), AVSS_NUM_CLASSES)]


def clip_classes_entry(clip: SyntheticClip) -> Dict[str, List[str]]:
    """A clip's entry of ``clip_classes.json``: the names of its sounding and visible classes."""
    visible = sorted({o.class_index for o in clip.objects})
    return {
        "sounding": [CLASS_LOOKS[c].name for c in clip.sounding_classes],
        "visible": [CLASS_LOOKS[c].name for c in visible],
    }


def _write_clip(root, subset, split, index, clip, palette, maskige_folder) -> tuple:
    """Write clip ``index`` of ``split``; returns its id (``video_id`` of its record) and its
    row of the subset's metadata table."""
    if subset == "s4":
        name = f"syn_s4_{split}_{index:05d}"
        return name, (name, 0, write_s4_clip(root, split, name, clip, maskige_folder), split)
    if subset == "ms3":
        name = f"syn_ms3_{split}_{index:05d}"
        write_ms3_clip(root, split, name, clip, maskige_folder)
        return name, (name, split)
    part = avss_part(index)
    vid = f"syn{SPLITS.index(split)}{index:07d}"
    uid = f"{vid}_0_{len(clip.frames) * 1000}"
    write_avss_clip(root, split, part, uid, clip, palette, maskige_folder)
    audible = ",".join(CLASS_LOOKS[c].name for c in clip.sounding_classes)
    return uid, (vid, uid, 0, 0, audible, split, part)


def generate(
    output: str,
    *,
    subsets: Sequence[str] = SUBSETS,
    split_sizes: Dict[str, int] | None = None,
    num_classes: int = 8,
    seed: int = 0,
    size: int = 224,
    maskiges: bool = True,
    progress: bool = True,
) -> Dict[str, str]:
    """Write the synthetic dataset.

    Args:
        output: the dataset root; subsets go to ``Single-source``, ``Multi-sources``, ``AVSS``.
        subsets: any of ``s4``, ``ms3``, ``avss``.
        split_sizes: clips per split, e.g. ``{"train": 200, "val": 40, "test": 40}``.
        num_classes: K synthetic classes (2..10).
        seed: the random seed; the output is a function of it (and of the other arguments).
        size: frame side in pixels (AVSBench: 224).
        maskiges: also write every frame's maskige under the layout's ``pre_SAM_mask``.
        progress: show a tqdm progress bar.

    Returns:
        ``{subset: folder}`` of the written subsets.
    """
    split_sizes = split_sizes or {"train": 200, "val": 40, "test": 40}
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 2..{MAX_CLASSES}, got {num_classes}")
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise ValueError(f"unknown subsets {unknown}; choose from {SUBSETS}")
    palette = np.asarray(avss_palette(), dtype=np.uint8)
    total = sum(split_sizes.get(s, 0) for s in SPLITS) * len(subsets)
    bar = tqdm(total=total, desc="synthetic AVSBench", unit="clip", disable=not progress)
    folders = {}
    maskige_folder = MASKIGE_FOLDER if maskiges else None
    for subset in subsets:
        layout = AVSBENCH_SUBSETS[subset]
        root = os.path.join(output, layout["folder"])
        os.makedirs(root, exist_ok=True)
        folders[subset] = root
        rows, classes = [], {}
        for split in SPLITS:
            for index in range(split_sizes.get(split, 0)):
                clip = dataset_clip(seed, subset, split, index, num_classes=num_classes, size=size)
                video_id, row = _write_clip(
                    root, subset, split, index, clip, palette, maskige_folder
                )
                rows.append(row)
                classes[video_id] = clip_classes_entry(clip)
                bar.update(1)
        _write_csv(os.path.join(root, layout["metadata_file"]), METADATA_COLUMNS[subset], rows)
        with open(os.path.join(root, CLIP_CLASSES_FILE), "w", encoding="utf-8") as f:
            json.dump(classes, f, indent=1)
        if subset == "avss":
            label2idx = {name: i for i, name in enumerate(avss_class_names(num_classes))}
            with open(os.path.join(root, AVSS_CLASS_FILE), "w", encoding="utf-8") as f:
                json.dump(label2idx, f, indent=1)
    bar.close()
    return folders
