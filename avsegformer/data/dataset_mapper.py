"""Turn one clip record into the model's input dict (frames, log-mel, masks, validity)."""

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from .audio import fit_examples, load_log_mel
from .augmentations import IMAGE_PAD_VALUE, build_train_augmentations, pad_to_square
from .errors import AVSDataError
from .maskiges import clip_maskige_files, read_maskige
from .masks import IGNORE_LABEL, avss_palette, read_avs_mask
from .negative_audio import (
    SYNTHESIZED_CONDITIONS,
    NegativeAudioSampler,
    empty_labels,
    is_negative,
    negative_log_mel,
)

__all__ = ["AVSDatasetMapper", "frames_to_tensor", "resize_frame", "resize_geometry"]

logger = logging.getLogger(__name__)

_RESIZE_MODES = ("resize", "crop")
_AUDIO_SOURCES = ("log_mel", "wav")
_PRECOMPUTED_EXTENSIONS = (".pkl", ".pt", ".pth", ".npy")


def resize_geometry(
    size: tuple[int, int], target: tuple[int, int], mode: str
) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """Where a ``(height, width)`` image goes for a ``target`` ``(height, width)``.

    ``resize`` squashes to the target. ``crop`` reproduces AVSegFormer's AVSS training
    transform: resize the short side to the target (the other side truncated with ``int``),
    then a centre crop at ``round((w - out_w) / 2)``, ``round((h - out_h) / 2)``.

    Returns:
        (PIL resize size ``(width, height)``, PIL crop box ``(left, top, right, bottom)`` or
        None).
    """
    height, width = size
    out_h, out_w = target
    if mode == "resize":
        return (out_w, out_h), None
    if mode != "crop":
        raise ValueError(f"resize mode must be one of {_RESIZE_MODES}, got {mode!r}")
    if width * out_h > height * out_w:  # wider than the target: the height is the short side
        new_h = out_h
        new_w = int(1.0 * width * new_h / height)
    else:
        new_w = out_w
        new_h = int(1.0 * height * new_w / width)
    left = int(round((new_w - out_w) / 2.0))
    top = int(round((new_h - out_h) / 2.0))
    return (new_w, new_h), (left, top, left + out_w, top + out_h)


def _apply_geometry(image: Image.Image, geometry, resample: int) -> Image.Image:
    resize_to, crop_box = geometry
    image = image.resize(resize_to, resample)
    return image.crop(crop_box) if crop_box is not None else image


def resize_frame(
    image: Image.Image, frame_size: tuple[int, int], mode: str = "resize"
) -> np.ndarray:
    """An RGB PIL image brought to ``frame_size`` ``(H, W)`` as the mapper brings every frame
    (PIL bilinear; ``mode`` as in :func:`resize_geometry`), as uint8 ``[H, W, 3]``."""
    geometry = resize_geometry((image.height, image.width), frame_size, mode)
    return np.asarray(_apply_geometry(image, geometry, Image.BILINEAR))


