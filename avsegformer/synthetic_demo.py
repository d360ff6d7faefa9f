"""The synthetic demo (``make demo``): a CPU-sized model (AVSegFormer by default, COMBO with
``configs/synthetic/combo_tiny_s4.yaml``) trained and tested on CPU in minutes.

The config's training set (``synthetic_{s4,ms3,avss}_train``) picks the layout: S4 by default,
MS3 or AVSS (scored by the semantic evaluator) with the ``*_ms3`` / ``*_avss`` configs.

1. :func:`ensure_synthetic` writes the synthetic dataset of that layout unless it is there.
2. :func:`write_random_vggish` writes the frozen audio front end (no pretrained VGGish can be
   downloaded here).
3. The CPU-sized config trains; ``model_best.pth`` is the checkpoint with the best val mIoU.
4. :func:`evaluate_weights` scores it on the test split with each clip's own audio, under
   negative audio (silence, noise, an off-screen clip's sound: the right masks are empty, see
   :mod:`avsegformer.evaluation.negative_audio`) and with the audio of a clip of another
   category (:mod:`avsegformer.evaluation.shuffled_audio`): if the model listens, the mIoU drops.
5. :func:`comparison_picture` draws frame, ground truth and the predictions side by side;
   :func:`format_report` prints the numbers and checks them against the demo's targets, among
   them the score of predicting every object (:mod:`avsegformer.synthetic_demo_baseline`).
"""

import logging
import os
import re

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from .data.datasets import register_avsbench
from .data.datasets.layout import AVSBENCH_SUBSETS, CLIP_CLASSES_FILE
from .synthetic_demo_baseline import DATA_SEED, NUM_SYNTHETIC_CLASSES, every_object_scores
from .synthetic_demo_picture import (
    comparison_picture,
    negative_picture_columns,
    predictions_folder,
)
from .synthetic_demo_report import (
    TARGET_DROP,
    TARGET_MIOU,
    TARGET_NEGATIVE_SHARE,
    TARGET_SECONDS,
    format_report,
)

