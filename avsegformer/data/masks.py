"""Ground-truth masks: palettes and the decoding of mask PNGs into class ids.

One decoder for every reader of masks (the data mapper, the evaluator, the dataset validator, the
predictor's overlays), so that all of them see the same classes. Three formats:

* ``binary``: grey PNG, AVSBench stores 0/255; foreground is > 127.
* ``palette``: RGB PNG whose colours are the class palette (AVSS ``labels_rgb``: 71 VOC colours).
* ``index``: 8-bit PNG whose pixel is the class id, 255 = ignore.
"""

import logging
from collections.abc import Sequence

import numpy as np
from detectron2.utils.logger import log_first_n
from PIL import Image

from .errors import AVSDataError

__all__ = [
    "AVSS_NUM_CLASSES",
    "BINARY_CLASSES",
    "BINARY_COLORS",
    "IGNORE_LABEL",
    "MASK_FORMATS",
    "avss_palette",
    "invalid_mask_pixels",
    "labels_from_mask_pixels",
    "mask_pixels",
    "read_avs_mask",
    "voc_palette",
]

#: Class id of pixels that no loss and no metric counts (unannotated or padded frames).
IGNORE_LABEL = 255
MASK_FORMATS = ("binary", "palette", "index")

#: The binary task: class 0 background (black), class 1 the sounding object (white).
BINARY_CLASSES = ["background", "object"]
BINARY_COLORS = [(0, 0, 0), (255, 255, 255)]

#: AVSS classes: 70 categories and background (index 0).
AVSS_NUM_CLASSES = 71

_MAX_LISTED = 5


def voc_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """PASCAL-VOC bit-interleaved colour map: bits (0, 1, 2) of the index go to the most
    significant bit of (R, G, B), the next three bits to the next lower bit, and so on.

    Index 0 is black, 1 is (128, 0, 0), 2 is (0, 128, 0), 8 is (64, 0, 0), 70 is (32, 128, 128).
    """
    colors = []
    for index in range(num_classes):
        rgb = [0, 0, 0]
        code, bit = index, 7
        while code:
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << bit
            code >>= 3
            bit -= 1
        colors.append(tuple(rgb))
    return colors


def avss_palette() -> list[tuple[int, int, int]]:
    """The 71 colours of AVSS ``labels_rgb`` masks, indexed by class (0 = background)."""
    return voc_palette(AVSS_NUM_CLASSES)


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _format_rgb(code: int) -> str:
    return f"({code >> 16}, {(code >> 8) & 255}, {code & 255})"


def _check_format(mask_format: str) -> None:
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")


def mask_pixels(path: str, mask_format: str) -> np.ndarray:
    """The raw pixels of a mask PNG, before any class mapping.

    Returns:
        ``[H, W]``: uint8 grey values (``binary``; mode 1/L/P as stored, colour images via
        luminance), uint8 class indices (``index``, mode L or P), or int32 packed
        ``0xRRGGBB`` colours (``palette``).
    """
    _check_format(mask_format)
    try:
        with Image.open(path) as image:
            image.load()
            if mask_format == "palette":
                return _pack_rgb(np.asarray(image.convert("RGB")))
            if image.mode == "1":
                return np.asarray(image, dtype=np.uint8) * np.uint8(255)
            if image.mode in ("L", "P"):
                # P keeps its indices, like the original MS3 loader's convert('P').
                return np.array(image, dtype=np.uint8)
            if mask_format == "index":
                raise AVSDataError(f"{path}: index masks must be 8-bit L or P, got {image.mode}")
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises these for broken files
        if isinstance(err, AVSDataError):
            raise
        raise AVSDataError(f"{path}: cannot read mask ({err})") from err


