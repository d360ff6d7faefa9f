#!/usr/bin/env python
"""Write a small synthetic AVSBench (S4, MS3 and AVSS layouts) in AVSBench's exact on-disk format.

Every clip shows 2-4 objects drawn from K classes; each class has its own shape, colour and
texture, and its own sound (a harmonic tone stack at a class-specific pitch, amplitude-modulated
at a class-specific rate). Only the *sounding* objects are in the ground truth, silent objects
look exactly like sounding ones of their class, and every clip has at least one silent object of
another class. Vision alone cannot tell which object to segment (predicting every object scores
about half the mIoU of the exact masks); the audio tells which class sounds.

Layouts (see ``avsbench-spec.md`` §1), under ``--output``:

* ``Single-source/``: ``s4_meta_data.csv`` and ``s4_data/{visual_frames,gt_masks,audio_log_mel,
  audio_wav}/<split>/<category>/...``; one sounding object; train clips have only the first mask.
* ``Multi-sources/``: ``ms3_meta_data.csv``, frames ``visual_frames/<video>/<video>.mp4_<k>.png``
  (no split folder), masks/audio under ``<split>/``; 1-2 sounding objects.
* ``AVSS/``: ``metadata.csv``, ``label2idx.json`` (71 classes; the K synthetic classes are
  1..K), ``{v1s,v1m,v2}/<uid>/{frames/<i>.jpg, labels_rgb/<i>.png, labels_semantic/<i>.png,
  audio.wav}``; v1s/v1m clips have 5 frames, v2 clips 10; v1s train clips only label frame 0.

Audio is written as 16 kHz 16-bit wav and, for S4/MS3, as AVSBench's pickled float32 log-mel
tensor ``[5, 1, 96, 64]`` computed by :func:`avsegformer.data.audio.waveform_to_examples` from
the written samples. The output is a function of ``--seed`` only (each clip has its own random
stream, so changing the split sizes does not change the other clips).

Usage::

    python datasets/prepare_synthetic_avsbench.py --subsets s4 --num-train 200 --seed 0
"""

import argparse
import csv
import json
import logging
import os
import pickle
import sys
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import soundfile
from PIL import Image
from tqdm import tqdm

# Runnable from a source checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from avsegformer.data.audio import SAMPLE_RATE, waveform_to_examples  # noqa: E402
from avsegformer.data.datasets.avsbench import AVSS_NUM_CLASSES, avss_palette  # noqa: E402
from avsegformer.data.datasets.builtin import default_synthetic_root  # noqa: E402

logger = logging.getLogger("prepare_synthetic_avsbench")

SUBSETS = ("s4", "ms3", "avss")
SPLITS = ("train", "val", "test")
SUBSET_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
#: Frames (= seconds) per clip of each AVSS part; S4/MS3 clips have 5.
AVSS_PART_FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}
#: How far (px at 224 px) an object moves over a whole clip, at most.
MAX_TRAVEL = 12.0


@dataclass(frozen=True)
class ClassLook:
    """What a class looks and sounds like. Silent and sounding objects share it."""

    name: str
    shape: str
    color: Tuple[int, int, int]
    texture: str
    pitch_hz: float
    modulation_hz: float


CLASS_LOOKS = (
    ClassLook("red_disc", "disc", (220, 40, 40), "solid", 220.0, 2.0),
    ClassLook("green_square", "square", (40, 190, 60), "hstripes", 311.0, 3.0),
    ClassLook("blue_triangle", "triangle", (50, 80, 230), "solid", 440.0, 4.0),
    ClassLook("yellow_ring", "ring", (235, 215, 40), "solid", 622.0, 5.0),
    ClassLook("magenta_diamond", "diamond", (210, 50, 200), "checker", 880.0, 6.0),
    ClassLook("cyan_cross", "cross", (40, 210, 220), "solid", 1245.0, 7.0),
    ClassLook("orange_ellipse", "ellipse", (245, 140, 30), "vstripes", 1760.0, 2.5),
    ClassLook("white_octagon", "octagon", (235, 235, 235), "dots", 2490.0, 3.5),
    ClassLook("purple_hourglass", "hourglass", (120, 40, 170), "solid", 165.0, 4.5),
    ClassLook("teal_halfdisc", "halfdisc", (20, 130, 120), "dstripes", 3520.0, 5.5),
)
MAX_CLASSES = len(CLASS_LOOKS)


