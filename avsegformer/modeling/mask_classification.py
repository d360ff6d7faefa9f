"""Mask classification (Q masks, each with class scores) -> per-pixel class scores and probabilities.

This is Mask2Former's semantic inference: a pixel's score for class k is the sum over queries of
``p(k | query) * sigmoid(mask logit)``, with the "no object" class dropped and no renormalisation.
The probabilities the project's evaluator reads are the softmax of those scores over classes.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess

__all__ = [
    "class_probabilities",
    "foreground_probability",
    "semantic_inference",
    "semantic_segmentation",
]


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores of a mask classification.

    Args:
        pred_logits: ``[N, Q, K + 1]`` class logits, the last class being "no object".
        pred_masks: ``[N, Q, H, W]`` mask logits.

    Returns:
        ``[N, K, H, W]``: ``sum_q softmax(pred_logits)[q, k] * sigmoid(pred_masks)[q]``.
    """
    if pred_logits.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(
            "pred_logits [N, Q, K + 1] and pred_masks [N, Q, H, W] disagree on N or Q: "
            f"{tuple(pred_logits.shape)} vs {tuple(pred_masks.shape)}"
        )
    class_scores = F.softmax(pred_logits, dim=-1)[..., :-1]
    return torch.einsum("nqc,nqhw->nchw", class_scores, pred_masks.sigmoid())


def semantic_segmentation(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    *,
    padded_size: tuple[int, int],
    image_sizes: Sequence[tuple[int, int]],
    output_sizes: Sequence[tuple[int, int]],
    frame_flags: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Mask classification of every frame -> class scores at each frame's output size.

    The mask logits are upsampled bilinearly to the padded input size, turned into class scores
    (:func:`semantic_inference`), optionally multiplied by a per-frame flag (COMBO's AVSS path
    multiplies by the frame's "real frame" flag, 1 for every frame it decodes), then cropped to
    the unpadded image and resized to the output size (Detectron2's ``sem_seg_postprocess``).

    Args:
        pred_logits: ``[N, Q, K + 1]``.
        pred_masks: ``[N, Q, h, w]``.
        padded_size: ``(H_pad, W_pad)`` of the batched input images.
        image_sizes: per frame ``(height, width)`` of the image inside the padding.
        output_sizes: per frame ``(height, width)`` to resize the scores to.
        frame_flags: optional ``[N]`` factors applied to each frame's scores.

    Returns:
        ``N`` tensors ``[K, height_i, width_i]``.
    """
    num_frames = pred_logits.shape[0]
    if len(image_sizes) != num_frames or len(output_sizes) != num_frames:
        raise ValueError(
            f"{num_frames} frames but {len(image_sizes)} image sizes and "
            f"{len(output_sizes)} output sizes"
        )
    upsampled = F.interpolate(
        pred_masks, size=tuple(padded_size), mode="bilinear", align_corners=False
    )
    scores = semantic_inference(pred_logits, upsampled)
    if frame_flags is not None:
        if frame_flags.shape != (num_frames,):
            raise ValueError(
                f"frame_flags must be [N] = [{num_frames}], got {tuple(frame_flags.shape)}"
            )
        scores = scores * frame_flags.to(scores.dtype)[:, None, None, None]
    return [
        sem_seg_postprocess(frame_scores, tuple(image_size), *output_size)
        for frame_scores, image_size, output_size in zip(scores, image_sizes, output_sizes)
    ]


def class_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """``[T, K, H, W]`` class scores -> ``[T, K, H, W]`` probabilities (softmax over K), the
    multi-class output the evaluator takes (its prediction is the argmax, first index on ties)."""
    return F.softmax(scores, dim=1)


def foreground_probability(scores: torch.Tensor) -> torch.Tensor:
    """``[T, 2, H, W]`` background/object scores -> ``[T, 1, H, W]`` object probability
    ``softmax(scores)[:, 1] = sigmoid(S_1 - S_0)``, the binary output the evaluator thresholds."""
    if scores.shape[1] != 2:
        raise ValueError(
            f"foreground probability needs [T, 2, H, W] background/object scores, "
            f"got {tuple(scores.shape)}"
        )
    return F.softmax(scores, dim=1)[:, 1:2]
