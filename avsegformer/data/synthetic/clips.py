"""Synthetic clips: which objects a clip holds, which of them sound, and each clip's own random
stream, so that a clip depends only on (seed, subset, split, index)."""

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from ..datasets.layout import AVSBENCH_SUBSETS, AVSS_LABELS, SPLITS
from .scene import SceneObject, place_objects, render_frames
from .sound import mix_audio

__all__ = ["SUBSETS", "SyntheticClip", "avss_part", "clip_rng", "dataset_clip", "make_clip"]

SUBSETS = tuple(AVSBENCH_SUBSETS)


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
    objects = place_objects(rng, classes, sounding, size, num_frames)
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
        part = avss_part(index)
        num_frames, kind = AVSS_LABELS[part], "single" if part == "v1s" else "multi"
    counts = _object_counts(rng, kind, num_classes)
    return make_clip(rng, num_classes=num_classes, num_frames=num_frames, size=size, **counts)


def avss_part(index: int) -> str:
    # Cycle so that every split of every size has all three parts as soon as it has 3 clips.
    return ("v1s", "v1m", "v2")[index % 3]
