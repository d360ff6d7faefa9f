#!/usr/bin/env python
"""``make demo``: train and evaluate AVSegFormer on a synthetic S4-layout dataset, on CPU.

1. Generate ``$DETECTRON2_DATASETS/synthetic_avsbench/Single-source`` (128x128 frames) if it is
   missing (:mod:`avsegformer.data.synthetic`).
2. Train ``configs/synthetic/avsegformer_tiny_s4.yaml`` (the paper's meta-architecture, CPU-sized),
   keeping the best checkpoint by val mIoU.
3. Evaluate it on the test split, writing prediction masks and overlays.
4. Evaluate again with every clip's audio replaced by the audio of a clip of another category:
   if the model listens, the mIoU drops (silent objects look exactly like sounding ones).
5. Print mIoU / F-score of both runs, the drop, and the wall time.

``--quick`` runs the same steps on a tiny dataset for a few iterations (used by the tests).
Outputs go to ``--output-dir`` (default ``output/demo``); ``results.json`` has every number.
"""

import argparse
import copy
import json
import logging
import os
import sys
import time

from avsegformer.config import setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

logger = logging.getLogger("avsegformer.demo")

DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "avsegformer_tiny_s4.yaml")
SPLITS = ("train", "val", "test")
#: Clips per split of the full and the --quick dataset.
FULL_SPLIT_SIZES = {"train": 200, "val": 40, "test": 40}
QUICK_SPLIT_SIZES = {"train": 6, "val": 2, "test": 4}
FRAME_SIDE = 128
#: Targets of the demo on a 2-core machine (issue #6).
TARGET_MIOU = 0.70
TARGET_DROP = 0.20
TARGET_SECONDS = 15 * 60
#: Overrides of --quick: a handful of iterations, one evaluation on val, one checkpoint.
QUICK_OPTS = [
    "SOLVER.MAX_ITER", "4",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "SOLVER.IMS_PER_BATCH", "2",
    "TEST.EVAL_PERIOD", "2",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, a few iterations")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--output-dir", default=None, help="default: output/demo[_quick]")
    parser.add_argument(
        "--data-root",
        default=None,
        help="synthetic dataset root (default: $DETECTRON2_DATASETS/synthetic_avsbench[_quick])",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--skip-train", action="store_true", help="only evaluate MODEL.WEIGHTS (give it in opts)"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="numeric precision of the evaluations (bf16: CPU autocast / AMP on GPU)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def ensure_dataset(root: str, quick: bool) -> str:
    """Generate the synthetic S4 layout under ``root`` unless it is complete; return its folder."""
    folder = os.path.join(root, "Single-source")
    if os.path.isfile(os.path.join(folder, "s4_meta_data.csv")):
        logger.info("Synthetic dataset found in %s", folder)
        return folder
    from avsegformer.data.synthetic import generate

    logger.info("Generating the synthetic S4 dataset in %s ...", folder)
    generate(
        root,
        subsets=("s4",),
        split_sizes=QUICK_SPLIT_SIZES if quick else FULL_SPLIT_SIZES,
        size=FRAME_SIDE,
        progress=False,
    )
    return folder


def register_synthetic(folder: str) -> None:
    """Point ``synthetic_s4_{train,val,test}`` at ``folder`` (replacing earlier registrations)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from avsegformer.data.datasets.avsbench import register_avsbench

    for split in SPLITS:
        name = f"synthetic_s4_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_avsbench(name, "s4", folder, split)


def register_shuffled_audio(source: str, name: str, seed: int = 0) -> str:
    """Register ``name``: the clips of ``source`` with each clip's audio taken from a clip of a
    different category (a fixed random pairing), everything else unchanged."""
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog

    def load():
        records = DatasetCatalog.get(source)
        rng = np.random.default_rng(seed)
        shuffled = []
        for record in records:
            others = [r for r in records if r.get("category") != record.get("category")]
            if not others:  # one category only: any other clip
                others = [r for r in records if r is not record] or [record]
            donor = others[int(rng.integers(len(others)))]
            record = copy.deepcopy(record)
            record["audio_file_name"] = donor["audio_file_name"]
            shuffled.append(record)
        return shuffled

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    metadata = MetadataCatalog.get(source).as_dict()
    metadata.pop("name", None)
    MetadataCatalog.get(name).set(**metadata)
    return name


def make_audio_front_end(cfg, dataset: str, path: str, max_clips: int = 64) -> str:
    """Write a randomly initialised VGGish for the demo and return its path.

    No pretrained VGGish can be downloaded here. With PyTorch's default initialisation the
    activations shrink layer after layer, so a random VGGish maps every clip to nearly the same
    embedding (the class-dependent part is ~0.003 of its norm). He initialisation with zero
    biases keeps the differences between sounds (~25% of the norm); one scalar, measured on
    ``dataset``'s audio, scales the embeddings to unit RMS, the range the audio projection
    expects. The network stays frozen, as in the original; nothing else is fitted.
    """
    import torch
    from detectron2.data import DatasetCatalog
    from torch import nn

    from avsegformer.data.audio import load_log_mel
    from avsegformer.modeling import build_audio_backbone

    if os.path.isfile(path):
        return path
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.AUDIO.WEIGHTS, cfg.MODEL.AUDIO.PCA = "", False
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
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


def build_cfg(args, output_dir: str):
    quick_opts = QUICK_OPTS if args.quick else []
    return setup_cfg(args.config_file, [*quick_opts, *args.opts, "OUTPUT_DIR", output_dir])


def train(cfg) -> None:
    from avsegformer.engine import Trainer

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()


def best_weights(output_dir: str) -> str:
    for name in ("model_best.pth", "model_final.pth"):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no model_best.pth or model_final.pth in {output_dir}")


def evaluate(cfg, weights: str, dataset: str, *, save_predictions: bool, precision: str) -> dict:
    import contextlib

    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from avsegformer.engine import Trainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (dataset,)
    cfg.TEST.AVS.SAVE_PREDICTIONS = save_predictions
    cfg.freeze()
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    autocast = contextlib.nullcontext()
    if precision == "bf16":
        autocast = torch.autocast(device_type=cfg.MODEL.DEVICE.split(":")[0], dtype=torch.bfloat16)
    with autocast:
        return Trainer.test(cfg, model)["avs"]


def overlay_grid(predictions: str, path: str, max_clips: int = 4) -> str | None:
    """One JPEG with the overlays of the first ``max_clips`` test clips (a row per clip)."""
    from PIL import Image

    clips = sorted(
        d for d in os.listdir(predictions) if os.path.isdir(os.path.join(predictions, d))
    )
    rows = []
    for clip in clips[:max_clips]:
        folder = os.path.join(predictions, clip)
        names = sorted(n for n in os.listdir(folder) if n.endswith("_overlay.jpg"))
        rows.append([Image.open(os.path.join(folder, n)).convert("RGB") for n in names])
    if not rows or not rows[0]:
        return None
    width, height = rows[0][0].size
    grid = Image.new("RGB", (width * max(len(r) for r in rows), height * len(rows)))
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            grid.paste(image.resize((width, height)), (x * width, y * height))
    grid.save(path, quality=90)
    return path


def report(results: dict, quick: bool) -> str:
    test, shuffled = results["test"], results["shuffled_audio"]
    drop = test["mIoU"] - shuffled["mIoU"]
    lines = [
        "",
        f"AVSegFormer (tiny, CPU, {results['precision']}) on the synthetic S4 test split"
        + (" [--quick: not trained to the targets]" if quick else ""),
        f"  {'':24s} {'mIoU':>8s} {'F-score':>8s}",
        f"  {'audio of the clip':24s} {test['mIoU']:8.4f} {test['Fscore']:8.4f}",
        f"  {'audio of another clip':24s} {shuffled['mIoU']:8.4f} {shuffled['Fscore']:8.4f}",
        f"  mIoU drop without the right audio: {drop:.4f}",
        f"  wall time: {results['seconds'] / 60:.1f} min "
        f"(train {results['train_seconds'] / 60:.1f} min)",
        f"  predictions and overlays: {results['predictions']}",
        f"  overview picture: {results['overlay_grid']}",
    ]
    if not quick and results["trained"]:
        checks = [
            (f"test mIoU >= {TARGET_MIOU}", test["mIoU"] >= TARGET_MIOU),
            (f"shuffled-audio drop >= {TARGET_DROP}", drop >= TARGET_DROP),
            (f"wall time < {TARGET_SECONDS // 60} min", results["seconds"] < TARGET_SECONDS),
        ]
        lines += [f"  [{'ok' if ok else 'MISSED'}] {text}" for text, ok in checks]
    return "\n".join(lines)


def main(argv=None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    import torch
    from detectron2.engine import default_setup
    from detectron2.utils.logger import setup_logger

    torch.set_num_threads(args.threads)
    suffix = "_quick" if args.quick else ""
    output_dir = args.output_dir or os.path.join(REPO, "output", f"demo{suffix}")
    data_root = args.data_root or os.path.join(
        os.environ.get("DETECTRON2_DATASETS", os.path.join(REPO, "datasets")),
        f"synthetic_avsbench{suffix}",
    )
    cfg = build_cfg(args, output_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    folder = ensure_dataset(data_root, args.quick)
    register_synthetic(folder)
    if not cfg.MODEL.AUDIO.WEIGHTS:
        weights = make_audio_front_end(
            cfg, "synthetic_s4_train", os.path.join(folder, "vggish_random_he.pth")
        )
        cfg.defrost()
        cfg.MODEL.AUDIO.WEIGHTS = weights
        cfg.freeze()
    # Logging to OUTPUT_DIR/log.txt, config.yaml, environment, SEED.
    default_setup(cfg, argparse.Namespace(config_file=args.config_file, eval_only=False))
    setup_logger(output=output_dir, name="avsegformer")

    train_start = time.perf_counter()
    if not args.skip_train:
        train(cfg)
    train_seconds = time.perf_counter() - train_start
    weights = cfg.MODEL.WEIGHTS if args.skip_train else best_weights(output_dir)
    logger.info("Evaluating %s", weights)

    shuffled_name = register_shuffled_audio("synthetic_s4_test", "synthetic_s4_test_other_audio")
    results = {
        "weights": weights,
        "precision": args.precision,
        "test": evaluate(
            cfg, weights, "synthetic_s4_test", save_predictions=True, precision=args.precision
        ),
        "shuffled_audio": evaluate(
            cfg, weights, shuffled_name, save_predictions=False, precision=args.precision
        ),
        "predictions": os.path.join(output_dir, "inference", "synthetic_s4_test", "predictions"),
        "train_seconds": train_seconds,
        "trained": not args.skip_train,
    }
    results["overlay_grid"] = overlay_grid(
        results["predictions"], os.path.join(output_dir, "overlays_grid.jpg")
    )
    results["seconds"] = time.perf_counter() - start
    results["miou_drop"] = results["test"]["mIoU"] - results["shuffled_audio"]["mIoU"]
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(report(results, args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
