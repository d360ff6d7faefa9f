"""The synthetic demo's comparison picture: per test clip, the frame, its ground truth and the
predictions with the clip's own audio, another clip's audio and each negative condition."""

import os

import numpy as np
from detectron2.data import DatasetCatalog
from PIL import Image

from .data.masks import read_avs_mask
from .evaluation.visualize import highlight_mask, labelled_grid, upscale_frame

__all__ = [
    "GROUND_TRUTH_COLOR",
    "PREDICTION_COLOR",
    "comparison_picture",
    "negative_picture_columns",
    "predictions_folder",
]

#: Colours (RGB) of the ground truth and of the predictions in the comparison picture.
GROUND_TRUTH_COLOR = (40, 230, 80)
PREDICTION_COLOR = (255, 40, 200)


def predictions_folder(output_dir: str, dataset: str) -> str:
    """Where the evaluator writes the masks of ``dataset`` (``save_predictions``)."""
    return os.path.join(output_dir, "inference", dataset, "predictions")


def _read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _predicted_mask(folder: str, record: dict, frame: int) -> np.ndarray | None:
    stem = os.path.splitext(os.path.basename(record["file_names"][frame]))[0]
    path = os.path.join(folder, record["video_id"], stem + ".png")
    if not os.path.isfile(path):  # a clip the condition left out (no off-screen donor)
        return None
    with Image.open(path) as image:
        # Binary masks are 0/255 grey, semantic ones the class palette with a black background.
        return np.asarray(image.convert("L")) != 0


def comparison_picture(
    records: list[dict],
    own_audio: str,
    other_audio: str,
    path: str,
    *,
    negatives: dict | None = None,
    max_clips: int = 4,
    frame: int = 2,
    side: int = 256,
) -> str:
    """Write one JPEG: per clip, the frame, its ground truth, the prediction with the clip's own
    audio, with another clip's audio and under each negative condition, upscaled to ``side``.

    Args:
        records: the clips with the other audio (:func:`shuffled_audio_records`): ``file_names``,
            ``sem_seg_file_names``, ``category`` and ``audio_category``.
        own_audio, other_audio: prediction folders (:func:`predictions_folder`).
        negatives: ``{condition: (prediction folder, {video_id: caption})}``, in column order.
        frame: which frame of each clip.

    Returns:
        ``path``.
    """
    negatives = negatives or {}
    panels, row_titles, captions = [], [], []
    for record in records[:max_clips]:
        t = min(frame, len(record["file_names"]) - 1)
        image = upscale_frame(_read_rgb(record["file_names"][t]), side)
        truth = read_avs_mask(
            record["sem_seg_file_names"][t], record.get("mask_format") or "binary"
        )
        truth = truth != 0
        own, other = record.get("category") or "", record.get("audio_category") or ""
        row = [image, highlight_mask(image, truth, GROUND_TRUTH_COLOR)]
        row_captions = ["", f"sounding: {own}", f"audio: {own}", f"audio: {other}"]
        folders = [own_audio, other_audio] + [folder for folder, _ in negatives.values()]
        for folder in folders:
            mask = _predicted_mask(folder, record, t)
            row.append(image if mask is None else highlight_mask(image, mask, PREDICTION_COLOR))
        row_captions += [notes.get(record["video_id"], "") for _, notes in negatives.values()]
        panels.append(row)
        row_titles.append([record["video_id"], f"frame {t + 1}"])
        captions.append(row_captions)
    columns = ["frame", "ground truth", "prediction, own audio", "prediction, other audio"]
    columns += [f"prediction, {condition}" for condition in negatives]
    grid = labelled_grid(panels, columns, row_titles, captions=captions)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path, quality=90)
    return path


def negative_picture_columns(output_dir: str, dataset: str, conditions) -> dict:
    """``negatives`` of :func:`comparison_picture`: per condition, its prediction folder and
    what each clip hears (the off-screen clip's sounding classes)."""
    from .evaluation.negative_audio import negative_dataset_name

    columns = {}
    for condition in conditions:
        name = negative_dataset_name(dataset, condition)
        notes = {}
        for record in DatasetCatalog.get(name):
            heard = ", ".join(map(str, record.get("audio_classes") or [])) or condition
            notes[record["video_id"]] = f"audio: {heard}"
        columns[condition] = (predictions_folder(output_dir, name), notes)
    return columns
