"""Check every file of registered audio-visual segmentation datasets.

For each clip: the frames (present, decodable, one size per clip, as many in the clip folder as
the clip expects), the masks (present, decodable, frame-sized, values in the expected set: 0/255
for binary masks, palette colours for AVSS, class ids for index masks), the audio (present,
loadable without unpickling arbitrary objects, at least one log-mel example per real frame), the
maskiges when a maskige folder is given (one per real frame, present, decodable, the size of their
frame; the released AVSS maskiges may also be 224x224), and that every metadata row points at an
existing clip folder. Each problem is one line
``<dataset>: <file>: <problem>``. Datasets registered with your own loader (not
``register_avsbench``/``register_avs_dataset``) are checked too, from the records they return.
``tools/validate_dataset.py`` is the command line.
"""

import os
from collections import Counter

from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from .audio import load_log_mel
from .datasets.layout import AVSBENCH_SUBSETS, AVSS_MASKIGE_SIZE
from .datasets.registration import ClipLoader
from .errors import AVSDataError
from .maskiges import clip_maskige_files
from .masks import avss_palette, invalid_mask_pixels, mask_pixels

__all__ = ["DatasetValidator", "validate_dataset"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_MAX_LISTED = 5


def _frame_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decode fully: catches truncated files, not only bad headers
        return image.height, image.width


def _records(name: str) -> list[dict]:
    loader = DatasetCatalog[name]
    # Our loaders can list clips without opening frames, so that missing files are reported
    # one by one instead of stopping at the first.
    return loader(probe_sizes=False) if isinstance(loader, ClipLoader) else loader()


class DatasetValidator:
    """Collects the problems of one registered dataset."""

    def __init__(self, name: str, check_wav: bool = False, maskige_folder: str = ""):
        self.name = name
        self.check_wav = check_wav
        self.maskige_folder = maskige_folder
        self.metadata = MetadataCatalog.get(name)
        self.problems: list[str] = []
        self.palette = self.metadata.get("stuff_colors") or avss_palette()
        self.num_classes = len(self.palette)

    def report(self, where: str, message: str) -> None:
        self.problems.append(f"{self.name}: {where}: {message}")

    # -----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Check the whole dataset; returns the number of clips looked at."""
        try:
            records = _records(self.name)
        except (AVSDataError, OSError) as err:
            self.report("records", str(err))
            return 0
        if self.metadata.get("task") == "semantic":
            try:
                classes = self.metadata.stuff_classes
            except (AVSDataError, OSError) as err:
                self.report("classes", str(err))
            else:
                if len(classes) != self.num_classes:
                    self.report("classes", f"{len(classes)} classes but {self.num_classes} colours")
        duplicates = [v for v, n in Counter(r.get("video_id") for r in records).items() if n > 1]
        for video_id in duplicates:
            self.report(str(video_id), "video id appears more than once")
        for record in records:
            self.check_clip(record)
        return len(records)

    def check_clip(self, record: dict) -> None:
        video = record.get("video_id", "?")
        frames = record.get("file_names") or []
        masks = record.get("sem_seg_file_names") or [None] * len(frames)
        valid = record.get("frame_valid") or [True] * len(frames)
        real = [path for path in frames if path is not None]
        if not real:
            self.report(video, "clip has no frame")
            return
        folder = os.path.dirname(real[0])
        if not os.path.isdir(folder):
            source = self.metadata.get("metadata_file", "the dataset")
            self.report(folder, f"clip {video!r} listed in {source} points nowhere")
            return
        expected = self.metadata.get("num_frames")
        if expected and len(frames) != expected:
            self.report(video, f"clip has {len(frames)} frames, the dataset expects {expected}")
        if not (len(masks) == len(frames) == len(valid)):
            self.report(
                video,
                f"{len(frames)} frames, {len(masks)} mask entries, {len(valid)} validity flags",
            )
            return
        if self.metadata.get("subset") in AVSBENCH_SUBSETS:
            self.check_extra_frames(folder, video, real)

        clip_size, frame_sizes = None, []
        for frame, mask in zip(frames, masks):
            frame_sizes.append(None)
            if frame is None:
                if mask is not None:
                    self.report(mask, "mask given for a padded (missing) frame")
                continue
            size = frame_sizes[-1] = self.check_frame(frame)
            if size is not None:
                if clip_size is None:
                    clip_size = size
                elif size != clip_size:
                    self.report(
                        frame, f"size {size} differs from the clip's first frame {clip_size}"
                    )
            if mask is not None:
                self.check_mask(mask, size, record.get("mask_format", "binary"))
        if self.maskige_folder:
            self.check_maskiges(record, frame_sizes)
        self.check_audio(record.get("audio_file_name"), video, sum(valid))
        wav = record.get("audio_wav_file_name")
        if self.check_wav and wav and wav != record.get("audio_file_name"):
            self.check_audio(wav, video, sum(valid))

    def check_extra_frames(self, folder: str, video: str, frames: list[str]) -> None:
        # In the AVSBench layout a clip folder holds exactly its frames; more files means the
        # clip is longer than AVSBench says (missing ones are reported frame by frame).
        listed = {os.path.basename(path) for path in frames}
        extra = sorted(
            f
            for f in os.listdir(folder)
            if f.lower().endswith(_IMAGE_EXTENSIONS) and f not in listed
        )
        if extra:
            shown = ", ".join(extra[:_MAX_LISTED]) + (" ..." if len(extra) > _MAX_LISTED else "")
            self.report(
                folder,
                f"{len(extra)} frame files beyond the clip's {len(frames)} (wrong clip length): "
                f"{shown}",
            )

    def check_frame(self, path: str):
        if not os.path.isfile(path):
            self.report(path, "missing frame")
            return None
        try:
            return _frame_size(path)
        except (OSError, SyntaxError, ValueError) as err:
            self.report(path, f"unreadable frame ({err})")
            return None

    def check_mask(self, path: str, frame_size, mask_format: str) -> None:
        if not os.path.isfile(path):
            self.report(path, "missing mask")
            return
        try:
            pixels = mask_pixels(path, mask_format)
        except AVSDataError as err:
            self.report(path, str(err).removeprefix(f"{path}: "))
            return
        if frame_size is not None and pixels.shape != frame_size:
            self.report(path, f"mask size {pixels.shape} differs from its frame {frame_size}")
        palette = self.palette if mask_format == "palette" else None
        problem = invalid_mask_pixels(
            pixels, mask_format, palette=palette, num_classes=self.num_classes
        )
        if problem:
            self.report(path, problem)

    def check_maskiges(self, record: dict, frame_sizes: list) -> None:
        try:
            paths = clip_maskige_files(record, self.maskige_folder)
        except AVSDataError as err:
            self.report(str(record.get("video_id", "?")), str(err))
            return
        allowed_extra = AVSS_MASKIGE_SIZE if self.metadata.get("subset") == "avss" else None
        for path, frame_size in zip(paths, frame_sizes):
            if path is None:
                continue
            if not os.path.isfile(path):
                self.report(path, "missing maskige")
                continue
            try:
                size = _frame_size(path)
            except (OSError, SyntaxError, ValueError) as err:
                self.report(path, f"unreadable maskige ({err})")
                continue
            if frame_size is not None and size not in (frame_size, allowed_extra):
                self.report(path, f"maskige size {size} differs from its frame {frame_size}")

    def check_audio(self, path, video: str, real_frames: int) -> None:
        if not path:
            self.report(video, "no audio file in the record")
            return
        if not os.path.isfile(path):
            self.report(path, "missing audio")
            return
        try:
            examples = load_log_mel(path)
        except AVSDataError as err:
            self.report(path, str(err).removeprefix(f"{path}: "))
            return
        if examples.shape[0] < real_frames:
            self.report(
                path,
                f"{examples.shape[0]} log-mel examples for {real_frames} frames "
                "(audio shorter than the clip)",
            )


def validate_dataset(
    name: str, check_wav: bool = False, maskige_folder: str = ""
) -> tuple[list[str], int]:
    """Problems of one registered dataset (one line each) and the number of clips checked;
    with ``maskige_folder`` (as ``INPUT.MASKIGE_FOLDER``) its maskiges are checked too."""
    if name not in DatasetCatalog.list():
        return [f"{name}: not a registered dataset"], 0
    validator = DatasetValidator(name, check_wav=check_wav, maskige_folder=maskige_folder)
    count = validator.run()
    return validator.problems, count
