"""Evaluation under negative audio: does the model draw a mask when nothing it sees is heard?

With ``TEST.NEGATIVE_AUDIO.ENABLED`` every test dataset is scored once with each clip's own
audio (the usual mIoU and F) and once per condition of ``TEST.NEGATIVE_AUDIO.CONDITIONS``
(``silence``, ``noise``, ``offscreen``: see :mod:`avsegformer.data.negative_audio`). Each
condition is a derived dataset, ``<dataset>_negative_<condition>`` (:func:`register_negative_audio`),
run through the normal test loader, so every meta-architecture is scored the same way.
:class:`NegativeAudioEvaluator` counts over the real frames of every clip:

* ``fg_frame_share``: the share of frames with any predicted foreground (binary task: a pixel
  whose probability is > 0.5; semantic task: a pixel whose argmax is not background);
* ``fg_area``: the mean over frames of the share of the frame predicted as foreground.

The right answer is 0 for both. The summary number rewards segmenting the sounding objects with
the right audio *and* drawing nothing under negatives (:func:`listening_score`)::

    listening_score = 2 m r / (m + r),  m = mIoU with the own audio,
                                        r = 1 - mean over the conditions of fg_frame_share

(the harmonic mean: 0 when either part is 0, 1 only for a perfect mIoU and no foreground under
any negative). The keys added to the ``avs`` results are ``negative/<condition>/fg_frame_share``,
``negative/<condition>/fg_area``, ``negative/fg_frame_share`` (the mean) and
``listening_score``. Every count is per clip, combined in dataset order: the numbers do not
depend on the number of processes or on the test batch size.
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.negative_audio import check_conditions, mark_negative
from ..data.offscreen import offscreen_records
from .avsbench_evaluation import AVSBenchEvaluator
from .prediction_images import save_clip_predictions
from .shuffled_audio import register_derived_dataset

__all__ = [
    "NegativeAudioEvaluator",
    "add_negative_audio_results",
    "evaluate_negative_audio",
    "format_negative_audio_table",
    "listening_score",
    "negative_audio_records",
    "negative_audio_summary",
    "negative_dataset_name",
    "predicted_foreground",
    "register_negative_audio",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "negative_audio_results.json"


def predicted_foreground(probs: torch.Tensor, binary: bool) -> torch.Tensor:
    """Foreground pixels of predictions ``probs`` float [F, K, H, W]: ``p > 0.5`` (binary, K = 1)
    or argmax != 0 (semantic). Returns bool [F, H, W]."""
    return probs[:, 0] > 0.5 if binary else probs.argmax(1) != 0


def listening_score(miou: float, fg_frame_shares) -> float:
    """Harmonic mean of ``miou`` and 1 - the mean of ``fg_frame_shares`` (see the module)."""
    shares = list(fg_frame_shares)
    rejection = 1.0 - (sum(shares) / len(shares) if shares else 0.0)
    if miou <= 0 or rejection <= 0:
        return 0.0
    return 2.0 * miou * rejection / (miou + rejection)


class NegativeAudioEvaluator(AVSBenchEvaluator):
    """Foreground statistics of a dataset heard under one negative condition.

    ``process`` takes the same ``{"sem_seg": [T, K, h, w]}`` outputs as
    :class:`AVSBenchEvaluator` (probabilities) and reads no ground truth: under a negative
    condition every real frame (``frame_valid``) should be empty. ``evaluate`` returns
    ``{"negative_audio": {"fg_frame_share", "fg_area", "num_frames", "num_clips"}}`` on the main
    process and writes it to ``output_dir/negative_audio_results.json``.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        condition: str,
        output_dir: str | None = None,
        distributed: bool = True,
        save_predictions: bool = False,
    ):
        super().__init__(
            dataset_name,
            output_dir=output_dir,
            distributed=distributed,
            save_predictions=save_predictions,
        )
        self._condition = check_conditions([condition])[0]

    def process(self, inputs, outputs):
        for clip, output in zip(inputs, outputs):
            probs = self._checked_probs(clip, output)
            video_id = str(clip.get("video_id", ""))
            frames = [t for t, ok in enumerate(self._frame_valid(clip, probs.shape[0])) if ok]
            foreground = predicted_foreground(probs[frames], self._task == "binary").flatten(1)
            self._clips.append(
                {
                    "video_id": video_id,
                    "num_frames": len(frames),
                    "num_fg_frames": int(foreground.any(1).sum()),
                    "fg_area_sum": float(foreground.double().mean(1).sum()) if frames else 0.0,
                }
            )
            if self._save_predictions:
                save_clip_predictions(
                    os.path.join(self._output_dir, "predictions", video_id or "clip"),
                    probs,
                    frames,
                    list(clip.get("file_names") or []),
                    self._palette,
                )

    def evaluate(self):
        clips = self._gathered_clips()
        if clips is None:
            return None
        num_frames = sum(c["num_frames"] for c in clips)
        results = {
            "fg_frame_share": sum(c["num_fg_frames"] for c in clips) / max(num_frames, 1),
            "fg_area": sum(c["fg_area_sum"] for c in clips) / max(num_frames, 1),
            "num_frames": num_frames,
            "num_clips": len(clips),
        }
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            payload = {"dataset": self._dataset_name, "condition": self._condition, **results}
            with PathManager.open(os.path.join(self._output_dir, RESULTS_FILE), "w") as f:
                json.dump(payload, f, indent=2)
        return OrderedDict({"negative_audio": results})


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
def negative_dataset_name(source: str, condition: str) -> str:
    return f"{source}_negative_{condition}"


