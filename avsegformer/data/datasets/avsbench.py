"""AVSBench (S4, MS3, AVSS) as clip-level Detectron2 datasets: the loaders and their catalogs.

One record per clip (the clip contract every model takes):

``video_id`` (str), ``file_names`` (T frame paths in numeric order; ``None`` for the frames
that pad an AVSS v1 clip to 10), ``sem_seg_file_names`` (T entries, ``None`` where the frame is
not annotated or padded), ``audio_file_name`` (what the original reads: the ``.pkl`` log-mel for
S4/MS3, ``audio.wav`` for AVSS), ``audio_wav_file_name`` (the clip's wav in the AVSBench layout),
``height``/``width`` (stored size of the first frame), ``length`` (T), ``frame_valid`` (T bools,
False for padded frames), ``mask_format`` (how the mask PNGs are decoded, see
:func:`avsegformer.data.masks.read_avs_mask`), ``dataset_name``, and per subset ``category``
(S4), ``avss_label`` (AVSS: ``v1s``/``v1m``/``v2``).

File names and which frames are annotated come from :mod:`.layout` (AVSBench's rules), not
from a directory listing; :func:`avsegformer.data.validation.validate_dataset` checks that the
files are really there.

Registration is lazy (nothing is read until ``DatasetCatalog.get``); the AVSS class names come
from ``label2idx.json`` on first access of ``MetadataCatalog.get(name).stuff_classes``.
"""

import csv
import json
import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog
from detectron2.data.catalog import Metadata

from ..errors import AVSDataError
from ..masks import AVSS_NUM_CLASSES, BINARY_CLASSES, BINARY_COLORS, IGNORE_LABEL, avss_palette
from .layout import (
    AVSBENCH_SUBSETS,
    AVSS_CLASS_FILE,
    AVSS_LABELS,
    CLIP_CLASSES_FILE,
    SPLITS,
    ClipFiles,
    avss_clip_files,
    ms3_clip_files,
    s4_clip_files,
)
from .registration import ClipLoader, check_name_is_free, new_metadata, probe_frame_size

__all__ = [
    "load_avsbench",
    "load_avsbench_avss",
    "load_avsbench_ms3",
    "load_avsbench_s4",
    "read_avss_classes",
    "register_avsbench",
]


def read_avss_classes(label2idx_file: str) -> list[str]:
    """Class names of AVSS in index order, from ``label2idx.json`` (name -> index, 71 entries).

    The order comes from the JSON values, not from the key order of the file.
    """
    try:
        with open(label2idx_file, encoding="utf-8") as f:
            mapping = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise AVSDataError(f"{label2idx_file}: cannot read the AVSS class table ({err})") from err
    if not isinstance(mapping, dict) or len(mapping) != AVSS_NUM_CLASSES:
        size = len(mapping) if isinstance(mapping, dict) else type(mapping).__name__
        raise AVSDataError(
            f"{label2idx_file}: expected a JSON object with {AVSS_NUM_CLASSES} entries "
            f"(name -> index), got {size}"
        )
    classes = [None] * AVSS_NUM_CLASSES
    for name, index in mapping.items():
        if not isinstance(index, int) or not 0 <= index < AVSS_NUM_CLASSES or classes[index]:
            raise AVSDataError(
                f"{label2idx_file}: index {index!r} of class {name!r} is not a distinct integer "
                f"in 0..{AVSS_NUM_CLASSES - 1}"
            )
        classes[index] = name
    return classes


# ---------------------------------------------------------------------------------------------
# metadata tables
# ---------------------------------------------------------------------------------------------
def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise AVSDataError(f"{path}: cannot read the metadata table ({err})") from err
    if not rows:
        raise AVSDataError(f"{path}: the metadata table is empty (a header row is expected)")
    header = [cell.strip().lower() for cell in rows[0]]
    return header, [[cell.strip() for cell in row] for row in rows[1:]]


def _column(header: list[str], path: str, names: Sequence[str], fallback: int | None = None) -> int:
    """Index of the first of ``names`` in ``header``; else ``fallback`` (AVSBench's position)."""
    for name in names:
        if name in header:
            return header.index(name)
    if fallback is not None and fallback < len(header):
        return fallback
    raise AVSDataError(
        f"{path}: no column named {' or '.join(repr(n) for n in names)} in the header {header}"
    )


