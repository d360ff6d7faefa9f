#!/usr/bin/env python
"""Convert an original AVSegFormer checkpoint (vvvb-github/AVSegFormer) for this project.

    python tools/convert_avsegformer_checkpoint.py AVSegFormer_pvt2_s4.pth avsegformer_pvtv2_s4.pth

The output is ``{"model": state_dict, ...metadata}``; use it as MODEL.WEIGHTS (it loads with
``DetectionCheckpointer`` with no missing keys into the matching ``configs/*`` model). Unknown
entries are an error; the groups the original saves but never uses are dropped with a log line.
"""

import argparse
import logging
from pathlib import Path

from avsegformer.checkpoint import convert_avsegformer_checkpoint

import torch

logger = logging.getLogger("convert_avsegformer_checkpoint")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="original checkpoint (.pth)")
    parser.add_argument("dst", help="converted checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if not Path(args.src).is_file():
        raise SystemExit(f"error: {args.src} does not exist")
    try:
        checkpoint = torch.load(args.src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        raise SystemExit(
            f"error: {args.src} could not be loaded as a plain state dict of tensors "
            f"(torch.load weights_only=True): {type(error).__name__}: {str(error)[:300]}"
        ) from error
    try:
        state_dict = convert_avsegformer_checkpoint(checkpoint)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"error: {args.src}: {error}") from error
    backbone = "R50" if "backbone.stem.conv1.weight" in state_dict else "PVTv2-B5"
    classifier = state_dict.get("mask_head.fc.4.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else None
    output = {
        "model": state_dict,
        "__author__": "vvvb-github/AVSegFormer (converted)",
        "matching_heuristics": False,
        "source": Path(args.src).name,
        "backbone": backbone,
        "num_classes": num_classes,
    }
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(output, args.dst)
    logger.info(
        "wrote %s (%s, %s classes, %d entries)", args.dst, backbone, num_classes, len(state_dict)
    )


if __name__ == "__main__":
    main()
