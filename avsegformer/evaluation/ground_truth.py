"""The ground truth as the evaluator scores it: decoded like the data mapper decodes it, then
nearest-resized to the prediction size (the reference's PIL nearest mask resize)."""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.masks import IGNORE_LABEL, read_avs_mask

__all__ = ["read_clip_ground_truth", "read_scored_labels"]


def read_scored_labels(
    path: str, mask_format: str, palette: np.ndarray | None, size: Sequence[int]
) -> np.ndarray:
    """One ground-truth PNG as class ids at ``size`` = (height, width).

    Args:
        path: the mask PNG.
        mask_format: ``binary``, ``palette`` or ``index`` (see :mod:`avsegformer.data.masks`).
        palette: the class colours [K, 3] for ``palette``/``index`` masks, else None.
        size: the prediction's (height, width).

    Returns:
        int64 [H, W] class ids (binary: 0/1; 255 = ignore for ``index`` masks).
    """
    num_classes = len(palette) if palette is not None else None
    labels = read_avs_mask(path, mask_format, palette=palette, num_classes=num_classes)
    if labels.shape != tuple(size):
        image = Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST)
        labels = np.asarray(image)
    return labels.astype(np.int64)


def read_clip_ground_truth(
    files: Sequence[str | None],
    frames: Sequence[int],
    mask_format: str,
    palette: np.ndarray | None,
    size: Sequence[int],
    binary: bool,
) -> torch.Tensor:
    """The ground truth of a clip's scored ``frames`` (indices into ``files``).

    Returns:
        int64 [len(frames), H, W]. A binary ground truth with ignore (255) pixels is an error
        naming the file: the binary AVSBench metrics have no ignore region.
    """
    masks = [read_scored_labels(files[t], mask_format, palette, size) for t in frames]
    if not masks:
        return torch.zeros(0, *size, dtype=torch.int64)
    gt = torch.from_numpy(np.stack(masks))
    if binary and (gt == IGNORE_LABEL).any():
        first = next(files[t] for t, m in zip(frames, masks) if (m == IGNORE_LABEL).any())
        raise ValueError(
            f"{first}: ignore-label ({IGNORE_LABEL}) pixels in a binary ground truth; the "
            "binary AVSBench metrics have no ignore region"
        )
    return gt