def _split_rows(path: str, split: str, columns: dict[str, tuple]) -> list[dict[str, str]]:
    """Rows of ``split`` as ``{key: value}`` for the ``columns`` (key -> (names, fallback))."""
    header, rows = _read_csv(path)
    index = {key: _column(header, path, *spec) for key, spec in columns.items()}
    index["split"] = _column(header, path, ("split",))
    width = max(index.values()) + 1
    selected = []
    for line, row in enumerate(rows, start=2):
        if len(row) < width:
            raise AVSDataError(f"{path}, line {line}: {len(row)} columns, {width} expected")
        if row[index["split"]] == split:
            selected.append({key: row[i] for key, i in index.items()})
    if not selected:
        raise AVSDataError(f"{path}: no row has split {split!r}")
    for record in selected:
        for key, value in record.items():
            if not value:
                raise AVSDataError(f"{path}: empty {key!r} in a {split!r} row: {record}")
    return selected


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def _finish(records: list[dict], probe_sizes: bool) -> list[dict]:
    for record in records:
        record["length"] = len(record["file_names"])
        if probe_sizes:
            first = next(f for f in record["file_names"] if f is not None)
            record["height"], record["width"] = probe_frame_size(first)
        else:
            record.setdefault("height", None)
            record.setdefault("width", None)
    return records


