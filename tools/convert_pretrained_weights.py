#!/usr/bin/env python
"""Convert pretrained weights of the original AVSegFormer into files this project loads.

    # torchvision ResNet-50 (resnet50-19c8e357.pth) -> MODEL.WEIGHTS of an R50 config
    python tools/convert_pretrained_weights.py resnet50 resnet50-19c8e357.pth R-50.pth
    # official PVTv2-B5 ImageNet weights -> MODEL.WEIGHTS of a PVTv2 config
    python tools/convert_pretrained_weights.py pvt_v2 pvt_v2_b5.pth pvt_v2_b5_d2.pth
    # torchvggish weights (+ optional PCA parameters) -> MODEL.AUDIO.WEIGHTS (and PCA_WEIGHTS)
    python tools/convert_pretrained_weights.py vggish vggish-10086976.pth vggish.pth \
        [--pca vggish_pca_params-970ea276.pth]

Backbone outputs are Detectron2 checkpoints (``{"model": {"backbone.*": tensor}}``); loading one
as MODEL.WEIGHTS reports the rest of the model (head, audio) as missing, which is expected for an
ImageNet initialisation. The VGGish output is a flat tensor-only state dict.
"""

import argparse
import logging
from pathlib import Path

from avsegformer.checkpoint import (
    convert_pvt_v2,
    convert_torchvision_resnet,
    convert_vggish,
    unwrap_state_dict,
)

import numpy as np
import torch

logger = logging.getLogger("convert_pretrained_weights")

# What NumPy arrays in a pickle need; vggish_pca_params-970ea276.pth stores its two parameters as
# NumPy arrays, which torch.load(weights_only=True) refuses unless these are allowed.
_NUMPY_SAFE_GLOBALS = [
    np.ndarray,
    np.dtype,
    getattr(np, "_core", np).multiarray._reconstruct,
    *(type(np.dtype(t)) for t in ("float64", "float32")),
]


def load_file(path: str, allow_numpy: bool = False) -> object:
    """``torch.load`` on CPU without executing pickled code; a clear error if that fails."""
    if not Path(path).is_file():
        raise SystemExit(f"error: {path} does not exist")
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a state dict
        raise SystemExit(
            f"error: {path} could not be loaded as a plain state dict of tensors "
            f"(torch.load weights_only=True): {type(error).__name__}: {str(error)[:300]}"
        ) from error


def backbone_checkpoint(state_dict: dict, author: str) -> dict:
    return {
        "model": {f"backbone.{k}": v for k, v in state_dict.items()},
        "__author__": author,
        "matching_heuristics": False,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["resnet50", "pvt_v2", "vggish"])
    parser.add_argument("src", help="the original .pth file")
    parser.add_argument("dst", help="where to write the converted file")
    parser.add_argument("--pca", help="vggish only: vggish_pca_params-970ea276.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.pca and args.kind != "vggish":
        parser.error("--pca only applies to vggish")
    try:
        state_dict = unwrap_state_dict(load_file(args.src), args.src)
        if args.kind == "resnet50":
            output = backbone_checkpoint(convert_torchvision_resnet(state_dict), "torchvision")
        elif args.kind == "pvt_v2":
            output = backbone_checkpoint(convert_pvt_v2(state_dict), "PVTv2 (whai362/PVT)")
        else:
            pca = load_file(args.pca, allow_numpy=True) if args.pca else None
            if pca is not None and not isinstance(pca, dict):
                raise ValueError(f"{args.pca} is not a dict of PCA parameters")
            output = convert_vggish(state_dict, pca)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"error: {args.src}: {error}") from error
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(output, args.dst)
    logger.info("wrote %s", args.dst)


if __name__ == "__main__":
    main()
