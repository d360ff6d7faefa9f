"""The synthetic demo's vision-only baseline: the score of predicting every object.

Every synthetic clip shows silent objects that look exactly like sounding ones, so a model that
ignores the audio can at best segment every object (binary task: the union of all objects'
masks; semantic task: every object labelled with its true class). A model that listens beats
this score. The clips are regenerated from the generator's seed (:func:`dataset_clip`, which
knows every object, silent ones too); each regenerated clip is checked against the ground truth
on disk, and the predictions are scored by the project's evaluator.
"""

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from .data.masks import read_avs_mask
from .data.synthetic import SyntheticClip, dataset_clip
from .evaluation import AVSBenchEvaluator

__all__ = ["DATA_SEED", "NUM_SYNTHETIC_CLASSES", "every_object_probs", "every_object_scores"]

#: Generator arguments of the demo's datasets (:func:`avsegformer.data.synthetic.generate`).
DATA_SEED = 0
NUM_SYNTHETIC_CLASSES = 8


def _every_object_labels(clip: SyntheticClip) -> np.ndarray:
    """uint8 [T, H, W]: 1 + class index wherever any object is, sounding or silent."""
    labels = np.zeros((clip.object_masks.shape[0],) + clip.object_masks.shape[2:], np.uint8)
    for index, obj in enumerate(clip.objects):
        labels[clip.object_masks[:, index]] = obj.class_index + 1
    return labels


def every_object_probs(clip: SyntheticClip, num_frames: int, num_classes: int) -> torch.Tensor:
    """The every-object prediction of ``clip`` as evaluator probabilities.

    Args:
        num_frames: T of the record (the clip's real frames, then padding frames predicted as
            background).
        num_classes: 1 (binary task: the union of all objects' masks) or K (semantic task:
            one-hot of every object's class).

    Returns:
        float32 [T, num_classes, H, W].
    """
    real = clip.object_masks.shape[0]
    if num_classes == 1:
        union = torch.from_numpy(clip.object_masks.any(axis=1))
        probs = torch.zeros((num_frames, 1) + tuple(union.shape[1:]))
        probs[:real, 0] = union.float()
        return probs
    labels = torch.zeros((num_frames,) + clip.object_masks.shape[2:], dtype=torch.long)
    labels[:real] = torch.from_numpy(_every_object_labels(clip)).long()
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def _check_clip(record: dict, clip: SyntheticClip, palette) -> None:
    """Raise a ValueError naming the record when the regenerated clip is not the one on disk."""
    truth = clip.sounding_mask if palette is None else clip.semantic_labels
    real = truth.shape[0]
    valid = record.get("frame_valid") or [True] * len(record["sem_seg_file_names"])
    if sum(valid) != real:
        raise ValueError(
            f"{record['video_id']}: {sum(valid)} real frames on disk, the generator "
            f"(seed {DATA_SEED}, {NUM_SYNTHETIC_CLASSES} classes) makes {real}"
        )
    for t, path in enumerate(record["sem_seg_file_names"][:real]):
        if path is None:
            continue
        on_disk = read_avs_mask(path, record.get("mask_format") or "binary", palette=palette)
        expected = truth[t] if palette is not None else truth[t].astype(np.uint8)
        if on_disk.shape != expected.shape or not np.array_equal(on_disk, expected):
            raise ValueError(
                f"{path}: not the mask the synthetic generator (seed {DATA_SEED}, "
                f"{NUM_SYNTHETIC_CLASSES} classes) makes for this clip; the every-object "
                "baseline needs a dataset written by the demo"
            )


def every_object_scores(cfg, dataset: str) -> dict:
    """The evaluator's scores (``mIoU``, ``Fscore``, ...) of predicting every object on
    ``dataset``, a registered split of the demo's synthetic data (S4, MS3 or AVSS layout),
    with ``cfg``'s evaluation settings (``TEST.AVS``)."""
    meta = MetadataCatalog.get(dataset)
    records = DatasetCatalog.get(dataset)
    evaluator = AVSBenchEvaluator(cfg, dataset, distributed=False)
    semantic = meta.task == "semantic"
    palette = meta.stuff_colors if semantic else None
    num_classes = len(palette) if semantic else 1
    evaluator.reset()
    # The loaders keep the metadata table's order, which is the generator's clip order.
    for index, record in enumerate(records):
        clip = dataset_clip(
            DATA_SEED,
            meta.subset,
            meta.split,
            index,
            num_classes=NUM_SYNTHETIC_CLASSES,
            size=record["height"],
        )
        _check_clip(record, clip, palette)
        probs = every_object_probs(clip, len(record["file_names"]), num_classes)
        evaluator.process([record], [{"sem_seg": probs}])
    return dict(evaluator.evaluate()["avs"])
