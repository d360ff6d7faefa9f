"""The evaluator's optional output: each scored frame's predicted mask and its overlay."""

import os
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.utils.file_io import PathManager
from PIL import Image

from .visualize import binary_mask_image, overlay_image, palette_mask_image, save_image

__all__ = ["save_clip_predictions"]


def save_clip_predictions(
    folder: str,
    probs: torch.Tensor,
    frames: Sequence[int],
    file_names: Sequence[str | None],
    palette: np.ndarray | None,
) -> None:
    """Write ``<folder>/<frame stem>.png`` (binary 0/255, or the class palette) and
    ``<frame stem>_overlay.jpg`` for each of the clip's ``frames``.

    Args:
        folder: the clip's output folder.
        probs: float32 [T, K, H, W] probabilities; K = 1 is the binary task (> 0.5), else argmax.
        frames: indices of the frames to write.
        file_names: the clip's frame paths (names the outputs; overlays need the frame).
        palette: the class colours [K, 3] of the semantic task, None for the binary one.
    """
    for t in frames:
        if palette is None:
            labels = (probs[t, 0] > 0.5).numpy().astype(np.int64)
            mask_image = binary_mask_image(labels)
        else:
            labels = probs[t].argmax(0).numpy()
            mask_image = palette_mask_image(labels, palette)
        frame_path = file_names[t] if t < len(file_names) else None
        stem = os.path.splitext(os.path.basename(frame_path))[0] if frame_path else str(t)
        save_image(mask_image, os.path.join(folder, stem + ".png"))
        if frame_path:
            with PathManager.open(frame_path, "rb") as f:
                frame = Image.open(f)
                frame.load()
            save_image(
                overlay_image(frame, labels, palette), os.path.join(folder, stem + "_overlay.jpg")
            )
