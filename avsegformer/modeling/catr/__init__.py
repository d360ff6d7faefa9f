"""The parts of CATR (aspirinone/CATR.github.io): input projections, the decoupled
audio-video transformer (spatial encoder, temporal encoder with its block gate, query
decoder), the FPN mask decoder, the heads, the referred-query matcher and the set criterion;
and, designed here (not in the release), the class head's matcher, criterion and semantic
inference (:mod:`.semantic`).
The meta-architecture is :class:`avsegformer.modeling.meta_arch.catr.CATR`."""

from .block_gate import GATE_NORMS, BlockGate
from .criterion import (
    SUPERVISED_FRAME_MODES,
    ReferredSetCriterion,
    mask_bce_loss,
    mask_dice_loss,
    sigmoid_focal_loss,
    supervised_times,
)
from .criterion_builder import build_catr_criterion
from .decoder import QueryDecoder, QueryDecoderLayer
from .fpn_decoder import FPN_LEVELS, FPNSpatialDecoder
from .fusion import MultiplicativeCrossAttention
from .heads import KernelMLP, dynamic_masks, select_referred_masks
from .input_projection import DilatedConvSum
from .matcher import ReferredQueryMatcher
from .released_unused import (
    RELEASED_UNUSED_CONV,
    FeatureFusionBlockWeights,
    released_unused_modules,
)
from .semantic import (
    ClassTrajectoryMatcher,
    SemanticSetCriterion,
    class_trajectory_targets,
    semantic_clip_probabilities,
)
from .spatial_encoder import EncoderLayer, SpatialEncoder
from .temporal_encoder import TemporalEncoder, TemporalEncoderLayer
from .transformer import AudioProjection, CATRTransformer, build_catr_transformer

__all__ = [
    "RELEASED_UNUSED_CONV",
    "GATE_NORMS",
    "SUPERVISED_FRAME_MODES",
    "AudioProjection",
    "BlockGate",
    "CATRTransformer",
    "ClassTrajectoryMatcher",
    "DilatedConvSum",
    "EncoderLayer",
    "FPNSpatialDecoder",
    "FPN_LEVELS",
    "FeatureFusionBlockWeights",
    "KernelMLP",
    "MultiplicativeCrossAttention",
    "QueryDecoder",
    "QueryDecoderLayer",
    "ReferredQueryMatcher",
    "ReferredSetCriterion",
    "SemanticSetCriterion",
    "SpatialEncoder",
    "TemporalEncoder",
    "TemporalEncoderLayer",
    "build_catr_criterion",
    "build_catr_transformer",
    "class_trajectory_targets",
    "dynamic_masks",
    "mask_bce_loss",
    "mask_dice_loss",
    "released_unused_modules",
    "select_referred_masks",
    "semantic_clip_probabilities",
    "sigmoid_focal_loss",
    "supervised_times",
]
