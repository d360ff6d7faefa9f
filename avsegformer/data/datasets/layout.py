"""The AVSBench layout on disk, described once for the loaders, the synthetic generator and the
tests' tiny trees.

Under the AVSBench root, one folder per subset:

* ``Single-source/`` (S4): ``s4_meta_data.csv`` (name, start_time, category, split) and
  ``s4_data/{visual_frames,gt_masks}/<split>/<category>/<name>/<name>_<k>.png`` (k = 1..5),
  ``s4_data/audio_log_mel/<split>/<category>/<name>.pkl``, ``.../audio_wav/.../<name>.wav``.
  Train clips are annotated on their first frame only.
* ``Multi-sources/`` (MS3): ``ms3_meta_data.csv`` (video_id, split); frames
  ``ms3_data/visual_frames/<name>/<name>.mp4_<k>.png`` (no split folder, the video's ``.mp4``
  kept), masks ``gt_masks/<split>/<name>/<name>_<k>.png``, audio under ``<split>/`` like S4.
* ``AVSS/``: ``metadata.csv`` (vid, uid, s_min, s_sec, a_obj, split, label), ``label2idx.json``
  (class name -> index), and per clip ``<label>/<uid>/frames/<i>.jpg`` (i from 0),
  ``labels_rgb/<i>.png`` (palette colours), ``labels_semantic/<i>.png`` (class ids) and
  ``audio.wav``. ``label`` is the part: ``v1s``/``v1m`` clips have 5 frames, ``v2`` clips 10;
  ``v1s`` train clips are annotated on frame 0 only.

Maskiges (COMBO's second visual input, one RGB image per frame painting a class-agnostic
segmentation) sit in a folder of their own, ``pre_SAM_mask`` for the released ones
(:data:`MASKIGE_FOLDER`), one file ``<frame stem>_mask_color.png`` per frame:

* S4: ``s4_data/<folder>/<split>/<category>/<name>/<name>_<k>_mask_color.png``;
* MS3: ``ms3_data/<folder>/<name>/<name>.mp4_<k>_mask_color.png`` (no split folder);
* AVSS: ``<folder>/AVSBench_semantic/<label>/<uid>/processed_frames/<i>_mask_color.png`` under
  the ``AVSS`` folder (the released ones are 224x224, pre-processed like the original's frames).

An absolute ``folder`` stands for that subset's maskige folder itself, wherever it is.
"""

import os
from typing import NamedTuple

__all__ = [
    "AVSBENCH_SUBSETS",
    "AVSS_CLASS_FILE",
    "AVSS_LABELS",
    "AVSS_MASKIGE_SIZE",
    "CLIP_CLASSES_FILE",
    "MASKIGE_FOLDER",
    "MASKIGE_SUFFIX",
    "METADATA_COLUMNS",
    "S4_CATEGORIES",
    "SPLITS",
    "ClipFiles",
    "annotated",
    "maskige_name",
    "avss_clip_files",
    "ms3_clip_files",
    "s4_clip_files",
]

SPLITS = ("train", "val", "test")

#: Per subset: its folder under the AVSBench root, the clip length T of its records (AVSS clips
#: are padded to 10) and its metadata table.
AVSBENCH_SUBSETS = {
    "s4": {"folder": "Single-source", "num_frames": 5, "metadata_file": "s4_meta_data.csv"},
    "ms3": {"folder": "Multi-sources", "num_frames": 5, "metadata_file": "ms3_meta_data.csv"},
    "avss": {"folder": "AVSS", "num_frames": 10, "metadata_file": "metadata.csv"},
}

#: The header of each subset's metadata table, as AVSBench writes it.
METADATA_COLUMNS = {
    "s4": ("name", "start_time", "category", "split"),
    "ms3": ("video_id", "split"),
    "avss": ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"),
}

#: The 23 S4 categories (folder names under ``s4_data/*/<split>/``).
S4_CATEGORIES = (
    "baby_laughter", "female_singing", "male_speech", "dog_barking", "cat_meowing",
    "lions_roaring", "horse_clip-clop", "coyote_howling", "mynah_bird_singing",
    "playing_acoustic_guitar", "playing_tabla", "playing_violin", "playing_piano",
    "playing_ukulele", "playing_glockenspiel", "helicopter", "race_car", "driving_buses",
    "ambulance_siren", "typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting",
    "lawn_mowing",
)  # fmt: skip

#: AVSS parts (the ``label`` column) and the real frames of their clips.
AVSS_LABELS = {"v1s": 5, "v1m": 5, "v2": 10}

#: The AVSS class table (name -> index) beside ``metadata.csv``.
AVSS_CLASS_FILE = "label2idx.json"

#: Not part of AVSBench: an optional table beside a subset's metadata, ``{video_id: {"sounding":
#: [class names], "visible": [class names]}}``, written by the synthetic generator (which knows
#: every object). The loaders copy it into the records as ``sounding_classes`` and
#: ``visible_classes``, which make the off-screen negative audio exact.
CLIP_CLASSES_FILE = "clip_classes.json"

#: The folder of the released maskiges in each subset, and the suffix replacing a frame's
#: extension in a maskige's file name.
MASKIGE_FOLDER = "pre_SAM_mask"
MASKIGE_SUFFIX = "_mask_color.png"

#: (H, W) of the released AVSS maskiges: made on frames pre-processed to 224x224 (train: short
#: side resize + centre crop, val/test: resize), whatever the size of AVSS's own frames.
AVSS_MASKIGE_SIZE = (224, 224)


