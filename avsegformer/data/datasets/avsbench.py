"""AVSBench (S4, MS3, AVSS) and user audio-visual datasets as clip-level Detectron2 datasets.

One record per clip (see the project's issue #5 contract):

``video_id`` (str), ``file_names`` (T frame paths in numeric order; ``None`` for the frames
that pad an AVSS v1 clip to 10), ``sem_seg_file_names`` (T entries, ``None`` where the frame is
not annotated or padded), ``audio_file_name`` (what the original reads: the ``.pkl`` log-mel for
S4/MS3, ``audio.wav`` for AVSS), ``audio_wav_file_name`` (the clip's wav in the AVSBench layout),
``height``/``width`` (stored size of the first frame), ``length`` (T), ``frame_valid`` (T bools,
False for padded frames), ``mask_format`` (how the mask PNGs are decoded, see
:func:`read_avs_mask`), ``dataset_name``, and per subset ``category`` (S4), ``avss_label``
(AVSS: ``v1s``/``v1m``/``v2``).

Which frames are annotated follows AVSBench, not a directory listing: S4 train only frame 1
(index 0), AVSS ``v1s`` train only frame 0, every other clip all its frames.
``tools/validate_dataset.py`` checks that the files are really there.

Registration is lazy (nothing is read until ``DatasetCatalog.get``); the AVSS class names come
from ``label2idx.json`` on first access of ``MetadataCatalog.get(name).stuff_classes``.
"""

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.logger import log_first_n
from PIL import Image

__all__ = [
    "AVSDataError",
    "AVSBENCH_SUBSETS",
    "BINARY_CLASSES",
    "BINARY_COLORS",
    "S4_CATEGORIES",
    "AVSS_NUM_CLASSES",
    "voc_palette",
    "avss_palette",
    "read_avss_classes",
    "read_avs_mask",
    "mask_pixels",
    "labels_from_mask_pixels",
    "load_avsbench_s4",
    "load_avsbench_ms3",
    "load_avsbench_avss",
    "load_avsbench",
    "register_avsbench",
    "register_avs_dataset",
]

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255

#: Folder of each subset under the AVSBench root, and the clip length T of its records.
AVSBENCH_SUBSETS = {
    "s4": {"folder": "Single-source", "num_frames": 5},
    "ms3": {"folder": "Multi-sources", "num_frames": 5},
    "avss": {"folder": "AVSS", "num_frames": 10},
}

BINARY_CLASSES = ["background", "object"]
BINARY_COLORS = [(0, 0, 0), (255, 255, 255)]

#: The 23 S4 categories (folder names under ``s4_data/*/<split>/``).
S4_CATEGORIES = (
    "baby_laughter", "female_singing", "male_speech", "dog_barking", "cat_meowing",
    "lions_roaring", "horse_clip-clop", "coyote_howling", "mynah_bird_singing",
    "playing_acoustic_guitar", "playing_tabla", "playing_violin", "playing_piano",
    "playing_ukulele", "playing_glockenspiel", "helicopter", "race_car", "driving_buses",
    "ambulance_siren", "typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting",
    "lawn_mowing",
)  # fmt: skip

AVSS_NUM_CLASSES = 71
AVSS_LABELS = {"v1s": 5, "v1m": 5, "v2": 10}  # subset part -> real frames per clip

_MASK_FORMATS = ("binary", "palette", "index")
_SPLITS = ("train", "val", "test")


class AVSDataError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


# ---------------------------------------------------------------------------------------------
# classes, palette, masks
# ---------------------------------------------------------------------------------------------
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


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _format_rgb(code: int) -> str:
    return f"({code >> 16}, {(code >> 8) & 255}, {code & 255})"


def mask_pixels(path: str, mask_format: str) -> np.ndarray:
    """The raw pixels of a mask PNG, before any class mapping.

    Returns:
        ``[H, W]``: uint8 grey values (``binary``; mode 1/L/P as stored, colour images via
        luminance), uint8 class indices (``index``, mode L or P), or int32 packed
        ``0xRRGGBB`` colours (``palette``).
    """
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {_MASK_FORMATS}, got {mask_format!r}")
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
    if mask_format == "binary":
        odd = (pixels != 0) & (pixels != 255)
        if odd.any():
            log_first_n(
                logging.WARNING,
                f"{source}: {int(odd.sum())} mask pixels are neither 0 nor 255; they are "
                "binarised at > 127 (check the data with tools/validate_dataset.py)",
                n=10,
                name=__name__,
            )
        return (pixels > 127).astype(np.uint8)
    if mask_format == "palette":
        if palette is None:
            raise ValueError("palette masks need a palette")
        codes = _pack_rgb(np.asarray(palette, dtype=np.int32))
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        position = np.searchsorted(sorted_codes, pixels).clip(max=len(codes) - 1)
        known = sorted_codes[position] == pixels
        if not known.all():
            unknown, counts = np.unique(pixels[~known], return_counts=True)
            listed = ", ".join(
                f"{_format_rgb(int(c))} x{int(n)}" for c, n in zip(unknown[:5], counts[:5])
            )
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise AVSDataError(
                f"{source}: {int((~known).sum())} pixels have colours outside the "
                f"{len(codes)}-colour palette: {listed}{more}"
            )
        return order[position].astype(np.uint8)
    if mask_format == "index":
        limit = 256 if num_classes is None else num_classes
        bad = (pixels >= limit) & (pixels != IGNORE_LABEL)
        if bad.any():
            values = np.unique(pixels[bad])[:5].tolist()
            raise AVSDataError(
                f"{source}: class indices {values} are outside 0..{limit - 1} (255 = ignore)"
            )
        return pixels.astype(np.uint8)
    raise ValueError(f"mask_format must be one of {_MASK_FORMATS}, got {mask_format!r}")


