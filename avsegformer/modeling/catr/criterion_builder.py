"""The CATR criterion of a config (``MODEL.CATR``)."""

from torch import nn

from .criterion import ReferredSetCriterion
from .matcher import ReferredQueryMatcher
from .semantic import ClassTrajectoryMatcher, SemanticSetCriterion

__all__ = ["build_catr_criterion"]


def build_catr_criterion(cfg) -> nn.Module:
    """The released loss for one class (``MODEL.CATR.NUM_CLASSES`` 1); its (K + 1)-way
    generalisation with class-trajectory matching for K > 1."""
    c = cfg.MODEL.CATR
    weights = {
        "eos_coef": c.EOS_COEF,
        "class_weight": c.IS_REFERRED_LOSS_COEF,
        "focal_weight": c.FOCAL_LOSS_COEF,
        "dice_weight": c.DICE_LOSS_COEF,
        "bce_weight": c.BCE_LOSS_COEF,
        "num_aux_layers": c.NUM_DECODER_LAYERS - 1 if c.AUX_LOSS else 0,
        "focal_alpha": c.FOCAL_ALPHA,
        "focal_gamma": c.FOCAL_GAMMA,
        "double_sigmoid_bce": c.BCE_DOUBLE_SIGMOID,
    }
    if c.NUM_CLASSES > 1:
        return SemanticSetCriterion(
            ClassTrajectoryMatcher(c.SET_COST_IS_REFERRED, c.SET_COST_DICE),
            num_classes=c.NUM_CLASSES,
            **weights,
        )
    return ReferredSetCriterion(
        ReferredQueryMatcher(c.SET_COST_IS_REFERRED, c.SET_COST_DICE), **weights
    )
