"""Semantic label maps -> per-frame instance targets for mask classification."""

import torch
import torch.nn.functional as F

__all__ = ["semantic_to_mask_targets"]


def semantic_to_mask_targets(
    sem_seg: torch.Tensor,
    ignore_value: int = 255,
    padded_size: tuple[int, int] | None = None,
) -> dict:
    """One target instance per class id present in a label map, background (0) included.

    Classes come in ascending id order; ``ignore_value`` pixels belong to no instance.

    Args:
        sem_seg: ``[H, W]`` integer label map.
        ignore_value: label of pixels without ground truth.
        padded_size: ``(H', W')`` with ``H' >= H``, ``W' >= W``: masks are zero-padded at the
            bottom and right to this size (the padded image size of the batch).

    Returns:
        ``{"labels": [n] int64, "masks": [n, H', W'] bool}``.
    """
    if sem_seg.dim() != 2 or sem_seg.is_floating_point():
        raise ValueError(
            f"semantic_to_mask_targets: expected an integer [H, W] label map, got "
            f"{sem_seg.dtype} {tuple(sem_seg.shape)}"
        )
    classes = torch.unique(sem_seg)
    classes = classes[classes != ignore_value]
    masks = sem_seg[None] == classes[:, None, None]
    if padded_size is not None:
        height, width = sem_seg.shape
        pad_h, pad_w = padded_size[0] - height, padded_size[1] - width
        if pad_h < 0 or pad_w < 0:
            raise ValueError(
                f"semantic_to_mask_targets: padded_size {tuple(padded_size)} is smaller than "
                f"the label map {height}x{width}"
            )
        masks = F.pad(masks, (0, pad_w, 0, pad_h), value=False)
    return {"labels": classes.to(torch.int64), "masks": masks}
