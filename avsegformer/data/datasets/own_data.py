"""Your own audio-visual segmentation data as a Detectron2 dataset: :func:`register_avs_dataset`.

Either an AVSBench-layout folder (registered like the builtins) or a list of clip dicts with
frame, mask and audio paths; both give the clip records the mapper and the evaluator read.
"""

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from detectron2.data import DatasetCatalog

from ..errors import AVSDataError
from ..masks import BINARY_CLASSES, BINARY_COLORS, IGNORE_LABEL, MASK_FORMATS, voc_palette
from .avsbench import register_avsbench
from .layout import AVSBENCH_SUBSETS
from .registration import ClipLoader, check_name_is_free, new_metadata, probe_frame_size

__all__ = ["register_avs_dataset"]


def _detect_subset(folder: str) -> str:
    for subset, layout in AVSBENCH_SUBSETS.items():
        if os.path.isfile(os.path.join(folder, layout["metadata_file"])):
            return subset
    tables = ", ".join(layout["metadata_file"] for layout in AVSBENCH_SUBSETS.values())
    raise AVSDataError(
        f"{folder}: not an AVSBench folder (none of {tables}); pass subset= or a list of clips"
    )


def _normalize_clip(
    clip: dict[str, Any],
    position: int,
    name: str,
    mask_format: str,
    num_frames: int | None,
    probe_sizes: bool,
) -> dict:
    where = f"dataset {name!r}, clip #{position}"
    if not isinstance(clip, dict):
        raise AVSDataError(f"{where}: a clip must be a dict, got {type(clip).__name__}")
    frames = clip.get("file_names")
    if not frames or not all(isinstance(f, (str, os.PathLike)) for f in frames):
        raise AVSDataError(f"{where}: 'file_names' must be a non-empty list of paths")
    frames = [os.fspath(f) for f in frames]
    count = len(frames)
    masks = clip.get("sem_seg_file_names") or [None] * count
    if len(masks) != count:
        raise AVSDataError(f"{where}: {len(masks)} sem_seg_file_names for {count} frames")
    masks = [None if m is None else os.fspath(m) for m in masks]
    audio = clip.get("audio_file_name")
    if not isinstance(audio, (str, os.PathLike)):
        raise AVSDataError(f"{where}: 'audio_file_name' (a .pkl/.npy log-mel or a wav) is missing")
    valid = list(clip.get("frame_valid") or [True] * count)
    if len(valid) != count:
        raise AVSDataError(f"{where}: {len(valid)} frame_valid entries for {count} frames")
    maskiges = clip.get("maskige_file_names")
    if maskiges is not None:
        if len(maskiges) != count:
            raise AVSDataError(f"{where}: {len(maskiges)} maskige_file_names for {count} frames")
        maskiges = [None if m is None else os.fspath(m) for m in maskiges]
    if num_frames is not None:
        if count > num_frames:
            raise AVSDataError(f"{where}: {count} frames, more than num_frames={num_frames}")
        padding = num_frames - count
        frames, masks, valid = (
            frames + [None] * padding,
            masks + [None] * padding,
            valid + [False] * padding,
        )
        maskiges = maskiges and maskiges + [None] * padding
    record = dict(clip)
    if maskiges is not None:
        record["maskige_file_names"] = maskiges
    record.update(
        video_id=str(clip.get("video_id", f"{position:06d}")),
        file_names=frames,
        sem_seg_file_names=masks,
        audio_file_name=os.fspath(audio),
        frame_valid=[bool(v) for v in valid],
        mask_format=clip.get("mask_format", mask_format),
        length=len(frames),
    )
    if probe_sizes and not (record.get("height") and record.get("width")):
        record["height"], record["width"] = probe_frame_size(frames[0])
    return record


