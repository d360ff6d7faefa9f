"""AVSBench evaluator: S4/MS3 J and F, AVSS per-class mIoU and F, as the official code scores them.

The evaluator keeps per-clip statistics (per-frame IoUs and F curves, or per-class sums), gathers
them on the main process and recombines them in dataset order, so the numbers do not depend on
the number of processes or on the test batch size. The one protocol detail that depends on
batching, the S4/MS3 F-measure, is computed over groups of ``fscore_group_size`` consecutive
clips in dataset order, the reference's test batch (see :mod:`avsegformer.evaluation.metrics`).
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from . import accumulation
from .ground_truth import read_clip_ground_truth
from .prediction_images import save_clip_predictions

__all__ = ["AVSBenchEvaluator"]

logger = logging.getLogger(__name__)

PADDED_FRAME_MODES = ("official", "real")
RESULTS_FILE = "avs_results.json"


class AVSBenchEvaluator(DatasetEvaluator):
    """Scores clip predictions on an AVSBench-style dataset (S4, MS3, AVSS or a user dataset).

    ``process`` takes the model's eval outputs ``{"sem_seg": float32 [T, K, h, w]}``
    (probabilities: K = 1 sigmoid for the binary task, K classes softmax for the semantic one)
    and reads each frame's ground truth from the input's ``sem_seg_file_names``, resized with PIL
    nearest to the prediction size, which must be the input's ``(height, width)`` when given (the
    mapper sets it from ``TEST.AVS.EVAL_SIZE``: 512x512 for the original S4/MS3 protocol, or the
    ground truth's own size). Frames without a ground-truth file (None) are skipped.

    ``evaluate`` returns ``{"avs": {...}}`` on the main process (fractions in [0, 1]):

    * binary task: ``mIoU`` (per-frame J, empty-ground-truth rule), ``Fscore`` (groups of
      ``fscore_group_size`` clips), and ``Fscore_group{1,2,4}`` for comparison with COMBO,
      AVSegFormer and the official ``test.sh``;
    * semantic task: ``mIoU``/``Fscore`` over all classes, ``*_no_background`` (class 0 dropped)
      and ``*_noBg_official`` (the reference's buggy "noBg", class K-1 dropped).

    It also writes the results and per-class values as JSON into ``output_dir``.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: str | None = None,
        distributed: bool = True,
        fscore_group_size: int = 2,
        avss_padded_frames: str = "official",
        save_predictions: bool = False,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``task`` ("binary" or
                "semantic"), ``stuff_classes`` and, for the semantic task, ``stuff_colors`` (the
                ground-truth palette) and ``num_frames`` (frames a clip is padded to).
            output_dir: where the JSON results and the optional prediction images go.
            distributed: gather the statistics of every process (the main process scores).
            fscore_group_size: clips per S4/MS3 F-measure group (the reference's test batch).
            avss_padded_frames: "official": every frame a semantic clip lacks to reach
                ``num_frames`` (``frame_valid`` False, or missing) counts as a perfectly predicted
                background frame, as the official code and AVSegFormer score padded v1 clips;
                "real": only real frames are scored (COMBO).
            save_predictions: write ``output_dir/predictions/<video_id>/<frame>.png`` (binary
                0/255, or the class palette) and ``<frame>_overlay.jpg`` per scored frame.
        """
        if fscore_group_size < 1:
            raise ValueError(f"fscore_group_size must be >= 1, got {fscore_group_size}")
        if avss_padded_frames not in PADDED_FRAME_MODES:
            raise ValueError(
                f"avss_padded_frames must be one of {PADDED_FRAME_MODES}, got "
                f"{avss_padded_frames!r}"
            )
        if save_predictions and not output_dir:
            raise ValueError("save_predictions needs an output_dir")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._fscore_group_size = fscore_group_size
        self._padded_frames = avss_padded_frames
        self._save_predictions = save_predictions

        meta = MetadataCatalog.get(dataset_name)
        task = getattr(meta, "task", None)
        if task not in ("binary", "semantic"):
            raise ValueError(
                f"dataset {dataset_name!r} needs metadata task='binary' or 'semantic', got {task!r}"
            )
        self._task = task
        self._num_frames = getattr(meta, "num_frames", None)
        self._mask_format = getattr(meta, "mask_format", None) or (
            "binary" if task == "binary" else "palette"
        )
        if task == "semantic":
            colors = getattr(meta, "stuff_colors", None)
            if not colors:
                raise ValueError(f"semantic dataset {dataset_name!r} has no stuff_colors palette")
            self._palette = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
            self._num_classes = len(self._palette)
        else:
            self._palette = None
            self._num_classes = 1
        self._clips: List[Dict[str, Any]] = []

    @classmethod
    def from_config(cls, cfg, dataset_name, output_dir=None, distributed=True):
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "distributed": distributed,
            "fscore_group_size": cfg.TEST.AVS.FSCORE_GROUP_SIZE,
            "avss_padded_frames": cfg.TEST.AVS.AVSS_PADDED_FRAMES,
            "save_predictions": cfg.TEST.AVS.SAVE_PREDICTIONS,
        }

    def reset(self):
        self._clips = []

    def process(self, inputs, outputs):
        """Score each clip's frames.

        Args:
            inputs: clip dicts with ``sem_seg_file_names`` (list, None = not annotated),
                ``video_id``, optional ``frame_valid`` [T] and ``file_names`` (for overlays).
            outputs: one ``{"sem_seg": [T, K, h, w]}`` per clip (probabilities).
        """
        for clip, output in zip(inputs, outputs):
            probs = self._checked_probs(clip, output)
            video_id = str(clip.get("video_id", ""))
            frames = self._scored_frames(clip, probs.shape[0])
            gt = read_clip_ground_truth(
                clip["sem_seg_file_names"] if frames else [],
                frames,
                clip.get("mask_format") or self._mask_format,
                self._palette,
                tuple(probs.shape[-2:]),
                binary=self._task == "binary",
            )
            if self._task == "binary":
                record = accumulation.binary_clip_stats(probs[frames, 0], gt)
            else:
                record = accumulation.semantic_clip_stats(
                    probs[frames].argmax(1),
                    gt,
                    self._num_classes,
                    self._num_padded_frames(clip, probs.shape[0]),
                )
            record["video_id"] = video_id
            record["num_scored_frames"] = len(frames)
            self._clips.append(record)
            if self._save_predictions:
                save_clip_predictions(
                    os.path.join(self._output_dir, "predictions", video_id or "clip"),
                    probs,
                    frames,
                    list(clip.get("file_names") or []),
                    self._palette,
                )

    def _checked_probs(self, clip: Dict[str, Any], output: Dict[str, Any]) -> torch.Tensor:
        """The clip's ``sem_seg`` on the CPU in float32 [T, K, h, w], or a ValueError naming
        the clip when its shape, range or size is wrong."""
        probs = output["sem_seg"].detach().to("cpu", torch.float32)
        video_id = str(clip.get("video_id", ""))
        if probs.dim() != 4 or probs.shape[1] != self._num_classes:
            raise ValueError(
                f"clip {video_id!r} of {self._dataset_name}: expected sem_seg [T, K, h, w] "
                f"with K = {self._num_classes}, got {tuple(probs.shape)}"
            )
        if probs.numel() and not (
            torch.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
        ):
            # Logits passed by mistake would be thresholded at 0.5 instead of 0.
            raise ValueError(
                f"clip {video_id!r} of {self._dataset_name}: sem_seg must hold probabilities "
                f"in [0, 1], got values in [{probs.min().item():.4g}, "
                f"{probs.max().item():.4g}]"
            )
        expected_size = (clip.get("height"), clip.get("width"))
        if all(expected_size) and tuple(probs.shape[-2:]) != tuple(expected_size):
            # Scoring at another size would silently change every number.
            raise ValueError(
                f"clip {video_id!r} of {self._dataset_name}: the prediction is "
                f"{tuple(probs.shape[-2:])} but the input asks for (height, width) = "
                f"{tuple(expected_size)}"
            )
        return probs

    def evaluate(self):
        clips = self._gathered_clips()
        if clips is None:
            return None
        if not clips:
            logger.warning("AVSBenchEvaluator on %s got no predictions", self._dataset_name)
            return OrderedDict({"avs": {}})
        if self._task == "binary":
            results, details = accumulation.binary_results(clips, self._fscore_group_size)
        else:
            results, details = accumulation.semantic_results(
                clips, self._num_classes, self._padded_frames
            )
            details["class_names"] = self._class_names()
        self._write_json(results, details, num_clips=len(clips))
        logger.info("AVSBench results on %s: %s", self._dataset_name, results)
        return OrderedDict({"avs": results})

    def _gathered_clips(self) -> List[Dict[str, Any]] | None:
        """Every process's clip statistics in dataset order on the main process; None on the
        others."""
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._clips, dst=0)
            if not comm.is_main_process():
                return None
        else:
            gathered = [self._clips]
        return self._in_dataset_order(gathered)

    # ---------------------------------------------------------------------------------------
    # per clip
    # ---------------------------------------------------------------------------------------
    def _frame_valid(self, clip: Dict[str, Any], num_frames: int) -> List[bool]:
        valid = clip.get("frame_valid")
        if valid is None:
            return [True] * num_frames
        valid = [bool(v) for v in (valid.tolist() if torch.is_tensor(valid) else valid)]
        if len(valid) != num_frames:
            raise ValueError(
                f"clip {clip.get('video_id')!r}: frame_valid has {len(valid)} entries but the "
                f"prediction has {num_frames} frames"
            )
        return valid

    def _scored_frames(self, clip: Dict[str, Any], num_frames: int) -> List[int]:
        """Indices of the real, annotated frames of a clip."""
        valid = self._frame_valid(clip, num_frames)
        files = list(clip.get("sem_seg_file_names") or [])
        if len(files) > num_frames:
            raise ValueError(
                f"clip {clip.get('video_id')!r}: {len(files)} ground-truth files but the "
                f"prediction has {num_frames} frames"
            )
        return [t for t in range(num_frames) if valid[t] and t < len(files) and files[t]]

    def _num_padded_frames(self, clip: Dict[str, Any], num_output_frames: int) -> int:
        """Frames the clip lacks to reach the dataset's clip length (``frame_valid`` False, or
        not in the output at all)."""
        num_real = sum(self._frame_valid(clip, num_output_frames))
        target_frames = max(self._num_frames or 0, num_output_frames)
        return max(target_frames - num_real, 0)

    # ---------------------------------------------------------------------------------------
    # split level
    # ---------------------------------------------------------------------------------------
    def _in_dataset_order(self, gathered: Sequence[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
        """Flatten the per-process clip lists and sort them in dataset order.

        The order comes from the dataset's own record list (by ``video_id``); when that is not
        available or ambiguous, process order then arrival order is used, which is the dataset
        order under Detectron2's InferenceSampler (contiguous shards).
        """
        clips = [clip for part in gathered for clip in part]
        order = self._dataset_order()
        if order is None:
            return clips
        missing = [c["video_id"] for c in clips if c["video_id"] not in order]
        if missing:
            logger.warning(
                "%d evaluated clips (e.g. %r) are not in dataset %s; keeping arrival order",
                len(missing),
                missing[0],
                self._dataset_name,
            )
            return clips
        return sorted(clips, key=lambda c: order[c["video_id"]])

    def _dataset_order(self) -> Dict[str, int] | None:
        if self._dataset_name not in DatasetCatalog.list():
            return None
        records = DatasetCatalog.get(self._dataset_name)
        order: Dict[str, int] = {}
        for index, record in enumerate(records):
            video_id = str(record.get("video_id", ""))
            if video_id in order:
                logger.warning(
                    "dataset %s has the video_id %r twice; F-score groups follow arrival order",
                    self._dataset_name,
                    video_id,
                )
                return None
            order[video_id] = index
        return order

    def _class_names(self) -> List[str]:
        # AVSS reads its names from label2idx.json on first access; the names are only labels.
        try:
            return list(MetadataCatalog.get(self._dataset_name).get("stuff_classes") or [])
        except (OSError, ValueError) as err:
            logger.warning("no class names for %s: %s", self._dataset_name, err)
            return []

    def _write_json(self, results, details, num_clips: int) -> None:
        if not self._output_dir:
            return
        PathManager.mkdirs(self._output_dir)
        payload = {
            "dataset": self._dataset_name,
            "task": self._task,
            "num_clips": num_clips,
            "results": results,
            **details,
        }
        with PathManager.open(os.path.join(self._output_dir, RESULTS_FILE), "w") as f:
            json.dump(payload, f, indent=2)