@dataclass
class SceneObject:
    class_index: int  # 0-based index into CLASS_LOOKS
    radius: float
    center: Tuple[float, float]  # (y, x) in frame 0
    velocity: Tuple[float, float]  # (dy, dx) per frame
    sounding: bool


@dataclass
class SyntheticClip:
    """One generated clip, in memory.

    Attributes:
        frames: uint8 [T, H, W, 3].
        object_masks: bool [T, num_objects, H, W], the visible pixels of every object.
        objects: the objects, in drawing order.
        waveform: float64 [T * 16000] in [-1, 1], quantised to 16 bits.
    """

    frames: np.ndarray
    object_masks: np.ndarray
    objects: List[SceneObject]
    waveform: np.ndarray

    @property
    def sounding_mask(self) -> np.ndarray:
        """bool [T, H, W]: the ground truth, the union of the sounding objects."""
        sounding = np.array([o.sounding for o in self.objects])
        return self.object_masks[:, sounding].any(axis=1)

    @property
    def semantic_labels(self) -> np.ndarray:
        """uint8 [T, H, W]: 0 = background, 1 + class index where a sounding object is."""
        labels = np.zeros(
            (self.object_masks.shape[0],) + self.object_masks.shape[2:], dtype=np.uint8
        )
        for index, obj in enumerate(self.objects):
            if obj.sounding:
                labels[self.object_masks[:, index]] = obj.class_index + 1
        return labels

    @property
    def sounding_classes(self) -> List[int]:
        return sorted({o.class_index for o in self.objects if o.sounding})


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    ay, ax = np.abs(dy), np.abs(dx)
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(ay, ax) <= 0.8 * r
    if shape == "triangle":
        return (dy <= 0.7 * r) & (ax <= (dy + r) * 0.62)
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return ay + ax <= r
    if shape == "cross":
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "ellipse":
        return (dx / r) ** 2 + (dy / (0.55 * r)) ** 2 <= 1
    if shape == "octagon":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r) & (ax + ay <= 1.2 * r)
    if shape == "hourglass":
        return (ay <= 0.85 * r) & (ax <= 0.15 * r + 0.75 * ay)
    if shape == "halfdisc":
        return (dy**2 + dx**2 <= r**2) & (dy >= -0.15 * r)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Brightness factor in (0, 1] over the object, a class signature like colour and shape."""
    period = max(r / 3.0, 3.0)
    if texture == "solid":
        return np.ones_like(dy)
    if texture == "hstripes":
        return np.where(np.floor(dy / period) % 2 == 0, 1.0, 0.55)
    if texture == "vstripes":
        return np.where(np.floor(dx / period) % 2 == 0, 1.0, 0.55)
    if texture == "dstripes":
        return np.where(np.floor((dx + dy) / period) % 2 == 0, 1.0, 0.55)
    if texture == "checker":
        return np.where((np.floor(dy / period) + np.floor(dx / period)) % 2 == 0, 1.0, 0.5)
    if texture == "dots":
        fy = (dy / period) % 1.0 - 0.5
        fx = (dx / period) % 1.0 - 0.5
        return np.where(fy**2 + fx**2 <= 0.09, 0.45, 1.0)
    raise ValueError(f"unknown texture {texture!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour gradient, different for every clip (float32 [H, W, 3])."""
    a, b = rng.uniform(40, 150, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def _place_objects(
    rng: np.random.Generator,
    classes: Sequence[int],
    sounding: Sequence[bool],
    size: int,
    num_frames: int,
) -> List[SceneObject]:
    """Objects that stay inside the frame and never touch each other during the clip.

    Each object gets its own cell of a 2x2 grid (random cells) and stays inside it for the
    whole clip, which guarantees this without rejection sampling.
    """
    if len(classes) > 4:
        raise ValueError(f"at most 4 objects per clip, got {len(classes)}")
    scale = size / 224.0
    travel = MAX_TRAVEL * scale
    # The whole clip moves an object by `travel` px at most, whatever its length.
    speed = travel / max(num_frames - 1, 1) / np.sqrt(2)
    cell = size / 2.0
    cells = rng.permutation(4)[: len(classes)]
    objects = []
    for class_index, is_sounding, cell_index in zip(classes, sounding, cells):
        radius = min(rng.uniform(30, 46) * scale, cell / 2 - travel - 2)
        low = np.array([cell_index // 2, cell_index % 2]) * cell + radius + travel + 1
        high = low + cell - 2 * (radius + travel + 1)
        center = tuple(rng.uniform(low, np.maximum(high, low)))
        velocity = tuple(rng.uniform(-speed, speed, size=2))
        objects.append(SceneObject(class_index, radius, center, velocity, is_sounding))
    return objects


def render_frames(
    rng: np.random.Generator, objects: Sequence[SceneObject], size: int, num_frames: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Draw the clip: frames uint8 [T, H, W, 3] and visible object masks bool [T, N, H, W]."""
    background = _background(rng, size)
    coords = np.arange(size, dtype=np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, len(objects), size, size), dtype=bool)
    for t in range(num_frames):
        # A global flicker instead of pixel noise: pixel noise makes PNG writing 5x slower.
        image = background * rng.uniform(0.95, 1.05)
        for index, obj in enumerate(objects):
            look = CLASS_LOOKS[obj.class_index]
            cy = obj.center[0] + obj.velocity[0] * t
            cx = obj.center[1] + obj.velocity[1] * t
            # Only the object's bounding box is computed.
            y0, y1 = max(int(cy - obj.radius) - 1, 0), min(int(cy + obj.radius) + 2, size)
            x0, x1 = max(int(cx - obj.radius) - 1, 0), min(int(cx + obj.radius) + 2, size)
            dy = (coords[y0:y1] - cy)[:, None]
            dx = (coords[x0:x1] - cx)[None, :]
            dy, dx = np.broadcast_arrays(dy, dx)
            inside = _shape_mask(look.shape, dy, dx, obj.radius)
            shade = _texture(look.texture, dy[inside], dx[inside], obj.radius)
            image[y0:y1, x0:x1][inside] = np.asarray(look.color, np.float32) * shade[:, None]
            box = masks[t, :, y0:y1, x0:x1]
            box[:, inside] = False  # later objects hide earlier ones
            box[index] = inside
        frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return frames, masks


# ---------------------------------------------------------------------------------------------
# sound
# ---------------------------------------------------------------------------------------------
def class_sound(
    rng: np.random.Generator, class_index: int, num_samples: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A class's sound: 4 harmonics of its pitch (±1.5 % per clip), amplitude-modulated at its
    rate, with a random phase; unit peak."""
    look = CLASS_LOOKS[class_index]
    t = np.arange(num_samples) / sample_rate
    pitch = look.pitch_hz * rng.uniform(0.985, 1.015)
    tone = sum(
        np.sin(2 * np.pi * k * pitch * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5)
    )
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * look.modulation_hz * t + rng.uniform(0, 2 * np.pi))
    sound = tone * envelope
    return sound / np.abs(sound).max()


def mix_audio(
    rng: np.random.Generator, sounding_classes: Sequence[int], seconds: int
) -> np.ndarray:
    """The clip's audio: the sounding classes' sounds at random levels plus faint noise,
    quantised to 16 bits (float64 [seconds * 16000] in [-1, 1))."""
    num_samples = seconds * SAMPLE_RATE
    mix = rng.normal(0, 0.01, size=num_samples)
    for class_index in sounding_classes:
        mix += rng.uniform(0.5, 1.0) * class_sound(rng, class_index, num_samples)
    mix *= 0.6 / np.abs(mix).max()
    return np.round(mix * 32767).astype(np.int16) / 32768.0


# ---------------------------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------------------------
def make_clip(
    rng: np.random.Generator,
    *,
    num_classes: int,
    num_sounding: int,
    num_silent: int,
    num_frames: int = 5,
    size: int = 224,
) -> SyntheticClip:
    """Draw one clip: ``num_sounding + num_silent`` objects of distinct classes (so the sound
    names exactly which objects to segment), the first ``num_sounding`` of them audible."""
    if num_sounding < 1 or num_silent < 1:
        raise ValueError("a clip needs at least one sounding and one silent object")
    if num_sounding + num_silent > num_classes:
        raise ValueError(
            f"{num_sounding + num_silent} objects of distinct classes need >= that many "
            f"classes, got {num_classes}"
        )
    classes = rng.choice(num_classes, size=num_sounding + num_silent, replace=False).tolist()
    sounding = [True] * num_sounding + [False] * num_silent
    order = rng.permutation(len(classes))  # the sounding objects are not always drawn first
    classes = [classes[i] for i in order]
    sounding = [sounding[i] for i in order]
    objects = _place_objects(rng, classes, sounding, size, num_frames)
    frames, masks = render_frames(rng, objects, size, num_frames)
    waveform = mix_audio(rng, sorted(c for c, s in zip(classes, sounding) if s), num_frames)
    return SyntheticClip(frames, masks, objects, waveform)


def clip_rng(seed: int, subset: str, split: str, index: int) -> np.random.Generator:
    """Each clip's own random stream, a function of (seed, subset, split, index) only."""
    return np.random.default_rng([seed, SUBSETS.index(subset), SPLITS.index(split), index])


def _object_counts(rng: np.random.Generator, kind: str, num_classes: int) -> Dict[str, int]:
    """Sounding and silent object counts: single-source clips 1 + 1-2, multi-source clips
    1-2 + 1-2, fewer when there are not enough classes (objects have distinct classes)."""
    sounding = 1 if kind == "single" else int(rng.integers(1, 3))
    silent = int(rng.integers(1, 3))
    silent = max(min(silent, num_classes - sounding), 1)
    sounding = min(sounding, num_classes - silent)
    return {"num_sounding": sounding, "num_silent": silent}


def dataset_clip(
    seed: int, subset: str, split: str, index: int, *, num_classes: int, size: int = 224
) -> SyntheticClip:
    """Clip ``index`` of ``split`` of ``subset`` exactly as :func:`generate` writes it: S4 clips
    have one sounding object, MS3 clips 1-2, AVSS clips follow their part (v1s like S4, v1m/v2
    like MS3; v2 clips have 10 frames)."""
    rng = clip_rng(seed, subset, split, index)
    num_frames, kind = 5, "single" if subset == "s4" else "multi"
    if subset == "avss":
        part = _avss_part(index)
        num_frames, kind = AVSS_PART_FRAMES[part], "single" if part == "v1s" else "multi"
    counts = _object_counts(rng, kind, num_classes)
    return make_clip(rng, num_classes=num_classes, num_frames=num_frames, size=size, **counts)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
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


def write_s4_clip(root: str, split: str, name: str, clip: SyntheticClip) -> str:
    """Write one S4 clip; returns its category (the sounding class)."""
    category = CLASS_LOOKS[clip.sounding_classes[0]].name
    data = os.path.join(root, "s4_data")
    gt = clip.sounding_mask
    for k in range(1, len(clip.frames) + 1):
        frame = os.path.join(data, "visual_frames", split, category, name, f"{name}_{k}.png")
        _save_png(clip.frames[k - 1], frame, "RGB")
        # AVSBench quirk: S4 train clips are annotated on their first frame only.
        if split != "train" or k == 1:
            mask = os.path.join(data, "gt_masks", split, category, name, f"{name}_{k}.png")
            _save_png(_binary_png(gt[k - 1]), mask, "L")
    _save_wav(clip.waveform, os.path.join(data, "audio_wav", split, category, f"{name}.wav"))
    pkl = os.path.join(data, "audio_log_mel", split, category, f"{name}.pkl")
    _save_log_mel(clip.waveform, pkl, len(clip.frames))
    return category


def write_ms3_clip(root: str, split: str, name: str, clip: SyntheticClip) -> None:
    data = os.path.join(root, "ms3_data")
    gt = clip.sounding_mask
    for k in range(1, len(clip.frames) + 1):
        # AVSBench quirk: MS3 frames have no split folder and keep the ".mp4" of the video.
        frame = os.path.join(data, "visual_frames", name, f"{name}.mp4_{k}.png")
        _save_png(clip.frames[k - 1], frame, "RGB")
        mask = os.path.join(data, "gt_masks", split, name, f"{name}_{k}.png")
        _save_png(_binary_png(gt[k - 1]), mask, "L")
    _save_wav(clip.waveform, os.path.join(data, "audio_wav", split, f"{name}.wav"))
    _save_log_mel(
        clip.waveform, os.path.join(data, "audio_log_mel", split, f"{name}.pkl"), len(clip.frames)
    )


def write_avss_clip(
    root: str, split: str, part: str, uid: str, clip: SyntheticClip, palette: np.ndarray
) -> None:
    folder = os.path.join(root, part, uid)
    labels = clip.semantic_labels
    for i in range(len(clip.frames)):
        _save_jpg(clip.frames[i], os.path.join(folder, "frames", f"{i}.jpg"))
        # AVSBench quirk: v1s train clips are annotated on their first frame only.
        if part == "v1s" and split == "train" and i > 0:
            continue
        _save_png(palette[labels[i]], os.path.join(folder, "labels_rgb", f"{i}.png"), "RGB")
        _save_png(labels[i], os.path.join(folder, "labels_semantic", f"{i}.png"), "L")
    _save_wav(clip.waveform, os.path.join(folder, "audio.wav"))


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


def _avss_part(index: int) -> str:
    # Cycle so that every split of every size has all three parts as soon as it has 3 clips.
    return ("v1s", "v1m", "v2")[index % 3]


def generate(
    output: str,
    *,
    subsets: Sequence[str] = SUBSETS,
    split_sizes: Dict[str, int] | None = None,
    num_classes: int = 8,
    seed: int = 0,
    size: int = 224,
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
    for subset in subsets:
        root = os.path.join(output, SUBSET_FOLDERS[subset])
        os.makedirs(root, exist_ok=True)
        folders[subset] = root
        rows = []
        for split in SPLITS:
            for index in range(split_sizes.get(split, 0)):
                clip = dataset_clip(seed, subset, split, index, num_classes=num_classes, size=size)
                if subset == "s4":
                    name = f"syn_s4_{split}_{index:05d}"
                    category = write_s4_clip(root, split, name, clip)
                    rows.append((name, 0, category, split))
                elif subset == "ms3":
                    name = f"syn_ms3_{split}_{index:05d}"
                    write_ms3_clip(root, split, name, clip)
                    rows.append((name, split))
                else:
                    part = _avss_part(index)
                    vid = f"syn{SPLITS.index(split)}{index:07d}"
                    uid = f"{vid}_0_{AVSS_PART_FRAMES[part] * 1000}"
                    write_avss_clip(root, split, part, uid, clip, palette)
                    audible = ",".join(CLASS_LOOKS[c].name for c in clip.sounding_classes)
                    rows.append((vid, uid, 0, 0, audible, split, part))
                bar.update(1)
        if subset == "s4":
            _write_csv(
                os.path.join(root, "s4_meta_data.csv"),
                ("name", "start_time", "category", "split"),
                rows,
            )
        elif subset == "ms3":
            _write_csv(os.path.join(root, "ms3_meta_data.csv"), ("video_id", "split"), rows)
        else:
            _write_csv(
                os.path.join(root, "metadata.csv"),
                ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"),
                rows,
            )
            label2idx = {name: i for i, name in enumerate(avss_class_names(num_classes))}
            with open(os.path.join(root, "label2idx.json"), "w", encoding="utf-8") as f:
                json.dump(label2idx, f, indent=1)
    bar.close()
    return folders


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=default_synthetic_root(), help="dataset root to write")
    parser.add_argument("--subsets", default="s4,ms3,avss", help="comma-separated: s4,ms3,avss")
    parser.add_argument("--num-train", type=int, default=200, help="clips in each train split")
    parser.add_argument("--num-val", type=int, default=40, help="clips in each val split")
    parser.add_argument("--num-test", type=int, default=40, help="clips in each test split")
    parser.add_argument("--num-classes", type=int, default=8, help=f"K, 2..{MAX_CLASSES}")
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    folders = generate(
        args.output,
        subsets=subsets,
        split_sizes={"train": args.num_train, "val": args.num_val, "test": args.num_test},
        num_classes=args.num_classes,
        seed=args.seed,
        size=args.size,
        progress=not args.no_progress,
    )
    for subset, folder in folders.items():
        logger.info("%s: %s", subset, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