def negative_audio_records(
    records: list[dict],
    condition: str,
    *,
    seed: int = 0,
    noise_color: str = "white",
    noise_level_db: float = -20.0,
    palette=None,
    dataset: str = "",
) -> list[dict]:
    """``records`` under ``condition`` (each marked, see
    :func:`~avsegformer.data.negative_audio.mark_negative`; ``offscreen`` also hears its donor's
    files and leaves out clips without a donor)."""
    if condition == "offscreen":
        return offscreen_records(records, seed, palette, dataset)
    return [
        mark_negative(
            r, condition, seed=seed, noise_color=noise_color, noise_level_db=noise_level_db
        )
        for r in records
    ]


def register_negative_audio(
    source: str,
    condition: str,
    *,
    seed: int = 0,
    noise_color: str = "white",
    noise_level_db: float = -20.0,
) -> str:
    """Register :func:`negative_dataset_name` as ``source`` under ``condition`` (same metadata,
    replacing an earlier registration). Returns the name."""
    check_conditions([condition])
    meta = MetadataCatalog.get(source)
    palette = meta.get("stuff_colors") if meta.get("task") == "semantic" else None

    def derive(records):
        return negative_audio_records(
            records,
            condition,
            seed=seed,
            noise_color=noise_color,
            noise_level_db=noise_level_db,
            palette=palette,
            dataset=source,
        )

    return register_derived_dataset(source, negative_dataset_name(source, condition), derive)


# ---------------------------------------------------------------------------------------------
# the evaluation and its report
# ---------------------------------------------------------------------------------------------
def evaluate_negative_audio(cfg, model, dataset_name: str, build_test_loader) -> Dict[str, Any]:
    """Run ``model`` on ``dataset_name`` under each condition of ``TEST.NEGATIVE_AUDIO``.

    Args:
        build_test_loader: ``(cfg, dataset_name) -> loader`` (the trainer's).

    Returns:
        ``{condition: {"fg_frame_share", "fg_area", ...}}`` on the main process (empty dicts on
        the others). Predictions are saved under ``OUTPUT_DIR/inference/<derived name>`` with
        ``TEST.AVS.SAVE_PREDICTIONS``.
    """
    n, t = cfg.INPUT.NEGATIVE_AUDIO, cfg.TEST.NEGATIVE_AUDIO
    per_condition = {}
    for condition in check_conditions(t.CONDITIONS, "TEST.NEGATIVE_AUDIO"):
        name = register_negative_audio(
            dataset_name,
            condition,
            seed=t.SEED,
            noise_color=n.NOISE_COLOR,
            noise_level_db=n.NOISE_LEVEL_DB,
        )
        evaluator = NegativeAudioEvaluator(
            name,
            condition=condition,
            output_dir=os.path.join(cfg.OUTPUT_DIR, "inference", name),
            save_predictions=cfg.TEST.AVS.SAVE_PREDICTIONS,
        )
        results = inference_on_dataset(model, build_test_loader(cfg, name), evaluator)
        per_condition[condition] = (results or {}).get("negative_audio", {})
    return per_condition


def negative_audio_summary(avs_results: Dict[str, float], per_condition: Dict[str, Any]):
    """The keys added to the ``avs`` results (see the module) from the own-audio ``mIoU`` and
    :func:`evaluate_negative_audio`'s output."""
    summary = {}
    for condition, stats in per_condition.items():
        summary[f"negative/{condition}/fg_frame_share"] = float(stats["fg_frame_share"])
        summary[f"negative/{condition}/fg_area"] = float(stats["fg_area"])
    shares = [float(s["fg_frame_share"]) for s in per_condition.values()]
    summary["negative/fg_frame_share"] = sum(shares) / len(shares) if shares else 0.0
    summary["listening_score"] = listening_score(float(avs_results.get("mIoU", 0.0)), shares)
    return summary


def format_negative_audio_table(avs_results: Dict[str, float]) -> str:
    """One row per audio condition: mIoU and F with the own audio; the share of frames with a
    predicted mask and the mean mask area under each negative; then the listening score."""
    lines = [f"{'audio':12s} {'mIoU':>8s} {'F-score':>8s} {'frames w/ mask':>15s} {'area':>8s}"]
    lines.append(f"{'own':12s} {avs_results['mIoU']:8.4f} {avs_results['Fscore']:8.4f}")
    prefix = "negative/"
    conditions = [
        k[len(prefix) : -len("/fg_frame_share")]
        for k in avs_results
        if k.startswith(prefix) and k.endswith("/fg_frame_share") and k.count("/") == 2
    ]
    for c in conditions:
        share, area = (
            avs_results[f"{prefix}{c}/fg_frame_share"],
            avs_results[f"{prefix}{c}/fg_area"],
        )
        lines.append(f"{c:12s} {'':8s} {'':8s} {share:15.4f} {area:8.4f}")
    lines.append(f"listening score: {avs_results['listening_score']:.4f}")
    return "\n".join(lines)


def add_negative_audio_results(cfg, model, results, build_test_loader):
    """Add the negative-audio keys to the ``avs`` results of every dataset of
    ``DATASETS.TEST``; ``results`` is what ``DefaultTrainer.test`` returned (one dataset: its
    results; several: ``{dataset: results}``). Returns ``results``, updated in place."""
    names = list(cfg.DATASETS.TEST)
    per_dataset = {names[0]: results} if len(names) == 1 else results
    for name in names:
        per_condition = evaluate_negative_audio(cfg, model, name, build_test_loader)
        avs = (per_dataset.get(name) or {}).get("avs")
        if not comm.is_main_process() or not avs:
            continue
        avs.update(negative_audio_summary(avs, per_condition))
        logger.info("Negative audio on %s:\n%s", name, format_negative_audio_table(avs))
    return results
