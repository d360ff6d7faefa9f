"""Writing predictions as images: AVSBench-style mask PNGs, overlays on the input frames, and
labelled comparison grids (frame, ground truth, predictions side by side)."""

import logging
import os
from typing import Sequence, Tuple

import cv2
import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = [
    "binary_mask_image",
    "palette_mask_image",
    "overlay_image",
    "save_image",
    "upscale_frame",
    "highlight_mask",
    "labelled_grid",
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


#: Factor applied to the pixels outside a highlighted mask, so the marked object stands out.
DIM_OUTSIDE = 0.55
#: Colours (RGB) of grid text and of the bands that hold it.
TEXT_COLOR = (255, 255, 255)
BAND_COLOR = (32, 32, 32)


def upscale_frame(frame: np.ndarray, side: int) -> np.ndarray:
    """Resize an RGB frame to ``side`` x ``side`` (bicubic, for viewing).

    Args:
        frame: uint8 [H, W, 3].

    Returns:
        uint8 [side, side, 3].
    """
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H, W, 3], got shape {frame.shape}")
    return cv2.resize(frame, (side, side), interpolation=cv2.INTER_CUBIC)


def highlight_mask(
    frame: np.ndarray,
    mask: np.ndarray,
    color: Sequence[int],
    *,
    alpha: float = 0.45,
    thickness: int = 3,
) -> np.ndarray:
    """Mark a mask strongly on a frame: tint inside, outline (OpenCV contours, a coloured line
    in a black rim) on its border, and the rest of the frame dimmed by :data:`DIM_OUTSIDE`.

    Args:
        frame: uint8 [H, W, 3], RGB.
        mask: [h, w], non-zero = marked; resized to the frame with nearest neighbour, so a
            low-resolution prediction keeps its own pixels.
        color: RGB of the tint and the outline.
        alpha: opacity of the tint.
        thickness: outline width in pixels.

    Returns:
        uint8 [H, W, 3].
    """
    frame = np.asarray(frame, dtype=np.uint8)
    height, width = frame.shape[:2]
    mask = (np.asarray(mask) != 0).astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    inside = mask.astype(bool)[..., None]
    base = frame.astype(np.float32)
    tint = (1 - alpha) * base + alpha * np.asarray(color, np.float32)
    marked = np.where(inside, tint, DIM_OUTSIDE * base)
    marked = np.clip(marked + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # A dark rim around the coloured line keeps the outline visible on an object of its colour.
    cv2.drawContours(marked, contours, -1, (0, 0, 0), thickness + 2)
    cv2.drawContours(marked, contours, -1, tuple(int(c) for c in color), thickness)
    return marked


def _text_band(text_lines: Sequence[str], width: int, height: int) -> np.ndarray:
    """A dark band [height, width, 3] with centred lines of text."""
    band = np.empty((height, width, 3), np.uint8)
    band[:] = BAND_COLOR
    font, scale, weight = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    line_height = height // max(len(text_lines), 1)
    for i, line in enumerate(text_lines):
        (text_width, text_height), _ = cv2.getTextSize(line, font, scale, weight)
        x = max((width - text_width) // 2, 2)
        y = i * line_height + (line_height + text_height) // 2
        cv2.putText(band, line, (x, y), font, scale, TEXT_COLOR, weight, cv2.LINE_AA)
    return band


def labelled_grid(
    panels: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    row_titles: Sequence[Sequence[str]],
    *,
    captions: Sequence[Sequence[str]] | None = None,
    header_height: int = 28,
    label_width: int = 170,
    caption_height: int = 22,
) -> Image.Image:
    """Lay equal-size panels out in a grid with column titles on top and row titles on the left.

    Args:
        panels: rows of uint8 [S, S, 3] panels, every row as long as ``column_titles``.
        column_titles: one line per column.
        row_titles: per row, the lines of its label.
        captions: optional per row and column, one line under the panel (``""`` for none).
        header_height, label_width, caption_height: sizes of the text bands in pixels.

    Returns:
        RGB image of ``label_width + columns * S`` by
        ``header_height + rows * (S + caption_height if captions else S)`` pixels.
    """
    if not panels:
        raise ValueError("labelled_grid needs at least one row of panels")
    side = panels[0][0].shape[0]
    if len(row_titles) != len(panels):
        raise ValueError(f"{len(row_titles)} row titles for {len(panels)} rows")
    rows = [_text_band([], label_width, header_height)]
    rows[0] = np.concatenate(
        [rows[0]] + [_text_band([t], side, header_height) for t in column_titles], axis=1
    )
    for r, row in enumerate(panels):
        if len(row) != len(column_titles):
            raise ValueError(f"row {r} has {len(row)} panels for {len(column_titles)} columns")
        for panel in row:
            if panel.shape != (side, side, 3):
                raise ValueError(f"panels must all be [{side}, {side}, 3], got {panel.shape}")
        cells = np.concatenate(list(row), axis=1)
        if captions is not None:
            strips = [_text_band([c] if c else [], side, caption_height) for c in captions[r]]
            cells = np.concatenate([cells, np.concatenate(strips, axis=1)], axis=0)
        label = _text_band(row_titles[r], label_width, cells.shape[0])
        rows.append(np.concatenate([label, cells], axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0), mode="RGB")


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
