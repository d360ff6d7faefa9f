"""Segment the sounding objects of a user's own clip, like Detectron2's ``DefaultPredictor``.

A clip is cut as AVSBench cuts its clips: the audio into 0.96 s windows (one VGGish log-mel
example each) and one frame taken at the middle of each window. :func:`read_clip` does that for
a video (its own audio track or a separate audio file) or for a folder of frames plus an audio
file (every image is one step; the audio is fitted to them), and :class:`ClipPredictor` runs the
model of a config over the result::

    frames, log_mel = read_clip(video="clip.mp4")
    predictor = ClipPredictor(setup_cfg("configs/s4/avsegformer_R50.yaml", opts))
    probs = predictor(frames, log_mel)                     # [T, K, H, W] at the frames' size
    write_predictions("out/", frames, predictor.labels(probs), predictor.palette(probs.shape[1]))

A model with a Siam-Encoder (COMBO, ``uses_maskiges`` True) also reads one maskige per frame:
:func:`read_clip_maskiges` finds ``<frame>_mask_color.png`` for each frame
(:mod:`avsegformer.data.maskiges` paints them from any segmenter's masks)::

    maskiges = read_clip_maskiges("maskiges/", len(frames), frames="frames/")
    probs = predictor(frames, log_mel, maskiges)
"""

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

from .checkpoint import load_model_weights
from .data.audio import EXAMPLE_FRAMES, HOP_SAMPLES, SAMPLE_RATE, fit_examples, waveform_to_examples
from .data.dataset_mapper import frames_to_tensor, resize_frame
from .data.datasets.layout import MASKIGE_SUFFIX
from .data.maskiges import read_maskige
from .data.masks import AVSS_NUM_CLASSES, avss_palette, voc_palette
from .data.media import (
    MediaError,
    check_video,
    image_folder_names,
    read_audio_file,
    read_audio_track,
    read_image_folder,
    read_video_frames,
    write_video,
)
from .evaluation.visualize import binary_mask_image, overlay_image, palette_mask_image, save_image
from .modeling.precision import apply_inference_precision

__all__ = [
    "STEP_SECONDS",
    "ClipPredictor",
    "audio_examples",
    "read_clip",
    "read_clip_maskiges",
    "step_names",
    "write_predictions",
]

logger = logging.getLogger(__name__)

#: Seconds of audio per frame step: one VGGish example (96 hops of 10 ms).
STEP_SECONDS = EXAMPLE_FRAMES * HOP_SAMPLES / SAMPLE_RATE


def audio_examples(samples: np.ndarray, rate: int, source: str) -> torch.Tensor:
    """VGGish log-mel examples ``[N, 96, 64]``, N >= 1, of mono ``samples`` at ``rate`` Hz;
    ``source`` names the file in the error raised for audio shorter than one example."""
    examples = waveform_to_examples(samples, rate)
    if examples.shape[0] == 0:
        raise MediaError(
            f"{source}: the audio is too short ({len(samples) / rate:.2f} s); at least "
            f"{STEP_SECONDS + 0.015:.3f} s are needed"
        )
    return examples


def read_clip(
    *, video: str | None = None, frames: str | None = None, audio: str | None = None
) -> tuple[list[Image.Image], torch.Tensor]:
    """The frames (RGB PIL, own size) and log-mel examples ``[T, 96, 64]`` of one clip, aligned
    one to one.

    Args:
        video: a video file; one frame at the middle of each 0.96 s audio step, as many steps as
            both the audio and the video cover.
        frames: a folder of images instead (name order, one step each); needs ``audio``, whose
            examples are cut or repeated (the last one) to the number of images.
        audio: an audio file (any rate or format soundfile or librosa reads); for a video
            without it, the video's own audio track.
    """
    if (video is None) == (frames is None):
        raise ValueError("read_clip needs exactly one of video= and frames=")
    if frames is not None:
        if audio is None:
            raise MediaError(f"{frames}: a folder of images has no sound; an audio file is needed")
        images = read_image_folder(frames)
        log_mel = audio_examples(*read_audio_file(audio), source=audio)
        return images, fit_examples(log_mel, len(images), "repeat", source=audio)
    check_video(video)  # a bad video is reported before its audio
    samples, rate = read_audio_file(audio) if audio else read_audio_track(video)
    log_mel = audio_examples(samples, rate, source=audio or video)
    times = [(step + 0.5) * STEP_SECONDS for step in range(log_mel.shape[0])]
    images = read_video_frames(video, times)
    return images, log_mel[: len(images)]


