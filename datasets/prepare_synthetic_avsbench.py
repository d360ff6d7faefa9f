#!/usr/bin/env python
"""Write a small synthetic AVSBench (S4, MS3 and AVSS layouts) in AVSBench's exact on-disk format.

What the clips show and sound like is described in :mod:`avsegformer.data.synthetic`.

Usage::

    python datasets/prepare_synthetic_avsbench.py --subsets s4 --num-train 200 --seed 0
"""

import argparse
import logging
import sys

from avsegformer.data.datasets.builtin import default_synthetic_root
from avsegformer.data.synthetic import MAX_CLASSES, generate

logger = logging.getLogger("prepare_synthetic_avsbench")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=default_synthetic_root(), help="dataset root to write")
    parser.add_argument("--subsets", default="s4,ms3,avss", help="comma-separated: s4,ms3,avss")
    parser.add_argument("--num-train", type=int, default=200, help="clips in each train split")
    parser.add_argument("--num-val", type=int, default=40, help="clips in each val split")
    parser.add_argument("--num-test", type=int, default=40, help="clips in each test split")
    parser.add_argument("--num-classes", type=int, default=8, help=f"K, 2..{MAX_CLASSES}")
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-maskiges", action="store_true", help="write no maskiges (COMBO's second input)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    folders = generate(
        args.output,
        subsets=subsets,
        split_sizes={"train": args.num_train, "val": args.num_val, "test": args.num_test},
        num_classes=args.num_classes,
        seed=args.seed,
        size=args.size,
        maskiges=not args.no_maskiges,
        progress=not args.no_progress,
    )
    for subset, folder in folders.items():
        logger.info("%s: %s", subset, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