__all__ = [
    "FULL_SPLIT_SIZES",
    "QUICK_SPLIT_SIZES",
    "TARGET_MIOU",
    "TARGET_DROP",
    "TARGET_SECONDS",
    "TARGET_NEGATIVE_SHARE",
    "demo_subset",
    "ensure_synthetic",
    "register_synthetic",
    "write_random_vggish",
    "evaluate_weights",
    "comparison_picture",
    "format_report",
    "run_synthetic_demo",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Clips per split of the full and the ``--quick`` dataset. More training clips than AVSBench's
#: proportion: S4 train clips are annotated on one frame only, and the model starts from scratch.
FULL_SPLIT_SIZES = {"train": 400, "val": 60, "test": 60}
QUICK_SPLIT_SIZES = {"train": 6, "val": 2, "test": 4}
FRAME_SIDE = 128
#: Seed of the random VGGish weights.
VGGISH_SEED = 123


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _split_counts(csv_path: str) -> dict:
    import csv

    counts = dict.fromkeys(SPLITS, 0)
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts[row.get("split", "")] = counts.get(row.get("split", ""), 0) + 1
    return counts


def demo_subset(cfg) -> str:
    """The layout (``s4``, ``ms3`` or ``avss``) of the config's ``synthetic_<subset>_train``."""
    train = tuple(cfg.DATASETS.TRAIN)
    match = re.fullmatch(r"synthetic_(\w+)_train", train[0]) if len(train) == 1 else None
    if match is None or match.group(1) not in AVSBENCH_SUBSETS:
        raise ValueError(
            f"the synthetic demo trains on one of synthetic_{{{','.join(AVSBENCH_SUBSETS)}}}"
            f"_train, the config has DATASETS.TRAIN={train}"
        )
    return match.group(1)


def ensure_synthetic(
    root: str, subset: str, split_sizes: dict, *, size: int = FRAME_SIDE, exact: bool = True
) -> str:
    """Write the synthetic ``subset`` layout (``s4``, ``ms3``, ``avss``) under ``root`` unless
    it is there; return its folder (``Single-source``, ``Multi-sources``, ``AVSS``).

    Args:
        split_sizes: clips per split to generate.
        exact: also rewrite an existing dataset whose split sizes differ from ``split_sizes``
            (a dataset left by an older version of the demo); False keeps any complete one.
    """
    layout = AVSBENCH_SUBSETS[subset]
    folder = os.path.join(root, layout["folder"])
    csv_path = os.path.join(folder, layout["metadata_file"])
    # A dataset written before the generator listed every clip's classes lacks exact off-screen
    # audio: rewrite it.
    if os.path.isfile(csv_path) and os.path.isfile(os.path.join(folder, CLIP_CLASSES_FILE)):
        counts = _split_counts(csv_path)
        if not exact or all(counts.get(s, 0) == split_sizes[s] for s in SPLITS):
            logger.info("Synthetic dataset found in %s", folder)
            return folder
        logger.info("%s has %s clips, the demo needs %s: rewriting", folder, counts, split_sizes)
    from .data.synthetic import generate

    logger.info("Generating the synthetic %s dataset in %s ...", subset, folder)
    generate(
        root,
        subsets=(subset,),
        split_sizes=split_sizes,
        num_classes=NUM_SYNTHETIC_CLASSES,
        seed=DATA_SEED,
        size=size,
        progress=False,
    )
    return folder


def register_synthetic(folder: str, subset: str) -> None:
    """Point ``synthetic_<subset>_{train,val,test}`` at ``folder`` (replacing earlier
    registrations)."""
    for split in SPLITS:
        name = f"synthetic_{subset}_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        register_avsbench(name, subset, folder, split)


# ---------------------------------------------------------------------------------------------
# audio front end
# ---------------------------------------------------------------------------------------------
def write_random_vggish(cfg, dataset: str, path: str, max_clips: int = 64) -> str:
    """Write a randomly initialised VGGish to ``path`` (unless it exists) and return ``path``.

    With PyTorch's default initialisation the activations shrink layer after layer, so a random
    VGGish maps every clip to nearly the same embedding (the class-dependent part is ~0.003 of
    its norm). He initialisation with zero biases keeps the differences between sounds (~25% of
    the norm); one scalar, measured on ``dataset``'s audio, scales the embeddings to unit RMS,
    the range the audio projection expects. The network stays frozen, as in the original.
    """
    from torch import nn

    from .data.audio import load_log_mel
    from .modeling import build_audio_backbone

    if os.path.isfile(path):
        return path
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.AUDIO.WEIGHTS, cfg.MODEL.AUDIO.PCA = "", False
    # The front end belongs to the data, not to the run: the same for every training seed.
    torch.manual_seed(VGGISH_SEED)
    vggish = build_audio_backbone(cfg).eval()
    layers = [m for m in vggish.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    records = DatasetCatalog.get(dataset)[:max_clips]
    with torch.no_grad():
        examples = torch.cat([load_log_mel(r["audio_file_name"]) for r in records])
        embeddings = vggish(examples.reshape(-1, 1, *examples.shape[-2:]))
        layers[-1].weight.div_(embeddings.pow(2).mean().sqrt())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(vggish.state_dict(), tmp)
    os.replace(tmp, path)
    logger.info("Random He-initialised VGGish (%d clips of %s) -> %s", len(records), dataset, path)
    return path


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def evaluate_weights(
    cfg,
    weights: str,
    dataset: str,
    *,
    save_predictions: bool,
    precision: str = "fp32",
    negative_audio: bool = False,
) -> dict:
    """AVSBench scores (``mIoU``, ``Fscore``) of ``weights`` on ``dataset``.

    Args:
        precision: ``TEST.PRECISION``: ``fp32``, or ``bf16`` (the model converted to bfloat16).
        negative_audio: also score the negative conditions (``TEST.NEGATIVE_AUDIO``).
        save_predictions: write masks and overlays under
            ``OUTPUT_DIR/inference/<dataset>/predictions``.
    """
    from .checkpoint import load_model_weights
    from .engine import Trainer
    from .modeling.precision import apply_inference_precision

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    cfg.DATASETS.TEST = (dataset,)
    cfg.TEST.AVS.SAVE_PREDICTIONS = save_predictions
    cfg.TEST.NEGATIVE_AUDIO.ENABLED = negative_audio
    cfg.TEST.PRECISION = precision
    cfg.freeze()
    model = Trainer.build_model(cfg)
    load_model_weights(cfg, model)
    apply_inference_precision(model.eval(), precision)
    return Trainer.test(cfg, model)["avs"]


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------
def run_synthetic_demo(
    cfg,
    data_root: str,
    *,
    split_sizes: dict = FULL_SPLIT_SIZES,
    exact_sizes: bool = True,
    train: bool = True,
    precision: str = "fp32",
    config_file: str = "",
) -> dict:
    """Data, the every-object baseline, audio front end, training (unless ``train`` is False:
    then ``MODEL.WEIGHTS`` is evaluated), evaluation with the own and the other audio,
    comparison picture.

    Args:
        cfg: the demo config (frozen); ``OUTPUT_DIR`` receives everything. Its training set
            picks the layout (:func:`demo_subset`).
        data_root: the synthetic dataset root (the layout's folder under it is used).
        split_sizes, exact_sizes: see :func:`ensure_synthetic`.
        config_file: the file ``cfg`` came from, for the log.

    Returns:
        Every number and path of the run (also written to ``OUTPUT_DIR/results.json``).
    """
    import json
    import time

    from detectron2.engine import default_setup
    from detectron2.utils.logger import setup_logger

    from .engine import Trainer
    from .evaluation.shuffled_audio import register_shuffled_audio

    start = time.perf_counter()
    output_dir = cfg.OUTPUT_DIR
    subset = demo_subset(cfg)
    test = f"synthetic_{subset}_test"
    folder = ensure_synthetic(data_root, subset, split_sizes, exact=exact_sizes)
    register_synthetic(folder, subset)
    # Before training: it checks that the dataset is the generator's.
    every_object = every_object_scores(cfg, test)
    if not cfg.MODEL.AUDIO.WEIGHTS:
        vggish = os.path.join(folder, "vggish_random_he.pth")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.AUDIO.WEIGHTS = write_random_vggish(cfg, f"synthetic_{subset}_train", vggish)
        cfg.freeze()
    # Logging to OUTPUT_DIR/log.txt, config.yaml, environment, seed.
    default_setup(cfg, argparse_namespace(config_file=config_file, eval_only=not train))
    setup_logger(output=output_dir, name="avsegformer")

    train_start = time.perf_counter()
    if train:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    train_seconds = time.perf_counter() - train_start
    weights = best_weights(output_dir) if train else cfg.MODEL.WEIGHTS
    logger.info("Evaluating %s", weights)

    other = register_shuffled_audio(test, f"{test}_other_audio")
    results = {
        "model": cfg.MODEL.META_ARCHITECTURE,
        "subset": subset,
        "weights": weights,
        "precision": precision,
        "seed": cfg.SEED,
        "trained": train,
    }
    results["negatives_trained"] = cfg.INPUT.NEGATIVE_AUDIO.PROB > 0
    for key, dataset in (("test", test), ("shuffled_audio", other)):
        results[key] = evaluate_weights(
            cfg,
            weights,
            dataset,
            save_predictions=True,
            precision=precision,
            negative_audio=key == "test",
        )
    results["miou_drop"] = results["test"]["mIoU"] - results["shuffled_audio"]["mIoU"]
    results["every_object"] = every_object
    results["predictions"] = predictions_folder(output_dir, test)
    results["comparison_picture"] = comparison_picture(
        DatasetCatalog.get(other),
        results["predictions"],
        predictions_folder(output_dir, other),
        os.path.join(output_dir, "comparison_grid.jpg"),
        negatives=negative_picture_columns(output_dir, test, cfg.TEST.NEGATIVE_AUDIO.CONDITIONS),
    )
    results["train_seconds"] = train_seconds
    results["seconds"] = time.perf_counter() - start
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def argparse_namespace(**kwargs):
    """The ``args`` Detectron2's ``default_setup`` reads (``config_file``, ``eval_only``)."""
    import argparse

    return argparse.Namespace(**{"config_file": "", "eval_only": False, **kwargs})


def best_weights(output_dir: str) -> str:
    """``model_best.pth`` (best val mIoU) of a training run, else its ``model_final.pth``."""
    for name in ("model_best.pth", "model_final.pth"):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no model_best.pth or model_final.pth in {output_dir}")
