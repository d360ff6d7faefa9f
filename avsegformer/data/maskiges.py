"""Maskiges: COMBO's second visual input, one RGB image per frame that paints a class-agnostic
segmentation of the frame (every region a segmenter finds, in palette colours).

The released maskiges come from Semantic-SAM; any segmenter will do for your own clips as long as
its masks are painted like them (:func:`paint_maskige`): masks sorted by area, each pixel takes
1 + the rank of the smallest mask covering it (0 where none), drawn with the 150-colour ADE20K
palette. Where a dataset's maskiges are is described by :mod:`.datasets.layout`;
:func:`clip_maskige_files` finds them for a clip record.
"""

import os
from collections.abc import Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from PIL import Image

from .datasets.layout import (
    AVSBENCH_SUBSETS,
    avss_clip_files,
    ms3_clip_files,
    s4_clip_files,
)
from .errors import AVSDataError

__all__ = [
    "ADE20K_PALETTE",
    "clip_maskige_files",
    "maskige_ids",
    "paint_maskige",
    "read_maskige",
    "save_maskige",
]

# fmt: off
#: The ADE20K palette (150 colours, index 0 first) the released maskiges are painted with.
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)
# fmt: on


def maskige_ids(masks: np.ndarray) -> np.ndarray:
    """The region-id map of a frame's class-agnostic masks.

    Args:
        masks: bool ``[n, H, W]``, one mask per region, overlaps allowed.

    Returns:
        uint8 ``[H, W]``: 1 + the area rank (smallest first, ties in input order) of the
        smallest mask covering the pixel, 0 where no mask does.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [n, H, W], got shape {masks.shape}")
    if masks.shape[0] > 255:
        raise ValueError(f"{masks.shape[0]} masks do not fit a uint8 id map (at most 255)")
    ids = np.zeros(masks.shape[1:], np.uint8)
    order = np.argsort(masks.sum(axis=(1, 2)), kind="stable")
    for rank, index in enumerate(order, start=1):
        ids[(ids == 0) & masks[index]] = rank
    return ids


def paint_maskige(masks: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``: :func:`maskige_ids` of ``masks`` in :data:`ADE20K_PALETTE`
    colours (ids beyond the palette are black, as a palette PNG shows them)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(ADE20K_PALETTE)] = ADE20K_PALETTE
    return palette[maskige_ids(masks)]


def save_maskige(masks: np.ndarray, path: str) -> None:
    """Write ``masks`` (bool ``[n, H, W]``) as a maskige: a palette PNG of their id map, the
    released maskiges' format. Creates the folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image = Image.fromarray(maskige_ids(masks), mode="P")
    image.putpalette([channel for color in ADE20K_PALETTE for channel in color])
    image.save(path, format="PNG")


def read_maskige(path: str) -> Image.Image:
    """A maskige as an RGB PIL image (palette PNGs through their palette); an
    :class:`AVSDataError` naming the file when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise AVSDataError(f"{path}: missing maskige")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise AVSDataError(f"{path}: cannot read maskige ({err})") from err


def _layout_maskiges(record: dict, folder: str) -> list[str]:
    """The maskiges of an AVSBench-layout record (real frames only)."""
    name = record.get("dataset_name")
    metadata = MetadataCatalog.get(name) if name else None
    subset = metadata.get("subset") if metadata is not None else None
    root = metadata.get("dataset_root") if metadata is not None else None
    if subset not in AVSBENCH_SUBSETS or not root:
        raise AVSDataError(
            f"clip {record.get('video_id')} of dataset {name!r}: no maskige_file_names in the "
            "record and the dataset is not in the AVSBench layout"
        )
    split, video = metadata.get("split"), record["video_id"]
    if subset == "s4":
        files = s4_clip_files(root, split, record["category"], video, folder)
    elif subset == "ms3":
        files = ms3_clip_files(root, split, video, folder)
    else:
        files = avss_clip_files(root, split, record["avss_label"], video, folder)
    return files.maskiges


def clip_maskige_files(record: dict, folder: str) -> list[str | None]:
    """The T maskige paths of a clip record, None for padded frames.

    The record's own ``maskige_file_names`` when it has them (your own datasets); otherwise
    the AVSBench layout of its dataset (``dataset_name`` in ``MetadataCatalog`` with ``subset``
    and ``dataset_root``) with the maskige ``folder`` (see :mod:`.datasets.layout`).
    """
    frames: Sequence[str | None] = record["file_names"]
    own = record.get("maskige_file_names")
    if own is not None:
        paths = list(own)
    else:
        real = iter(_layout_maskiges(record, folder))
        paths = [next(real) if frame is not None else None for frame in frames]
    if len(paths) != len(frames):
        raise AVSDataError(
            f"clip {record.get('video_id')}: {len(frames)} frames but {len(paths)} maskiges"
        )
    for frame, path in zip(frames, paths):
        if frame is not None and path is None:
            raise AVSDataError(f"{frame}: no maskige given for this frame")
    return paths