def step_names(count: int) -> list[str]:
    """The names of a video's frame steps: ``0000``, ``0001``, ... (as in the written masks)."""
    return [f"{index:04d}" for index in range(count)]


def read_clip_maskiges(folder: str, count: int, *, frames: str | None = None) -> list[Image.Image]:
    """The maskiges of a clip's ``count`` frames, RGB PIL images: for a frame named ``X.png`` (or
    any image extension), ``<folder>/X_mask_color.png``, AVSBench's naming.

    Args:
        folder: where the maskiges are.
        count: the number of frames (:func:`read_clip`).
        frames: the folder of frames the clip was read from; None for a video, whose frame steps
            are named :func:`step_names` (``0000_mask_color.png``, ...).

    Raises:
        AVSDataError: the folder or a frame's maskige is missing or unreadable (named).
    """
    if not os.path.isdir(folder):
        raise MediaError(f"{folder}: no such maskige folder")
    names = image_folder_names(frames)[:count] if frames is not None else step_names(count)
    return [
        read_maskige(os.path.join(folder, os.path.splitext(name)[0] + MASKIGE_SUFFIX))
        for name in names
    ]


class ClipPredictor:
    """The model of a config, in eval mode with ``MODEL.WEIGHTS`` loaded and converted to
    ``TEST.PRECISION``, applied to one clip.

    Frames of any size go through the data mapper's resize to ``INPUT.FRAME_SIZE`` and channel
    order (``INPUT.FORMAT``); the model returns each frame's probabilities at its own size. Up to
    ``chunk`` frames of equal size go through one forward pass (memory vs. speed). A model
    whose ``uses_maskiges`` is True (COMBO with the Siam-Encoder) needs one maskige per frame;
    they go through the frames' resize. A model that takes clips of a fixed length (its
    ``num_frames``, CATR's T) gets clips of exactly that length instead of ``chunk`` frames, the
    last one completed by repeating its last frame (those frames' outputs are dropped).
    """

    def __init__(self, cfg, *, chunk: int = 5):
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.cfg = cfg.clone()
        self.chunk = chunk
        self.model = build_model(self.cfg)
        self.model.eval()
        if not self.cfg.MODEL.WEIGHTS:
            logger.warning(
                "MODEL.WEIGHTS is empty: the masks come from a randomly initialised model"
            )
        load_model_weights(self.cfg, self.model)
        apply_inference_precision(self.model, self.cfg.TEST.PRECISION)
        self.frame_size = tuple(self.cfg.INPUT.FRAME_SIZE)
        self.image_format = self.cfg.INPUT.FORMAT

    @property
    def uses_maskiges(self) -> bool:
        """Whether the model reads a maskige per frame (its ``uses_maskiges``: COMBO with the
        Siam-Encoder)."""
        return bool(getattr(self.model, "uses_maskiges", False))

    def _check_maskiges(self, maskiges, count: int) -> bool:
        """Whether to feed ``maskiges``; errors for missing ones the model needs."""
        model = type(self.model).__name__
        if not self.uses_maskiges:
            if maskiges is not None:
                logger.warning("the %s model reads no maskiges: the given ones are ignored", model)
            return False
        if maskiges is None:
            raise MediaError(
                f"the {model} model of this config reads a maskige per frame (its "
                "Siam-Encoder), but no maskiges were given; pass a folder of "
                f"<frame>{MASKIGE_SUFFIX} images (tools/demo.py --maskiges DIR)"
            )
        if len(maskiges) != count:
            raise MediaError(f"{count} frames but {len(maskiges)} maskiges")
        return True

    @torch.no_grad()
    def __call__(
        self,
        frames: Sequence[Image.Image],
        log_mel: torch.Tensor,
        maskiges: Sequence[Image.Image] | None = None,
    ) -> torch.Tensor:
        """Per-frame probabilities: float32 ``[T, K, H, W]`` at the frames' own size.

        Args:
            frames: T RGB PIL images of one size ``(W, H)``.
            log_mel: float ``[T, 96, 64]``, example ``t`` heard while frame ``t`` is shown.
            maskiges: T RGB PIL maskiges, one per frame; needed by (and only given to) a
                model that reads them (:attr:`uses_maskiges`).
        """
        if len(frames) != log_mel.shape[0] or not frames:
            raise ValueError(f"{len(frames)} frames but {log_mel.shape[0]} log-mel examples")
        feed_maskiges = self._check_maskiges(maskiges, len(frames))
        sizes = {frame.size for frame in frames}
        if len(sizes) > 1:
            raise ValueError(f"the frames of a clip must share one size, got {sorted(sizes)}")
        width, height = frames[0].size
        clip_length = getattr(self.model, "num_frames", None)
        chunk = clip_length or self.chunk
        outputs = []
        for start in range(0, len(frames), chunk):
            part = list(frames[start : start + chunk])
            mel = log_mel[start : start + len(part)]
            real = len(part)
            missing = (clip_length or real) - real
            part += part[-1:] * missing
            mel = torch.cat([mel, mel[-1:].expand(missing, -1, -1)])
            clip = {
                "frames": frames_to_tensor(
                    [resize_frame(f, self.frame_size) for f in part], self.image_format
                ),
                "log_mel": mel,
                "frame_valid": torch.arange(len(part)) < real,
                "height": height,
                "width": width,
            }
            if feed_maskiges:
                images = list(maskiges[start : start + real])
                images += images[-1:] * missing
                clip["maskiges"] = frames_to_tensor(
                    [resize_frame(m, self.frame_size) for m in images], self.image_format
                )
            outputs.append(self.model([clip])[0]["sem_seg"][:real].float().cpu())
        return torch.cat(outputs)

    @staticmethod
    def labels(probs: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
        """int64 ``[T, H, W]`` label maps: ``probs > threshold`` for one class (binary
        sounding-object maps), else the most probable class."""
        if probs.shape[1] == 1:
            return (probs[:, 0] > threshold).numpy().astype(np.int64)
        return probs.argmax(1).numpy()

    def palette(self, num_classes: int) -> list[tuple[int, int, int]] | None:
        """Colours of the classes: None for a binary map, else the ``stuff_colors`` of the
        config's first test dataset that has enough of them, else the AVSS palette (extended
        the same way beyond its 71 classes)."""
        if num_classes == 1:
            return None
        for name in self.cfg.DATASETS.TEST:
            if name in MetadataCatalog.list():
                colors = MetadataCatalog.get(name).get("stuff_colors")
                if colors and len(colors) >= num_classes:
                    return [tuple(c) for c in colors]
        if num_classes <= AVSS_NUM_CLASSES:
            return avss_palette()
        return voc_palette(num_classes)


def write_predictions(
    output_dir: str,
    frames: Sequence[Image.Image],
    labels: np.ndarray,
    palette: Sequence[Sequence[int]] | None,
) -> str | None:
    """Write ``masks/<i>.png`` (0/255, or ``labels`` in ``palette``), ``overlays/<i>.jpg`` and
    ``overlay.mp4`` (one frame per step) under ``output_dir``.

    Returns:
        The overlay video's path, or None where OpenCV cannot encode mp4.
    """
    overlays = []
    for index, (frame, label) in enumerate(zip(frames, labels)):
        mask = binary_mask_image(label) if palette is None else palette_mask_image(label, palette)
        save_image(mask, os.path.join(output_dir, "masks", f"{index:04d}.png"))
        overlay = overlay_image(frame, label, palette)
        save_image(overlay, os.path.join(output_dir, "overlays", f"{index:04d}.jpg"))
        overlays.append(np.asarray(overlay))
    path = os.path.join(output_dir, "overlay.mp4")
    return path if write_video(overlays, path, fps=1.0 / STEP_SECONDS) else None
