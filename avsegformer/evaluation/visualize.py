"""Writing predictions as images: AVSBench-style mask PNGs and overlays on the input frames."""

import logging
import os
from typing import Sequence, Tuple

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = [
    "binary_mask_image",
    "palette_mask_image",
    "overlay_image",
    "save_image",
]

logger = logging.getLogger(__name__)

#: Colour of the foreground in binary overlays (RGB).
BINARY_OVERLAY_COLOR = (255, 64, 64)


def binary_mask_image(mask: np.ndarray) -> Image.Image:
    """A binary mask as AVSBench stores its S4/MS3 ground truth: mode ``L``, values 0 and 255.

    Args:
        mask: [H, W], non-zero = foreground.
    """
    return Image.fromarray(np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8), mode="L")


def palette_mask_image(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A class-index map as an RGB image in the class palette (AVSBench's ``labels_rgb`` format).

    Args:
        labels: class indices [H, W], each < len(palette).
        palette: one RGB triple per class.
    """
    colors = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(colors)):
        raise ValueError(
            f"class indices must lie in [0, {len(colors)}), got [{labels.min()}, {labels.max()}]"
        )
    return Image.fromarray(colors[labels], mode="RGB")


def overlay_image(
    frame: Image.Image,
    labels: np.ndarray,
    palette: Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """Blend the non-background pixels of a mask over a frame.

    Args:
        frame: the input frame; it is resized (bilinear) to the mask size when they differ.
        labels: [H, W] class indices (0 = background) or a binary mask.
        palette: RGB per class; ``None`` colours every non-zero pixel with
            :data:`BINARY_OVERLAY_COLOR`.
        alpha: opacity of the mask colour.

    Returns:
        An RGB image of the mask's size.
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    rgb = frame.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    base = np.asarray(rgb, dtype=np.float32)
    if palette is None:
        colors = np.zeros((2, 3), dtype=np.float32)
        colors[1] = BINARY_OVERLAY_COLOR
        labels = (labels != 0).astype(np.int64)
    else:
        colors = np.asarray(palette, dtype=np.float32).reshape(-1, 3)
    foreground = (labels != 0)[..., None]
    blended = np.where(foreground, (1 - alpha) * base + alpha * colors[labels], base)
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def save_image(image: Image.Image, path: str) -> None:
    """Write an image through Detectron2's PathManager, creating the folder; the format follows
    the extension."""
    PathManager.mkdirs(os.path.dirname(path))
    file_format = _format_from_extension(path)
    with PathManager.open(path, "wb") as f:
        image.save(f, format=file_format)


def _format_from_extension(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    formats: Tuple[Tuple[str, str], ...] = ((".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"))
    for suffix, name in formats:
        if extension == suffix:
            return name
    raise ValueError(f"cannot tell the image format of {path}: use .png or .jpg")
