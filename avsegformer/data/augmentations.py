"""Training augmentations chosen by the config, and the padding that follows them.

The recipe is Mask2Former's semantic-segmentation mapper (what COMBO trains S4/MS3 with):
``ResizeShortestEdge`` -> ``RandomCrop_CategoryAreaConstraint`` -> ``ColorAugSSDTransform`` ->
``RandomFlip``, then padding to a fixed square. :class:`~avsegformer.data.AVSDatasetMapper`
draws the list once per clip and replays it over every frame, mask and maskige of the clip.
"""

import logging

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform

from .masks import IGNORE_LABEL

__all__ = ["IMAGE_PAD_VALUE", "build_train_augmentations", "pad_to_square"]

logger = logging.getLogger(__name__)

#: Value of the pixels :func:`pad_to_square` adds to frames and maskiges (Mask2Former's).
IMAGE_PAD_VALUE = 128


def build_train_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """The training augmentations of ``cfg``, in the order they are applied; none unless
    ``INPUT.AUGMENT``.

    With ``INPUT.AUGMENT`` each step has its own switch:

    * ``ResizeShortestEdge(INPUT.MIN_SIZE_TRAIN, INPUT.MAX_SIZE_TRAIN,
      INPUT.MIN_SIZE_TRAIN_SAMPLING)``, skipped when every size is 0 (no resize);
    * ``RandomCrop_CategoryAreaConstraint(INPUT.CROP.TYPE, INPUT.CROP.SIZE,
      INPUT.CROP.SINGLE_CATEGORY_MAX_AREA)`` when ``INPUT.CROP.ENABLED``; the ignore label does
      not count towards a category's area; a crop larger than the image is clipped to it;
    * PointRend's ``ColorAugSSDTransform`` (SSD photometric distortion) when
      ``INPUT.COLOR_AUG_SSD``. It draws new brightness / contrast / saturation / hue values on
      every ``apply_image`` call, so when a clip's transforms are replayed each frame and each
      maskige gets its own jitter, as Mask2Former and COMBO train; masks are untouched;
    * ``RandomFlip`` of ``INPUT.RANDOM_FLIP`` ("horizontal", "vertical" or "none").

    The mapper augments RGB arrays (it reorders channels for ``INPUT.FORMAT`` afterwards), so
    the colour jitter always works in RGB.
    """
    i = cfg.INPUT
    if not i.AUGMENT:
        return []
    augmentations = []
    if any(i.MIN_SIZE_TRAIN):
        augmentations.append(
            T.ResizeShortestEdge(i.MIN_SIZE_TRAIN, i.MAX_SIZE_TRAIN, i.MIN_SIZE_TRAIN_SAMPLING)
        )
    if i.CROP.ENABLED:
        augmentations.append(
            T.RandomCrop_CategoryAreaConstraint(
                i.CROP.TYPE, i.CROP.SIZE, i.CROP.SINGLE_CATEGORY_MAX_AREA, IGNORE_LABEL
            )
        )
    if i.COLOR_AUG_SSD:
        augmentations.append(ColorAugSSDTransform(img_format="RGB"))
    if i.RANDOM_FLIP != "none":
        if i.RANDOM_FLIP not in ("horizontal", "vertical"):
            raise ValueError(
                f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', "
                f"got {i.RANDOM_FLIP!r}"
            )
        augmentations.append(
            T.RandomFlip(
                horizontal=i.RANDOM_FLIP == "horizontal", vertical=i.RANDOM_FLIP == "vertical"
            )
        )
    return augmentations


def pad_to_square(array: np.ndarray, size: int, value: int) -> np.ndarray:
    """``array`` ``[H, W, ...]`` padded at the bottom and right with ``value`` to ``size`` x
    ``size``, or cut there when it is larger (Mask2Former's padding to
    ``INPUT.SIZE_DIVISIBILITY``)."""
    array = array[:size, :size]
    pad = [(0, size - array.shape[0]), (0, size - array.shape[1])]
    pad += [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=value)
