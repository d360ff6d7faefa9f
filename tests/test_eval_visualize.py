"""Prediction pictures: mask PNGs, overlays, the highlighted masks and the labelled grid."""

import numpy as np
import pytest
from PIL import Image

from avsegformer.evaluation.visualize import (
    BAND_COLOR,
    DIM_OUTSIDE,
    binary_mask_image,
    highlight_mask,
    labelled_grid,
    overlay_image,
    upscale_frame,
)

GREY = 100
COLOR = (255, 0, 255)


def grey_frame(side: int = 64) -> np.ndarray:
    return np.full((side, side, 3), GREY, np.uint8)


def square_mask(side: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros((side, side), bool)
    mask[start:stop, start:stop] = True
    return mask


def test_binary_mask_image_is_avsbench_format():
    image = binary_mask_image(square_mask(8, 2, 5))
    assert image.mode == "L"
    assert set(np.unique(np.asarray(image))) == {0, 255}


def test_overlay_tints_only_the_mask():
    frame = Image.fromarray(grey_frame(16))
    overlay = np.asarray(overlay_image(frame, square_mask(16, 4, 12)))
    assert (overlay[0, 0] == GREY).all()
    assert overlay[8, 8, 0] > GREY and overlay[8, 8, 1] < GREY


def test_upscale_frame_gives_a_square_of_the_side():
    frame = np.zeros((64, 48, 3), np.uint8)
    assert upscale_frame(frame, 256).shape == (256, 256, 3)
    with pytest.raises(ValueError, match="RGB frame"):
        upscale_frame(np.zeros((8, 8), np.uint8), 32)


def test_highlight_tints_inside_outlines_the_border_and_dims_outside():
    frame = grey_frame(256)
    # A 16-pixel mask (as the model predicts at low resolution): upscaled with nearest neighbour.
    marked = highlight_mask(frame, square_mask(16, 4, 12), COLOR, alpha=0.5, thickness=3)
    assert marked.shape == (256, 256, 3) and marked.dtype == np.uint8
    # The mask covers [64, 192) at 256 px: its centre is tinted halfway to the colour.
    np.testing.assert_allclose(marked[128, 128], [(GREY + c) / 2 for c in COLOR], atol=1)
    # Its border is drawn in the colour itself.
    assert tuple(marked[64, 128]) == COLOR
    assert tuple(marked[128, 191]) == COLOR
    # Far outside, the frame is dimmed.
    np.testing.assert_allclose(marked[10, 10], [DIM_OUTSIDE * GREY] * 3, atol=1)
    # No outline without a mask.
    empty = highlight_mask(frame, np.zeros((16, 16), bool), COLOR)
    assert not (empty == COLOR).all(axis=-1).any()


def test_labelled_grid_layout_and_text():
    side, header, label, caption = 32, 20, 50, 12
    panels = [[grey_frame(side), highlight_mask(grey_frame(side), square_mask(side, 8, 24), COLOR)]]
    panels.append([grey_frame(side), grey_frame(side)])
    grid = np.asarray(
        labelled_grid(
            panels,
            ["frame", "mask"],
            [["clip a"], ["clip b"]],
            captions=[["", "x"], ["", ""]],
            header_height=header,
            label_width=label,
            caption_height=caption,
        )
    )
    assert grid.shape == (header + 2 * (side + caption), label + 2 * side, 3)
    # Panels sit right of the label band, below the header, with a caption strip under each row.
    np.testing.assert_array_equal(grid[header : header + side, label : label + side], panels[0][0])
    second_row = header + side + caption
    np.testing.assert_array_equal(
        grid[second_row : second_row + side, label + side :], panels[1][1]
    )
    # Titles are drawn: the header band over each column is not plain band colour.
    for column in range(2):
        band = grid[:header, label + column * side : label + (column + 1) * side]
        assert (band != BAND_COLOR).any()
    # An empty caption leaves its strip plain.
    assert (grid[header + side : header + side + caption, label : label + side] == BAND_COLOR).all()


def test_labelled_grid_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 1 panels for 2 columns"):
        labelled_grid([[grey_frame(8)]], ["a", "b"], [["r"]])
    with pytest.raises(ValueError, match="panels must all be"):
        labelled_grid([[grey_frame(8), grey_frame(16)]], ["a", "b"], [["r"]])