def _attach_clip_classes(records: list[dict], root: str) -> list[dict]:
    """Copy ``sounding_classes``/``visible_classes`` from the optional ``clip_classes.json``
    of ``root`` (see :data:`.layout.CLIP_CLASSES_FILE`) into the records it lists."""
    path = os.path.join(root, CLIP_CLASSES_FILE)
    if not os.path.isfile(path):
        return records
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        for record in records:
            entry = table.get(record["video_id"])
            if entry is not None:
                record["sounding_classes"] = list(entry["sounding"])
                record["visible_classes"] = list(entry["visible"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise AVSDataError(f"{path}: not a table of clip classes ({err!r})") from err
    return records


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _metadata_table(root: str, subset: str) -> str:
    return os.path.join(root, AVSBENCH_SUBSETS[subset]["metadata_file"])


def _binary_record(name: str, files: ClipFiles) -> dict:
    """The record of an S4/MS3 clip: every frame real, the precomputed log-mel as its audio."""
    return {
        "video_id": name,
        "file_names": files.frames,
        "sem_seg_file_names": files.masks,
        "audio_file_name": files.audio_log_mel,
        "audio_wav_file_name": files.audio_wav,
        "frame_valid": [True] * len(files.frames),
        "mask_format": "binary",
    }


def load_avsbench_s4(root: str, split: str, *, probe_sizes: bool = True) -> list[dict]:
    """Clips of the AVSBench Single-source subset.

    Args:
        root: the ``Single-source`` folder (holds ``s4_meta_data.csv`` and ``s4_data/``).
        split: ``train``, ``val`` or ``test``; clips come in CSV order.
        probe_sizes: read each clip's first frame header for ``height``/``width`` (an error
            naming the frame when it is missing); False leaves them None.

    Returns:
        One record per clip, T = 5; in train only frame 1 has a mask.
    """
    _check_split(split)
    columns = {"name": (("name", "video_id", "vid", "uid"), 0), "category": (("category",),)}
    records = []
    for row in _split_rows(_metadata_table(root, "s4"), split, columns):
        name, category = row["name"], row["category"]
        record = _binary_record(name, s4_clip_files(root, split, category, name))
        records.append({**record, "category": category})
    return _finish(_attach_clip_classes(records, root), probe_sizes)


def load_avsbench_ms3(root: str, split: str, *, probe_sizes: bool = True) -> list[dict]:
    """Clips of the AVSBench Multi-sources subset.

    Args:
        root: the ``Multi-sources`` folder (holds ``ms3_meta_data.csv`` and ``ms3_data/``).
        split: ``train``, ``val`` or ``test``; clips come in CSV order.
        probe_sizes: as in :func:`load_avsbench_s4`.

    Returns:
        One record per clip, T = 5, every frame annotated. Frames are
        ``visual_frames/<video>/<video>.mp4_<k>.png`` (no split folder, ``.mp4_`` infix).
    """
    _check_split(split)
    columns = {"name": (("name", "video_id", "vid", "uid"), 0)}
    records = []
    for row in _split_rows(_metadata_table(root, "ms3"), split, columns):
        name = row["name"]
        records.append(_binary_record(name, ms3_clip_files(root, split, name)))
    return _finish(_attach_clip_classes(records, root), probe_sizes)


def load_avsbench_avss(
    root: str, split: str, *, pad_to: int | None = 10, probe_sizes: bool = True
) -> list[dict]:
    """Clips of AVSBench-semantic (``v1s``, ``v1m`` and ``v2`` rows of ``metadata.csv``).

    Args:
        root: the AVSS folder (holds ``metadata.csv``, ``label2idx.json``, ``v1s/``, ...).
        split: ``train``, ``val`` or ``test``; clips come in CSV order.
        pad_to: pad shorter clips (v1: 5 frames) to this length like the original (10);
            padded frames have ``file_names``/``sem_seg_file_names`` None and ``frame_valid``
            False. None keeps v1 clips at 5 frames.
        probe_sizes: as in :func:`load_avsbench_s4`.

    Returns:
        One record per clip; frames ``<label>/<uid>/frames/<i>.jpg`` from i = 0, masks
        ``labels_rgb/<i>.png`` (``palette`` format), audio ``audio.wav``.
    """
    _check_split(split)
    csv_path = _metadata_table(root, "avss")
    columns = {"uid": (("uid",),), "label": (("label",),)}
    records = []
    for row in _split_rows(csv_path, split, columns):
        uid, label = row["uid"], row["label"]
        if label not in AVSS_LABELS:
            raise AVSDataError(
                f"{csv_path}: clip {uid!r} has label {label!r}, expected one of "
                f"{sorted(AVSS_LABELS)}"
            )
        files = avss_clip_files(root, split, label, uid)
        frames, masks = files.frames, files.masks
        valid = [True] * len(frames)
        if pad_to is not None:
            if len(frames) > pad_to:
                raise ValueError(f"pad_to={pad_to} is shorter than a {label} clip ({len(frames)})")
            padding = pad_to - len(frames)
            frames, masks, valid = (
                frames + [None] * padding,
                masks + [None] * padding,
                valid + [False] * padding,
            )
        records.append(
            {
                "video_id": uid,
                "avss_label": label,
                "file_names": frames,
                "sem_seg_file_names": masks,
                "audio_file_name": files.audio_wav,
                "audio_wav_file_name": files.audio_wav,
                "frame_valid": valid,
                "mask_format": "palette",
            }
        )
    return _finish(_attach_clip_classes(records, root), probe_sizes)


_LOADERS = {"s4": load_avsbench_s4, "ms3": load_avsbench_ms3, "avss": load_avsbench_avss}


def load_avsbench(subset: str, root: str, split: str, **kwargs) -> list[dict]:
    """Dispatch to :func:`load_avsbench_s4` / ``_ms3`` / ``_avss`` by ``subset``."""
    if subset not in _LOADERS:
        raise ValueError(f"subset must be one of {sorted(_LOADERS)}, got {subset!r}")
    return _LOADERS[subset](root, split, **kwargs)


# ---------------------------------------------------------------------------------------------
# catalogs
# ---------------------------------------------------------------------------------------------
class _AVSSMetadata(Metadata):
    """Metadata whose ``stuff_classes`` are read from ``label2idx.json`` on first access."""

    @property
    def stuff_classes(self) -> list[str]:
        classes = self.__dict__.get("_stuff_classes")
        if classes is None:
            classes = read_avss_classes(self.label2idx_file)
            self.__dict__["_stuff_classes"] = classes
        return classes

    def as_dict(self) -> dict:
        entries = super().as_dict()
        entries.pop("_stuff_classes", None)
        entries["stuff_classes"] = self.stuff_classes
        return entries


def register_avsbench(
    name: str, subset: str, root: str, split: str, *, pad_to: int | None = 10, **metadata
) -> None:
    """Register one split of an AVSBench-layout folder as ``name`` (lazily; no disk access).

    Args:
        name: the dataset name, e.g. ``avsbench_s4_train``.
        subset: ``s4``, ``ms3`` or ``avss``.
        root: the subset folder (``.../Single-source``, ``.../Multi-sources``, ``.../AVSS``).
        split: ``train``, ``val`` or ``test``.
        pad_to: AVSS only, see :func:`load_avsbench_avss`.
        metadata: extra metadata entries.
    """
    if subset not in _LOADERS:
        raise ValueError(f"subset must be one of {sorted(_LOADERS)}, got {subset!r}")
    _check_split(split)
    check_name_is_free(name)
    kwargs = {"pad_to": pad_to} if subset == "avss" else {}

    def load(probe_sizes=True, subset=subset, root=root, split=split, kwargs=kwargs):
        return load_avsbench(subset, root, split, probe_sizes=probe_sizes, **kwargs)

    DatasetCatalog.register(name, ClipLoader(name, load))
    if subset == "avss":
        meta = new_metadata(name, _AVSSMetadata)
        meta.set(
            label2idx_file=os.path.join(root, AVSS_CLASS_FILE),
            stuff_colors=avss_palette(),
            task="semantic",
            mask_format="palette",
            num_frames=pad_to or AVSBENCH_SUBSETS["avss"]["num_frames"],
        )
    else:
        meta = new_metadata(name)
        meta.set(
            stuff_classes=list(BINARY_CLASSES),
            stuff_colors=list(BINARY_COLORS),
            task="binary",
            mask_format="binary",
            num_frames=AVSBENCH_SUBSETS[subset]["num_frames"],
        )
    meta.set(
        subset=subset,
        split=split,
        dataset_root=root,
        metadata_file=_metadata_table(root, subset),
        ignore_label=IGNORE_LABEL,
        evaluator_type="avsbench",
        **metadata,
    )