def frames_to_tensor(frames: Sequence[np.ndarray], image_format: str = "RGB") -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` frames -> the model's uint8 ``[T, 3, H, W]`` in ``image_format``
    (``"RGB"`` or ``"BGR"``) channel order."""
    stacked = np.stack(frames)
    if image_format == "BGR":
        stacked = stacked[..., ::-1]
    # Tensors share memory across dataloader workers more cheaply than numpy arrays.
    return torch.as_tensor(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))


def _read_frame(path: str) -> Image.Image:
    # PIL directly, without EXIF transposition: what the original loaders do.
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise AVSDataError(f"{path}: cannot read frame ({err})") from err


class AVSDatasetMapper:
    """Map a clip record (see :mod:`avsegformer.data.datasets.avsbench`) to a model input.

    Every frame of a clip goes through the same geometry: a direct resize to ``frame_size``
    (PIL bilinear for frames, nearest for masks; S4/MS3 up-sample 224 -> 512 like
    AVSegFormer), or in training with ``resize_mode="crop"`` AVSegFormer's AVSS short-side
    resize + centre crop. Optional Detectron2 augmentations (the config's:
    :func:`~avsegformer.data.augmentations.build_train_augmentations`) are drawn once per clip
    (on its first real frame) and applied to every real frame and mask; then, with a
    ``pad_size``, frames, masks and maskiges are padded (or cut) at the bottom and right to
    that square. Frames stay uint8; the model normalises.

    Output dict (the record's keys are passed through, ``height``/``width`` replaced):

    * ``frames``: uint8 ``[T, 3, H, W]`` in ``image_format`` order; padded frames are zeros.
    * ``log_mel``: float32 ``[T, 96, 64]``, padded/truncated to T per ``audio_pad``.
    * ``frame_valid``: bool ``[T]``.
    * ``maskiges`` (only with a ``maskige_folder``): uint8 ``[T, 3, H, W]`` in the channel
      order of ``frames`` (RGB in COMBO), zeros for padded frames; ``maskige_file_names`` lists
      the files read. A maskige goes through its frame's geometry: the resize (bilinear, as
      frames), then the clip's augmentations applied as to a frame (``apply_image``), so flips
      and crops move frame and maskige identically, while a transform that draws its values
      on every call (``ColorAugSSDTransform``) jitters each frame and maskige on its own, as
      COMBO trains.
    * ``height``, ``width``: the evaluation size (``eval_size``, or the stored frame size
      when it is (0, 0)).
    * ``sem_seg`` (training only): int64 ``[T, H, W]`` class ids aligned with ``frames``, 255
      where a frame is unannotated or padded; all 0 but the 255s for a negative clip.
      Evaluation reads no mask: the model ignores ground truth there, and the evaluator reads
      it from ``sem_seg_file_names``.

    Negative audio (:mod:`avsegformer.data.negative_audio`): a record whose
    ``negative_audio`` condition is ``silence`` or ``noise`` gets that sound's log-mel instead of
    its file's; in training, ``negative_audio`` (a sampler) makes a share of the clips negative.

    Mask decoding follows the record's ``mask_format`` (``binary``: > 127 is foreground;
    ``palette``: exact colour match, unknown colour is an error; ``index``), see
    :mod:`avsegformer.data.masks`. Every file error names the file.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        frame_size: tuple[int, int],
        resize_mode: str = "resize",
        image_format: str = "RGB",
        audio_source: str = "log_mel",
        audio_pad: str = "repeat",
        eval_size: tuple[int, int] = (0, 0),
        augmentations: Sequence[T.Augmentation | T.Transform] = (),
        pad_size: int = -1,
        maskige_folder: str = "",
        negative_audio: NegativeAudioSampler | None = None,
    ):
        """
        Args:
            is_train: training (masks at frame size, augmentations) or evaluation (frames,
                audio and the evaluation size only).
            frame_size: ``(H, W)`` every frame is brought to.
            resize_mode: ``"resize"`` or ``"crop"`` (short-side resize + centre crop).
            image_format: ``"RGB"`` or ``"BGR"`` channel order of ``frames``.
            audio_source: ``"log_mel"`` reads the record's ``audio_file_name`` (S4/MS3: the
                precomputed ``.pkl``; AVSS: ``audio.wav`` through the front end); ``"wav"``
                always runs the front end on ``audio_wav_file_name``.
            audio_pad: ``"repeat"`` the last log-mel example or ``"zero"`` when the audio
                gives fewer examples than frames.
            eval_size: ``(height, width)`` reported for evaluation; (0, 0) = stored size.
            augmentations: Detectron2 augmentations applied identically to a clip's frames
                (training only).
            pad_size: in training, after the augmentations, pad frames and maskiges with
                128 and masks with the ignore label to ``pad_size`` x ``pad_size`` (cut what
                lies beyond), as Mask2Former's semantic mapper; <= 0 = no padding.
            maskige_folder: read the clip's maskiges from this folder of the AVSBench layout
                (see :func:`avsegformer.data.maskiges.clip_maskige_files`); "" = none.
            negative_audio: training only: turns a share of the clips into negatives (their
                audio replaced, their masks emptied); None = off.
        """
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        if audio_source not in _AUDIO_SOURCES:
            raise ValueError(f"audio_source must be one of {_AUDIO_SOURCES}, got {audio_source!r}")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if len(frame_size) != 2 or min(frame_size) <= 0:
            raise ValueError(f"frame_size must be a positive (H, W), got {frame_size}")
        self.is_train = is_train
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.resize_mode = resize_mode
        self.image_format = image_format
        self.audio_source = audio_source
        self.audio_pad = audio_pad
        self.eval_size = (int(eval_size[0]), int(eval_size[1]))
        self.augmentations = T.AugmentationList(list(augmentations)) if augmentations else None
        self.pad_size = int(pad_size)
        self.maskige_folder = maskige_folder
        self.negative_audio = negative_audio if is_train else None
        self._palettes = {}
        mode = "train" if is_train else "eval"
        logger.info(
            "AVSDatasetMapper (%s): frames -> %s by %s, audio %s (pad %s), augmentations %s, "
            "padded to %s, maskiges %s",
            mode,
            self.frame_size,
            resize_mode,
            audio_source,
            audio_pad,
            list(augmentations),
            self.pad_size if self.pad_size > 0 and is_train else "-",
            maskige_folder or "off",
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "frame_size": tuple(cfg.INPUT.FRAME_SIZE),
            # Evaluation always squashes (AVSS val/test in the original).
            "resize_mode": cfg.INPUT.TRAIN_RESIZE_MODE if is_train else "resize",
            "image_format": cfg.INPUT.FORMAT,
            "audio_source": cfg.INPUT.AUDIO_SOURCE,
            "audio_pad": cfg.INPUT.AUDIO_PAD,
            "eval_size": tuple(cfg.TEST.AVS.EVAL_SIZE),
            "augmentations": build_train_augmentations(cfg) if is_train else [],
            "pad_size": cfg.INPUT.SIZE_DIVISIBILITY,
            "maskige_folder": cfg.INPUT.MASKIGE_FOLDER,
            "negative_audio": NegativeAudioSampler.from_config(cfg) if is_train else None,
        }

    # -----------------------------------------------------------------------------------------
    def _palette(self, record: dict):
        name = record.get("dataset_name")
        if name not in self._palettes:
            colors = None
            if name and name in MetadataCatalog.list():
                colors = MetadataCatalog.get(name).get("stuff_colors")
            self._palettes[name] = colors or avss_palette()
        return self._palettes[name]

    def _read_labels(self, path: str, record: dict) -> Image.Image:
        mask_format = record.get("mask_format", "binary")
        palette = self._palette(record) if mask_format != "binary" else None
        num_classes = len(palette) if palette is not None else None
        labels = read_avs_mask(path, mask_format, palette=palette, num_classes=num_classes)
        return Image.fromarray(labels)

    def _audio_path(self, record: dict) -> str:
        if self.audio_source == "log_mel":
            return record["audio_file_name"]
        path = record.get("audio_wav_file_name") or record["audio_file_name"]
        if path.lower().endswith(_PRECOMPUTED_EXTENSIONS):
            raise AVSDataError(
                f"clip {record.get('video_id')}: INPUT.AUDIO_SOURCE is 'wav' but the record "
                f"only has the precomputed log-mel {path}"
            )
        return path

    def _log_mel(self, record: dict, num_frames: int) -> torch.Tensor:
        """float32 ``[T, 96, 64]``: the made sound of a silence/noise record, else the file's."""
        negative = record.get("negative_audio") or {}
        if negative.get("condition") in SYNTHESIZED_CONDITIONS:
            return negative_log_mel(negative, num_frames)
        audio_path = self._audio_path(record)
        return fit_examples(load_log_mel(audio_path), num_frames, self.audio_pad, source=audio_path)

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        if self.negative_audio is not None:
            record = self.negative_audio(record)
        num_frames = len(record["file_names"])
        mask_paths = record.get("sem_seg_file_names") or [None] * num_frames
        valid = list(record.get("frame_valid") or [True] * num_frames)
        if len(mask_paths) != num_frames or len(valid) != num_frames:
            raise AVSDataError(
                f"clip {record.get('video_id')}: {num_frames} frames, {len(mask_paths)} masks "
                f"and {len(valid)} frame_valid entries"
            )
        frames, stored_size = self._read_frames(record)
        height, width = self.eval_size if all(self.eval_size) else stored_size
        maskiges = None
        if self.maskige_folder:
            record["maskige_file_names"] = clip_maskige_files(record, self.maskige_folder)
            maskiges = self._read_maskiges(record["maskige_file_names"])

        if self.is_train:
            masks = [self._read_labels(path, record) if path else None for path in mask_paths]
            labels = [self._train_labels(mask) for mask in masks]
            if self.augmentations is not None:
                frames, labels, maskiges = self._augment(frames, labels, valid, maskiges)
            if self.pad_size > 0:
                frames, labels, maskiges = self._pad(frames, labels, valid, maskiges)
            record["sem_seg"] = torch.as_tensor(np.stack(labels).astype(np.int64))
            if is_negative(record):
                record["sem_seg"] = empty_labels(record["sem_seg"])

        record["frames"] = frames_to_tensor(frames, self.image_format)
        if maskiges is not None:
            record["maskiges"] = frames_to_tensor(maskiges, self.image_format)
        record["log_mel"] = self._log_mel(record, num_frames)
        record["frame_valid"] = torch.tensor(valid, dtype=torch.bool)
        record["height"], record["width"] = int(height), int(width)
        return record

    @property
    def _active_resize_mode(self) -> str:
        return self.resize_mode if self.is_train else "resize"

    def _geometry(self, size: tuple[int, int]):
        return resize_geometry(size, self.frame_size, self._active_resize_mode)

    def _read_frames(self, record: dict) -> tuple[list[np.ndarray], tuple[int, int]]:
        """Frames as uint8 ``[H, W, 3]`` at ``frame_size`` (zeros for padded entries), and the
        stored size of the first real frame."""
        frames, stored_size = [], None
        for path in record["file_names"]:
            if path is None:
                frames.append(np.zeros((*self.frame_size, 3), np.uint8))
                continue
            image = _read_frame(path)
            size = (image.height, image.width)
            stored_size = stored_size or size
            frames.append(resize_frame(image, self.frame_size, self._active_resize_mode))
        if stored_size is None:
            raise AVSDataError(f"clip {record.get('video_id')}: no frame file")
        return frames, stored_size

    def _read_maskiges(self, paths: Sequence[str | None]) -> list[np.ndarray]:
        """Maskiges as uint8 ``[H, W, 3]`` at ``frame_size`` like frames (zeros where None)."""
        return [
            resize_frame(read_maskige(path), self.frame_size, self._active_resize_mode)
            if path is not None
            else np.zeros((*self.frame_size, 3), np.uint8)
            for path in paths
        ]

    def _train_labels(self, mask: Image.Image | None) -> np.ndarray:
        if mask is None:
            return np.full(self.frame_size, IGNORE_LABEL, np.uint8)
        geometry = self._geometry((mask.height, mask.width))
        return np.asarray(_apply_geometry(mask, geometry, Image.NEAREST))

    def _augment(self, frames: list, labels: list, valid: list, maskiges: list | None):
        """The clip's augmentations, drawn on its first real frame, applied to every frame,
        mask and maskige; padded frames (and their maskiges) stay zeros."""
        first = next(i for i, ok in enumerate(valid) if ok) if any(valid) else 0
        aug_input = T.AugInput(frames[first], sem_seg=labels[first])
        transforms = self.augmentations(aug_input)
        out_shape = aug_input.image.shape

        def images(arrays):
            # A colour jitter would turn the zeros of a padded frame into a grey image.
            return [
                transforms.apply_image(a) if ok else np.zeros(out_shape, np.uint8)
                for a, ok in zip(arrays, valid)
            ]

        labels = [transforms.apply_segmentation(label) for label in labels]
        return images(frames), labels, images(maskiges) if maskiges is not None else None

    def _pad(self, frames: list, labels: list, valid: list, maskiges: list | None):
        def images(arrays):
            return [
                pad_to_square(a, self.pad_size, IMAGE_PAD_VALUE if ok else 0)
                for a, ok in zip(arrays, valid)
            ]

        labels = [pad_to_square(label, self.pad_size, IGNORE_LABEL) for label in labels]
        return images(frames), labels, images(maskiges) if maskiges is not None else None