def read_avs_mask(
    path: str,
    mask_format: str = "binary",
    *,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Decode one ground-truth PNG into class ids (uint8 ``[H, W]``, see
    :func:`labels_from_mask_pixels`); every error names ``path``."""
    if mask_format == "palette" and palette is None:
        palette = avss_palette()
    return labels_from_mask_pixels(
        mask_pixels(path, mask_format),
        mask_format,
        palette=palette,
        num_classes=num_classes,
        source=path,
    )


# ---------------------------------------------------------------------------------------------
# CSV tables
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
# AVSBench loaders
# ---------------------------------------------------------------------------------------------
def _probe_size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise AVSDataError(f"{path}: cannot read frame ({err})") from err
    return height, width


def _finish(records: list[dict], probe_sizes: bool) -> list[dict]:
    for record in records:
        record["length"] = len(record["file_names"])
        if probe_sizes:
            first = next(f for f in record["file_names"] if f is not None)
            record["height"], record["width"] = _probe_size(first)
        else:
            record.setdefault("height", None)
            record.setdefault("width", None)
    return records


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


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
    csv_path = os.path.join(root, "s4_meta_data.csv")
    columns = {"name": (("name", "video_id", "vid", "uid"), 0), "category": (("category",),)}
    data = os.path.join(root, "s4_data")
    records = []
    for row in _split_rows(csv_path, split, columns):
        name, category = row["name"], row["category"]
        frame_dir = os.path.join(data, "visual_frames", split, category, name)
        mask_dir = os.path.join(data, "gt_masks", split, category, name)
        frames = [os.path.join(frame_dir, f"{name}_{k}.png") for k in range(1, 6)]
        masks = [os.path.join(mask_dir, f"{name}_{k}.png") for k in range(1, 6)]
        if split == "train":
            masks = masks[:1] + [None] * 4
        records.append(
            {
                "video_id": name,
                "category": category,
                "file_names": frames,
                "sem_seg_file_names": masks,
                "audio_file_name": os.path.join(
                    data, "audio_log_mel", split, category, f"{name}.pkl"
                ),
                "audio_wav_file_name": os.path.join(
                    data, "audio_wav", split, category, f"{name}.wav"
                ),
                "frame_valid": [True] * 5,
                "mask_format": "binary",
            }
        )
    return _finish(records, probe_sizes)


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
    csv_path = os.path.join(root, "ms3_meta_data.csv")
    columns = {"name": (("name", "video_id", "vid", "uid"), 0)}
    data = os.path.join(root, "ms3_data")
    records = []
    for row in _split_rows(csv_path, split, columns):
        name = row["name"]
        frame_dir = os.path.join(data, "visual_frames", name)
        mask_dir = os.path.join(data, "gt_masks", split, name)
        records.append(
            {
                "video_id": name,
                "file_names": [os.path.join(frame_dir, f"{name}.mp4_{k}.png") for k in range(1, 6)],
                "sem_seg_file_names": [
                    os.path.join(mask_dir, f"{name}_{k}.png") for k in range(1, 6)
                ],
                "audio_file_name": os.path.join(data, "audio_log_mel", split, f"{name}.pkl"),
                "audio_wav_file_name": os.path.join(data, "audio_wav", split, f"{name}.wav"),
                "frame_valid": [True] * 5,
                "mask_format": "binary",
            }
        )
    return _finish(records, probe_sizes)


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
    csv_path = os.path.join(root, "metadata.csv")
    columns = {"uid": (("uid",),), "label": (("label",),)}
    records = []
    for row in _split_rows(csv_path, split, columns):
        uid, label = row["uid"], row["label"]
        if label not in AVSS_LABELS:
            raise AVSDataError(
                f"{csv_path}: clip {uid!r} has label {label!r}, expected one of "
                f"{sorted(AVSS_LABELS)}"
            )
        count = AVSS_LABELS[label]
        clip_dir = os.path.join(root, label, uid)
        frames = [os.path.join(clip_dir, "frames", f"{i}.jpg") for i in range(count)]
        masks = [os.path.join(clip_dir, "labels_rgb", f"{i}.png") for i in range(count)]
        if label == "v1s" and split == "train":
            masks = masks[:1] + [None] * (count - 1)
        valid = [True] * count
        if pad_to is not None:
            if count > pad_to:
                raise ValueError(f"pad_to={pad_to} is shorter than a {label} clip ({count})")
            padding = pad_to - count
            frames, masks, valid = (
                frames + [None] * padding,
                masks + [None] * padding,
                valid + [False] * padding,
            )
        audio = os.path.join(clip_dir, "audio.wav")
        records.append(
            {
                "video_id": uid,
                "avss_label": label,
                "file_names": frames,
                "sem_seg_file_names": masks,
                "audio_file_name": audio,
                "audio_wav_file_name": audio,
                "frame_valid": valid,
                "mask_format": "palette",
            }
        )
    return _finish(records, probe_sizes)


_LOADERS = {"s4": load_avsbench_s4, "ms3": load_avsbench_ms3, "avss": load_avsbench_avss}


def load_avsbench(subset: str, root: str, split: str, **kwargs) -> list[dict]:
    """Dispatch to :func:`load_avsbench_s4` / ``_ms3`` / ``_avss`` by ``subset``."""
    if subset not in _LOADERS:
        raise ValueError(f"subset must be one of {sorted(_LOADERS)}, got {subset!r}")
    return _LOADERS[subset](root, split, **kwargs)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
class ClipLoader:
    """The lazily called dataset function registered in ``DatasetCatalog``.

    Calling it returns fresh records tagged with the dataset name; ``probe_sizes=False``
    skips opening frames (``tools/validate_dataset.py`` uses it to list every clip even when
    files are missing).
    """

    def __init__(self, name: str, load: Callable[..., list[dict]]):
        self.name = name
        self._load = load

    def __call__(self, probe_sizes: bool = True) -> list[dict]:
        records = self._load(probe_sizes=probe_sizes)
        for record in records:
            record["dataset_name"] = self.name
        return records


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


def _check_name_is_free(name: str) -> None:
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is already registered")
    # MetadataCatalog.get() creates an empty entry on first access: only real content counts.
    if name in MetadataCatalog.list() and len(vars(MetadataCatalog.get(name))) > 1:
        raise ValueError(f"metadata of dataset {name!r} is already set")


def _new_metadata(name: str, cls: type = Metadata) -> Metadata:
    metadata = cls(name=name)
    MetadataCatalog[name] = metadata
    return metadata


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
    _check_name_is_free(name)
    kwargs = {"pad_to": pad_to} if subset == "avss" else {}

    def load(probe_sizes=True, subset=subset, root=root, split=split, kwargs=kwargs):
        return load_avsbench(subset, root, split, probe_sizes=probe_sizes, **kwargs)

    DatasetCatalog.register(name, ClipLoader(name, load))
    if subset == "avss":
        meta = _new_metadata(name, _AVSSMetadata)
        meta.set(
            label2idx_file=os.path.join(root, "label2idx.json"),
            stuff_colors=avss_palette(),
            task="semantic",
            mask_format="palette",
            num_frames=pad_to or AVSBENCH_SUBSETS["avss"]["num_frames"],
            metadata_file=os.path.join(root, "metadata.csv"),
        )
    else:
        meta = _new_metadata(name)
        meta.set(
            stuff_classes=list(BINARY_CLASSES),
            stuff_colors=list(BINARY_COLORS),
            task="binary",
            mask_format="binary",
            num_frames=AVSBENCH_SUBSETS[subset]["num_frames"],
            metadata_file=os.path.join(root, f"{subset}_meta_data.csv"),
        )
    meta.set(
        subset=subset,
        split=split,
        dataset_root=root,
        ignore_label=IGNORE_LABEL,
        evaluator_type="avsbench",
        **metadata,
    )


def _detect_subset(folder: str) -> str:
    if os.path.isfile(os.path.join(folder, "s4_meta_data.csv")):
        return "s4"
    if os.path.isfile(os.path.join(folder, "ms3_meta_data.csv")):
        return "ms3"
    if os.path.isfile(os.path.join(folder, "metadata.csv")):
        return "avss"
    raise AVSDataError(
        f"{folder}: not an AVSBench folder (no s4_meta_data.csv, ms3_meta_data.csv or "
        "metadata.csv); pass subset= or a list of clips"
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
    if num_frames is not None:
        if count > num_frames:
            raise AVSDataError(f"{where}: {count} frames, more than num_frames={num_frames}")
        padding = num_frames - count
        frames, masks, valid = (
            frames + [None] * padding,
            masks + [None] * padding,
            valid + [False] * padding,
        )
    record = dict(clip)
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
        record["height"], record["width"] = _probe_size(frames[0])
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
      ``height``/``width``, ``mask_format``.

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
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {_MASK_FORMATS}, got {mask_format!r}")
    _check_name_is_free(name)
    if not callable(clips_or_folder):
        clips_or_folder = list(clips_or_folder)  # a snapshot: same records on every call

    def load(probe_sizes=True, source=clips_or_folder):
        clips = source() if callable(source) else source
        return [
            _normalize_clip(clip, i, name, mask_format, num_frames, probe_sizes)
            for i, clip in enumerate(clips)
        ]

    DatasetCatalog.register(name, ClipLoader(name, load))
    _new_metadata(name).set(
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
