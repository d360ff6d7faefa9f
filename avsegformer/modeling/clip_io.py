"""The clip contract between the data mapper and every audio-visual meta-architecture.

A batch is a list of clip dicts:

* ``"frames"``: uint8 ``[T, 3, H, W]``;
* ``"log_mel"``: float32 ``[T, 96, 64]``, one log-mel example per frame;
* optional ``"frame_valid"``: bool ``[T]``, False for padding frames (AVSS v1 clips);
* optional ``"height"``, ``"width"``: the output size (default: the frame size);
* in training, ``"sem_seg"``: int64 ``[T, H, W]``, the ignore label where not annotated;
* optional ``"video_id"``, used in error messages;
* for models with a second image input (COMBO's Siam-Encoder), ``"maskiges"``: uint8
  ``[T, 3, H, W]`` aligned with ``"frames"`` (see :func:`check_aligned_images`).

B clips run as B*T independent frames. The functions here turn a batch into the model's
tensors and per-frame outputs back into one result per clip. :func:`supervised_frames` is the
one place that decides which frames a training loss sees.
"""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

__all__ = [
    "LOG_MEL_SHAPE",
    "check_aligned_images",
    "check_clip",
    "frame_probabilities_per_clip",
    "normalize_and_pad_frames",
    "register_pixel_normalization",
    "stack_frame_valid",
    "stack_log_mel",
    "stack_targets",
    "supervised_frames",
]

#: One VGGish log-mel example per frame: 96 frames of 10 ms x 64 mel bands.
LOG_MEL_SHAPE = (96, 64)


def check_clip(clip: Dict) -> int:
    """Check the shapes of ``clip["frames"]`` and ``clip["log_mel"]``; return T.

    Raises:
        ValueError: naming the clip and what is wrong.
    """
    frames, log_mel = clip.get("frames"), clip.get("log_mel")
    name = clip.get("video_id", "<clip without video_id>")
    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
        raise ValueError(f"clip {name}: 'frames' must be a [T, 3, H, W] tensor, got {shape}")
    num_frames = frames.shape[0]
    if not torch.is_tensor(log_mel) or tuple(log_mel.shape) != (num_frames, *LOG_MEL_SHAPE):
        shape = tuple(log_mel.shape) if torch.is_tensor(log_mel) else type(log_mel).__name__
        raise ValueError(
            f"clip {name}: 'log_mel' must be [{num_frames}, 96, 64] (one example per frame), "
            f"got {shape}"
        )
    return num_frames


def check_aligned_images(clip: Dict, key: str, why: str = "") -> None:
    """Check that ``clip[key]`` is a ``[T, 3, H, W]`` (0-255) tensor of the shape of
    ``clip["frames"]`` (one image per frame, aligned with it).

    Args:
        clip: a clip dict that passed :func:`check_clip`.
        key: the entry, e.g. ``"maskiges"``.
        why: what needs it, appended to the error (e.g. the config key that asks for it).

    Raises:
        ValueError: naming the clip, the entry and what is wrong.
    """
    name = clip.get("video_id", "<clip without video_id>")
    images, expected = clip.get(key), tuple(clip["frames"].shape)
    reason = f" ({why})" if why else ""
    if images is None:
        raise ValueError(f"clip {name}: no {key!r} [T, 3, H, W] in the input{reason}")
    if not torch.is_tensor(images) or tuple(images.shape) != expected:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(
            f"clip {name}: {key!r} must be aligned with 'frames' {expected}, got {shape}{reason}"
        )