def register_avs_dataset(
    name: str,
    clips_or_folder: str | os.PathLike | Iterable[dict] | Callable[[], Iterable[dict]],
    *,
    split: str | None = None,
    subset: str | None = None,
    task: str | None = None,
    classes: Sequence[str] | None = None,
    colors: Sequence[Sequence[int]] | None = None,
    mask_format: str | None = None,
    num_frames: int | None = None,
    **metadata,
) -> None:
    """Register your own audio-visual segmentation data under ``name``.

    Two forms:

    * an AVSBench-layout folder: ``register_avs_dataset("my_s4_val", "/data/Single-source",
      split="val")``. The subset is detected from the CSV present (or pass ``subset=``).
    * clips: a list of dicts (or a function returning one, called lazily), each with
      ``file_names`` (frame paths, in order), ``audio_file_name`` (a ``.pkl``/``.npy``
      log-mel ``[N, (1,) 96, 64]`` or any audio file soundfile reads) and optionally
      ``sem_seg_file_names`` (None for unannotated frames), ``video_id``, ``frame_valid``,
      ``height``/``width``, ``mask_format``, ``maskige_file_names`` (one maskige per frame,
      read when ``INPUT.MASKIGE_FOLDER`` is set; see :mod:`avsegformer.data.maskiges`).

    Args:
        name: dataset name for ``DATASETS.TRAIN``/``TEST``.
        clips_or_folder: see above.
        split: required for a folder.
        subset: for a folder, ``s4``/``ms3``/``avss`` (detected when None).
        task: ``binary`` (foreground vs background, K = 1) or ``semantic`` (K classes);
            default binary unless ``classes`` has more than two entries.
        classes: class names; binary default ``["background", "object"]``; semantic requires
            them, class 0 being background.
        colors: one RGB colour per class (mask colours for ``palette`` masks); default
            black/white (binary) or the VOC palette (semantic).
        mask_format: ``binary`` (0/255 grey PNG), ``palette`` (RGB PNG in ``colors``) or
            ``index`` (8-bit PNG of class ids, 255 = ignore); default binary / palette.
        num_frames: pad every clip to this length (padded frames are invalid); None = as given.
        metadata: extra metadata entries.
    """
    if isinstance(clips_or_folder, (str, os.PathLike)):
        folder = os.fspath(clips_or_folder)
        if split is None:
            raise ValueError("register_avs_dataset: split= is required for an AVSBench folder")
        subset = subset or _detect_subset(folder)
        kwargs = {"pad_to": num_frames} if subset == "avss" and num_frames else {}
        register_avsbench(name, subset, folder, split, **kwargs, **metadata)
        return

    if task is None:
        task = "binary" if classes is None or len(classes) == 2 else "semantic"
    if task not in ("binary", "semantic"):
        raise ValueError(f"task must be 'binary' or 'semantic', got {task!r}")
    if task == "binary":
        classes = list(classes or BINARY_CLASSES)
        colors = list(colors or BINARY_COLORS)
        mask_format = mask_format or "binary"
    else:
        if not classes:
            raise ValueError("a semantic dataset needs classes= (class 0 = background)")
        classes = list(classes)
        colors = [tuple(c) for c in colors] if colors else voc_palette(len(classes))
        mask_format = mask_format or "palette"
    if len(colors) != len(classes):
        raise ValueError(f"{len(colors)} colours for {len(classes)} classes")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    check_name_is_free(name)
    if not callable(clips_or_folder):
        clips_or_folder = list(clips_or_folder)  # a snapshot: same records on every call

    def load(probe_sizes=True, source=clips_or_folder):
        clips = source() if callable(source) else source
        return [
            _normalize_clip(clip, i, name, mask_format, num_frames, probe_sizes)
            for i, clip in enumerate(clips)
        ]

    DatasetCatalog.register(name, ClipLoader(name, load))
    new_metadata(name).set(
        stuff_classes=classes,
        stuff_colors=colors,
        task=task,
        mask_format=mask_format,
        num_frames=num_frames,
        subset=subset or "custom",
        split=split,
        ignore_label=IGNORE_LABEL,
        evaluator_type="avsbench",
        **metadata,
    )
