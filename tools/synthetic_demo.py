#!/usr/bin/env python
"""``make demo``: train and evaluate a CPU-sized model on a synthetic AVSBench dataset, on CPU.

``make demo`` trains AVSegFormer (the default config); ``make demo-combo`` (``--config-file
configs/synthetic/combo_tiny_s4.yaml``) trains COMBO, whose Siam-Encoder reads the maskiges the
generator writes next to the frames. The config's training set picks the layout:
``configs/synthetic/catr_tiny_{ms3,avss}.yaml`` train CATR on the MS3 and AVSS layouts.

Generates ``$DETECTRON2_DATASETS/synthetic_avsbench/Single-source`` (or ``Multi-sources``,
``AVSS``; 128x128 frames and their maskiges) if it is missing, scores predicting every object
(the vision-only baseline), trains the config keeping the best checkpoint by
val mIoU, evaluates it on the test split with each clip's own audio and with another clip's
audio, and draws frame, ground truth and both predictions side by side
(``comparison_grid.jpg``). See :mod:`avsegformer.synthetic_demo`.

``--quick`` runs the same steps on a tiny dataset for a few iterations (used by the tests).
Outputs go to ``--output-dir`` (default ``output/demo``); ``results.json`` has every number.
"""

import argparse
import logging
import os
import sys

from avsegformer.config import setup_cfg
from avsegformer.synthetic_demo import (
    FULL_SPLIT_SIZES,
    QUICK_SPLIT_SIZES,
    format_report,
    run_synthetic_demo,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "avsegformer_tiny_s4.yaml")
#: Overrides of --quick: 40 iterations (two of Detectron2's 20-iteration metric windows, so the
#: loss can be seen to fall), an evaluation on val and a checkpoint every 20.
QUICK_OPTS = [
    "SOLVER.MAX_ITER", "40",
    "SOLVER.WARMUP_ITERS", "5",
    "SOLVER.CHECKPOINT_PERIOD", "20",
    "SOLVER.IMS_PER_BATCH", "2",
    "TEST.EVAL_PERIOD", "20",
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
    parser.add_argument("--seed", type=int, default=None, help="training seed (config: SEED)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--skip-train", action="store_true", help="only evaluate MODEL.WEIGHTS (give it in opts)"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="numeric precision of the evaluations (TEST.PRECISION; bf16: bfloat16 model)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def build_cfg(args, output_dir: str):
    quick_opts = QUICK_OPTS if args.quick else []
    seed = [] if args.seed is None else ["SEED", str(args.seed)]
    return setup_cfg(args.config_file, [*quick_opts, *args.opts, *seed, "OUTPUT_DIR", output_dir])


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    suffix = "_quick" if args.quick else ""
    output_dir = args.output_dir or os.path.join(REPO, "output", f"demo{suffix}")
    data_root = args.data_root or os.path.join(
        os.environ.get("DETECTRON2_DATASETS", os.path.join(REPO, "datasets")),
        f"synthetic_avsbench{suffix}",
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run_synthetic_demo(
        build_cfg(args, output_dir),
        data_root,
        split_sizes=QUICK_SPLIT_SIZES if args.quick else FULL_SPLIT_SIZES,
        exact_sizes=not args.quick,
        train=not args.skip_train,
        precision=args.precision,
        config_file=args.config_file,
    )
    print(format_report(results, args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
