"""Config keys of Mask2Former-style mask-classification heads (``MODEL.MASK_FORMER``): the
masked-attention transformer decoder, the set criterion and inference. Names are Mask2Former's,
so its YAML files read unchanged; the defaults are COMBO's released settings."""

from detectron2.config import CfgNode as CN

__all__ = ["add_mask_former_config"]


def add_mask_former_config(cfg):
    """Add ``MODEL.MASK_FORMER`` in place."""
    cfg.MODEL.MASK_FORMER = CN()
    m = cfg.MODEL.MASK_FORMER
    # Name in TRANSFORMER_DECODER_REGISTRY.
    m.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Losses on every earlier prediction of the decoder too (suffixes _0 .. _{DEC_LAYERS - 2}).
    m.DEEP_SUPERVISION = True
    # Cross-entropy weight of the "no object" class.
    m.NO_OBJECT_WEIGHT = 0.1
    # Loss weights, also the matching costs of the Hungarian matcher (cosine: COMBO's temporal
    # consistency term, not a matching cost).
    m.CLASS_WEIGHT = 2.0
    m.MASK_WEIGHT = 5.0
    m.DICE_WEIGHT = 5.0
    m.COSINE_WEIGHT = 10.0
    # Query width, number of queries, attention heads and FFN width of the decoder.
    m.HIDDEN_DIM = 256
    m.NUM_OBJECT_QUERIES = 100
    m.NHEADS = 8
    m.DIM_FEEDFORWARD = 2048
    # Mask2Former counts the prediction before the first layer: DEC_LAYERS 10 = 9 layers.
    m.DEC_LAYERS = 10
    # Build the 1x1 projections of the multi-scale features even when the widths agree.
    m.ENFORCE_INPUT_PROJ = False
    # Normalised frames are zero-padded to a multiple of this (and of the backbone's own).
    m.SIZE_DIVISIBILITY = 32
    # Point-sampled mask losses: points per mask, PointRend importance sampling.
    m.TRAIN_NUM_POINTS = 12544
    m.OVERSAMPLE_RATIO = 3.0
    m.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Inference: semantic segmentation is the only output the project's evaluator takes.
    m.TEST = CN()
    m.TEST.SEMANTIC_ON = True
    m.TEST.INSTANCE_ON = False
    m.TEST.PANOPTIC_ON = False
