#!/usr/bin/env python
"""Convert pretrained weights of the original AVSegFormer and COMBO into files this project loads.

    # torchvision ResNet-50 (resnet50-19c8e357.pth) -> MODEL.WEIGHTS of an R50 config
    python tools/convert_pretrained_weights.py resnet50 resnet50-19c8e357.pth R-50.pth
    # official PVTv2-B5 ImageNet weights -> MODEL.WEIGHTS of a PVTv2 config
    python tools/convert_pretrained_weights.py pvt_v2 pvt_v2_b5.pth pvt_v2_b5_d2.pth
    # torchvggish weights (+ optional PCA parameters) -> MODEL.AUDIO.WEIGHTS (and PCA_WEIGHTS)
    python tools/convert_pretrained_weights.py vggish vggish-10086976.pth vggish.pth \
        [--pca vggish_pca_params-970ea276.pth]
    # COMBO's backbone files -> MODEL.WEIGHTS of the COMBO configs, filling both visual
    # backbones (backbone.* and the Siam-Encoder's pre_sam_backbone.*)
    python tools/convert_pretrained_weights.py combo-backbone R-50.pkl pretrained/combo_R-50.pth
    python tools/convert_pretrained_weights.py combo-backbone d2_pvt_v2_b5.pkl \
        pretrained/combo_pvt_v2_b5.pth

Backbone outputs are Detectron2 checkpoints (``{"model": {"backbone.*": tensor}}``); loading one
as MODEL.WEIGHTS reports the rest of the model (head, audio) as missing, which is expected for an
ImageNet initialisation. The VGGish output is a flat tensor-only state dict.

``combo-backbone`` reads COMBO's Detectron2 pickles (``.pkl``: NumPy arrays only, no code run)
or the torchvision ResNet-50 / official PVTv2 ``.pth`` they were made from; ``--no-siam`` writes
``backbone.*`` alone, for a COMBO config without the Siam-Encoder.
"""

import argparse
import logging
from pathlib import Path

import torch

from avsegformer.checkpoint import (
    convert_combo_backbone,
    convert_pvt_v2,
    convert_torchvision_resnet,
    convert_vggish,
    load_detectron2_pickle,
    load_weights_file,
    unwrap_state_dict,
)

logger = logging.getLogger("convert_pretrained_weights")


def backbone_checkpoint(state_dict: dict, author: str) -> dict:
    return {
        "model": {f"backbone.{k}": v for k, v in state_dict.items()},
        "__author__": author,
        "matching_heuristics": False,
    }


def read_state_dict(path: str) -> dict:
    """A ``.pkl`` as a Detectron2 pickle of arrays, anything else with ``torch.load``."""
    if path.endswith(".pkl"):
        return load_detectron2_pickle(path)
    return unwrap_state_dict(load_weights_file(path), path)


def combo_backbone_checkpoint(state_dict: dict, source: str, siam: bool) -> dict:
    weights, kind = convert_combo_backbone(state_dict, source, siam=siam)
    return {
        "model": weights,
        "__author__": f"{Path(source).name} for COMBO's visual backbones",
        "matching_heuristics": False,
        "backbone": kind,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["resnet50", "pvt_v2", "vggish", "combo-backbone"])
    parser.add_argument("src", help="the original .pth file (combo-backbone: also .pkl)")
    parser.add_argument("dst", help="where to write the converted file")
    parser.add_argument("--pca", help="vggish only: vggish_pca_params-970ea276.pth")
    parser.add_argument(
        "--no-siam",
        action="store_true",
        help="combo-backbone only: fill backbone.* alone (a COMBO model without Siam-Encoder)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.pca and args.kind != "vggish":
        parser.error("--pca only applies to vggish")
    if args.no_siam and args.kind != "combo-backbone":
        parser.error("--no-siam only applies to combo-backbone")
    try:
        state_dict = read_state_dict(args.src)
        if args.kind == "combo-backbone":
            output = combo_backbone_checkpoint(state_dict, args.src, siam=not args.no_siam)
        elif args.kind == "resnet50":
            output = backbone_checkpoint(convert_torchvision_resnet(state_dict), "torchvision")
        elif args.kind == "pvt_v2":
            output = backbone_checkpoint(convert_pvt_v2(state_dict), "PVTv2 (whai362/PVT)")
        else:
            pca = load_weights_file(args.pca, allow_numpy=True) if args.pca else None
            if pca is not None and not isinstance(pca, dict):
                raise ValueError(f"{args.pca} is not a dict of PCA parameters")
            output = convert_vggish(state_dict, pca)
    except (FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"error: {args.src}: {message}") from error
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(output, args.dst)
    logger.info("wrote %s", args.dst)


if __name__ == "__main__":
    main()