def register_pixel_normalization(
    model: torch.nn.Module, pixel_mean: List[float], pixel_std: List[float]
) -> None:
    """Give ``model`` the non-persistent buffers ``pixel_mean`` and ``pixel_std``, ``[C, 1, 1]``
    on the 0-255 scale, that :func:`normalize_and_pad_frames` takes (and that place the inputs
    on the model's device).

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(pixel_mean) != len(pixel_std):
        raise ValueError(
            f"MODEL.PIXEL_MEAN {list(pixel_mean)} and MODEL.PIXEL_STD {list(pixel_std)} have "
            "different lengths"
        )
    model.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)


def normalize_and_pad_frames(
    batched_inputs: List[Dict],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
    *,
    key: str = "frames",
    raw_pad_value: float | None = None,
) -> ImageList:
    """Every frame of the batch, normalised (``(x - mean) / std``) on ``pixel_mean``'s device and
    padded at the bottom and right to a multiple of ``size_divisibility``.

    Args:
        batched_inputs: the clips.
        pixel_mean, pixel_std: ``[3, 1, 1]`` on the 0-255 scale.
        size_divisibility: pad height and width to a multiple of this (<= 1: no padding).
        key: the clip entry holding uint8 ``[T, 3, H, W]`` images (``"frames"``, or COMBO's
            ``"maskiges"``, which are padded and normalised exactly like the frames).
        raw_pad_value: None = zero padding after normalisation (AVSegFormer); a value = padding
            with that raw 0-255 value before normalisation (Mask2Former-style mappers, COMBO's
            128), so the padding is normalised like the image.

    Returns:
        ``ImageList`` of ``[B*T, 3, H', W']`` with each frame's own (unpadded) size.
    """
    device = pixel_mean.device
    sizes = {tuple(clip[key].shape[-2:]) for clip in batched_inputs}
    if raw_pad_value is not None:
        return _raw_pad_then_normalize(
            batched_inputs, key, pixel_mean, pixel_std, size_divisibility, raw_pad_value
        )
    if len(sizes) == 1:
        frames = torch.cat([clip[key] for clip in batched_inputs])
        frames = frames.to(device, non_blocking=True).float()
        frames = frames.sub_(pixel_mean).div_(pixel_std)
        height, width = sizes.pop()
        stride = size_divisibility
        if stride <= 1 or (height % stride == 0 and width % stride == 0):
            return ImageList(frames, [(height, width)] * frames.shape[0])
        frames = list(frames.unbind(0))
    else:
        frames = [
            (frame.to(device).float() - pixel_mean) / pixel_std
            for clip in batched_inputs
            for frame in clip[key]
        ]
    return ImageList.from_tensors(frames, size_divisibility)


def _raw_pad_then_normalize(batched_inputs, key, pixel_mean, pixel_std, stride, pad_value):
    images = [clip[key] for clip in batched_inputs]
    image_sizes = [tuple(image.shape[-2:]) for image in images for _ in range(image.shape[0])]
    height = max(size[0] for size in image_sizes)
    width = max(size[1] for size in image_sizes)
    if stride > 1:
        height, width = -(-height // stride) * stride, -(-width // stride) * stride
    padded = [
        F.pad(
            image.to(pixel_mean.device, non_blocking=True).float(),
            (0, width - image.shape[-1], 0, height - image.shape[-2]),
            value=float(pad_value),
        )
        for image in images
    ]
    frames = torch.cat(padded).sub_(pixel_mean).div_(pixel_std)
    return ImageList(frames, image_sizes)


def stack_log_mel(batched_inputs: List[Dict], device) -> torch.Tensor:
    """``[B*T, 1, 96, 64]`` float32 log-mel examples on ``device``."""
    log_mel = torch.cat([clip["log_mel"] for clip in batched_inputs])
    return log_mel.to(device, torch.float32, non_blocking=True).unsqueeze(1)


def stack_frame_valid(
    batched_inputs: List[Dict], lengths: List[int], device
) -> torch.Tensor | None:
    """``[B*T]`` bool, False at padding frames; None when no clip has ``"frame_valid"``."""
    if all("frame_valid" not in clip for clip in batched_inputs):
        return None
    flags = [
        torch.as_tensor(clip["frame_valid"], dtype=torch.bool)
        if "frame_valid" in clip
        else torch.ones(length, dtype=torch.bool)
        for clip, length in zip(batched_inputs, lengths)
    ]
    return torch.cat(flags).to(device)


def stack_targets(
    batched_inputs: List[Dict], padded_size, size_divisibility: int, ignore_label: int, device
) -> torch.Tensor:
    """``[B*T, H', W']`` int64 training targets, padded like the frames with ``ignore_label``
    (padding is never scored as background).

    Raises:
        ValueError: a clip has no ``"sem_seg"`` matching its frames.
    """
    targets = []
    for clip in batched_inputs:
        sem_seg = clip.get("sem_seg")
        expected = (clip["frames"].shape[0], *clip["frames"].shape[-2:])
        if sem_seg is None or tuple(sem_seg.shape) != expected:
            raise ValueError(
                f"clip {clip.get('video_id', '?')}: training needs 'sem_seg' [T, H, W] matching "
                f"'frames' {tuple(clip['frames'].shape)}, got "
                f"{None if sem_seg is None else tuple(sem_seg.shape)}"
            )
        targets.extend(sem_seg.to(device, torch.long).unbind(0))
    if all(tuple(t.shape) == tuple(padded_size) for t in targets):
        return torch.stack(targets)
    padded = ImageList.from_tensors(targets, size_divisibility, ignore_label).tensor
    return padded[..., : padded_size[0], : padded_size[1]]


def supervised_frames(targets: torch.Tensor, ignore_label: int) -> torch.Tensor:
    """The frames a training loss sees: those with at least one annotated pixel.

    This reproduces the original's "first frame only" on S4 training clips and its ground-truth
    flag on AVSS without hard-coding clip lengths: an unannotated frame is all ``ignore_label``.

    Args:
        targets: ``[N, H, W]`` labels.

    Returns:
        ``[n]`` int64 frame indices, ascending.
    """
    return (targets != ignore_label).flatten(1).any(1).nonzero().squeeze(1)


def frame_probabilities_per_clip(
    probs: torch.Tensor, batched_inputs: List[Dict], lengths: List[int], image_sizes
) -> List[Dict[str, torch.Tensor]]:
    """Split per-frame outputs into clips, crop the padding and resize to each clip's output size.

    Args:
        probs: ``[B*T, K, H', W']`` per-frame probabilities on padded frames.
        batched_inputs: the clips (their ``"height"``/``"width"``, if given, set the output size).
        lengths: T of each clip.
        image_sizes: each frame's size before padding.

    Returns:
        ``[{"sem_seg": [T, K, height, width]}]``, one per clip (bilinear resize).
    """
    results = []
    start = 0
    for clip, length in zip(batched_inputs, lengths):
        image_size = image_sizes[start]
        clip_probs = probs[start : start + length, :, : image_size[0], : image_size[1]]
        start += length
        height = int(clip.get("height", image_size[0]))
        width = int(clip.get("width", image_size[1]))
        if (height, width) != tuple(image_size):
            clip_probs = F.interpolate(
                clip_probs, size=(height, width), mode="bilinear", align_corners=False
            )
        results.append({"sem_seg": clip_probs})
    return results