def _listed(values: np.ndarray, counts: np.ndarray | None = None, rgb: bool = False) -> str:
    shown = [_format_rgb(int(v)) if rgb else str(int(v)) for v in values[:_MAX_LISTED]]
    if counts is not None:
        shown = [f"{text} x{int(n)}" for text, n in zip(shown, counts[:_MAX_LISTED])]
    more = f" and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def invalid_mask_pixels(
    pixels: np.ndarray,
    mask_format: str,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
) -> str | None:
    """What is wrong with the raw pixels of a mask (:func:`mask_pixels`), or None.

    ``binary``: values other than 0 and 255; ``palette``: colours outside ``palette``;
    ``index``: ids of ``num_classes`` or more other than 255 (ignore).
    """
    _check_format(mask_format)
    if mask_format == "binary":
        bad = (pixels != 0) & (pixels != 255)
        if not bad.any():
            return None
        values = np.unique(pixels[bad])
        return f"{int(bad.sum())} pixels have values outside {{0, 255}}: {_listed(values)}"
    if mask_format == "palette":
        if palette is None:
            raise ValueError("palette masks need a palette")
        codes = _pack_rgb(np.asarray(palette, dtype=np.int32).reshape(-1, 3))
        bad = ~np.isin(pixels, codes)
        if not bad.any():
            return None
        values, counts = np.unique(pixels[bad], return_counts=True)
        return (
            f"{int(bad.sum())} pixels have colours outside the {len(codes)}-colour palette: "
            f"{_listed(values, counts, rgb=True)}"
        )
    limit = 256 if num_classes is None else num_classes
    bad = (pixels >= limit) & (pixels != IGNORE_LABEL)
    if not bad.any():
        return None
    values = np.unique(pixels[bad])
    return (
        f"{int(bad.sum())} pixels have class ids outside 0..{limit - 1} (255 = ignore): "
        f"{_listed(values)}"
    )


def labels_from_mask_pixels(
    pixels: np.ndarray,
    mask_format: str,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
    source: str = "<mask>",
) -> np.ndarray:
    """Class map of a mask given its raw pixels (:func:`mask_pixels`).

    * ``binary``: foreground where the grey value is > 127. AVSBench stores 0/255; other greys
      are counted and logged (the original S4 loader thresholds at 128, its MS3 loader would
      make soft targets, COMBO keeps only 255; > 127 agrees with all three on 0/255 masks).
    * ``palette``: exact RGB match against ``palette`` (AVSS: 71 VOC colours); an unknown
      colour is an error naming the file and the colours (the original maps them silently to
      background).
    * ``index``: the pixel is the class; values >= ``num_classes`` other than 255 (ignore) are
      an error.

    Returns:
        uint8 ``[H, W]`` class ids (binary: 0/1; 255 only for ignored ``index`` pixels).
    """
    problem = invalid_mask_pixels(pixels, mask_format, palette=palette, num_classes=num_classes)
    if mask_format == "binary":
        if problem:
            log_first_n(
                logging.WARNING,
                f"{source}: {problem}; they are binarised at > 127 (check the data with "
                "tools/validate_dataset.py)",
                n=10,
                name=__name__,
            )
        return (pixels > 127).astype(np.uint8)
    if problem:
        raise AVSDataError(f"{source}: {problem}")
    if mask_format == "index":
        return pixels.astype(np.uint8)
    codes = _pack_rgb(np.asarray(palette, dtype=np.int32).reshape(-1, 3))
    order = np.argsort(codes, kind="stable")
    position = np.searchsorted(codes[order], pixels)
    return order[position].astype(np.uint8)


def read_avs_mask(
    path: str,
    mask_format: str = "binary",
    *,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Decode one ground-truth PNG into class ids (uint8 ``[H, W]``, see
    :func:`labels_from_mask_pixels`); every error names ``path``. ``palette`` masks default to
    the AVSS palette."""
    if mask_format == "palette" and palette is None:
        palette = avss_palette()
    return labels_from_mask_pixels(
        mask_pixels(path, mask_format),
        mask_format,
        palette=palette,
        num_classes=num_classes,
        source=path,
    )