class ClipFiles(NamedTuple):
    """Where one clip's files are.

    Attributes:
        frames: the T frame paths in order.
        masks: T mask paths, None for the frames AVSBench does not annotate.
        audio_wav: the clip's wav.
        audio_log_mel: the precomputed log-mel ``.pkl`` (S4/MS3), None for AVSS.
        semantic_masks: AVSS only, T class-id PNG paths beside the palette masks (None where
            not annotated); None for S4/MS3.
        maskiges: T maskige paths when a maskige folder was asked for, else None.
    """

    frames: list[str]
    masks: list[str | None]
    audio_wav: str
    audio_log_mel: str | None = None
    semantic_masks: list[str | None] | None = None
    maskiges: list[str] | None = None


def annotated(subset: str, split: str, count: int, avss_label: str | None = None) -> list[bool]:
    """Which of a clip's ``count`` frames have a mask: S4 train and AVSS ``v1s`` train clips
    only their first frame, every other clip all of them."""
    first_only = split == "train" and (subset == "s4" or (subset == "avss" and avss_label == "v1s"))
    return [not first_only or index == 0 for index in range(count)]


def _keep(paths: list[str], flags: list[bool]) -> list[str | None]:
    return [path if flag else None for path, flag in zip(paths, flags)]


def maskige_name(frame: str) -> str:
    """The maskige file name of a frame path: its stem + :data:`MASKIGE_SUFFIX`."""
    return os.path.splitext(os.path.basename(frame))[0] + MASKIGE_SUFFIX


def _maskiges(folder: str | None, frames: list[str]) -> list[str] | None:
    if not folder:
        return None
    return [os.path.join(folder, maskige_name(frame)) for frame in frames]


def s4_clip_files(
    root: str, split: str, category: str, name: str, maskige_folder: str | None = None
) -> ClipFiles:
    """Files of S4 clip ``name`` under the ``Single-source`` folder ``root``; with
    ``maskige_folder`` (e.g. :data:`MASKIGE_FOLDER`) its maskiges too."""
    data = os.path.join(root, "s4_data")
    count = AVSBENCH_SUBSETS["s4"]["num_frames"]
    frame_dir = os.path.join(data, "visual_frames", split, category, name)
    mask_dir = os.path.join(data, "gt_masks", split, category, name)
    masks = [os.path.join(mask_dir, f"{name}_{k}.png") for k in range(1, count + 1)]
    frames = [os.path.join(frame_dir, f"{name}_{k}.png") for k in range(1, count + 1)]
    maskige_dir = maskige_folder and os.path.join(data, maskige_folder, split, category, name)
    return ClipFiles(
        frames=frames,
        masks=_keep(masks, annotated("s4", split, count)),
        audio_wav=os.path.join(data, "audio_wav", split, category, f"{name}.wav"),
        audio_log_mel=os.path.join(data, "audio_log_mel", split, category, f"{name}.pkl"),
        maskiges=_maskiges(maskige_dir, frames),
    )


def ms3_clip_files(
    root: str, split: str, name: str, maskige_folder: str | None = None
) -> ClipFiles:
    """Files of MS3 clip ``name`` under the ``Multi-sources`` folder ``root``; with
    ``maskige_folder`` its maskiges too."""
    data = os.path.join(root, "ms3_data")
    count = AVSBENCH_SUBSETS["ms3"]["num_frames"]
    frame_dir = os.path.join(data, "visual_frames", name)
    mask_dir = os.path.join(data, "gt_masks", split, name)
    frames = [os.path.join(frame_dir, f"{name}.mp4_{k}.png") for k in range(1, count + 1)]
    maskige_dir = maskige_folder and os.path.join(data, maskige_folder, name)
    return ClipFiles(
        frames=frames,
        masks=[os.path.join(mask_dir, f"{name}_{k}.png") for k in range(1, count + 1)],
        audio_wav=os.path.join(data, "audio_wav", split, f"{name}.wav"),
        audio_log_mel=os.path.join(data, "audio_log_mel", split, f"{name}.pkl"),
        maskiges=_maskiges(maskige_dir, frames),
    )


def avss_clip_files(
    root: str, split: str, label: str, uid: str, maskige_folder: str | None = None
) -> ClipFiles:
    """Files of AVSS clip ``uid`` of part ``label`` (``v1s``/``v1m``/``v2``) under the ``AVSS``
    folder ``root``; its real frames only (no padding); with ``maskige_folder`` their
    maskiges too."""
    if label not in AVSS_LABELS:
        raise ValueError(f"AVSS label must be one of {sorted(AVSS_LABELS)}, got {label!r}")
    count = AVSS_LABELS[label]
    clip_dir = os.path.join(root, label, uid)
    flags = annotated("avss", split, count, label)
    indices = range(count)
    frames = [os.path.join(clip_dir, "frames", f"{i}.jpg") for i in indices]
    maskige_dir = maskige_folder and os.path.join(
        root, maskige_folder, "AVSBench_semantic", label, uid, "processed_frames"
    )
    return ClipFiles(
        frames=frames,
        masks=_keep([os.path.join(clip_dir, "labels_rgb", f"{i}.png") for i in indices], flags),
        audio_wav=os.path.join(clip_dir, "audio.wav"),
        semantic_masks=_keep(
            [os.path.join(clip_dir, "labels_semantic", f"{i}.png") for i in indices], flags
        ),
        maskiges=_maskiges(maskige_dir, frames),
    )
