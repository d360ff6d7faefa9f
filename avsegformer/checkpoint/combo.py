"""Key maps of COMBO (yannqi/COMBO-AVS): its trained checkpoints and its backbone files.

Our ``COMBO`` meta-architecture keeps the original module tree, so a checkpoint converts by
identity except for the PVTv2 backbones, whose official names become timm's (the same map as for
ImageNet PVTv2 files) under both ``backbone.`` and ``pre_sam_backbone.``. Registered as the
checkpoint family ``"COMBO"``; see :func:`convert_combo_checkpoint`.

COMBO's training starts from Detectron2 pickles of ImageNet backbones (``R-50.pkl``,
``d2_pvt_v2_b5.pkl``) that its README loads into both visual backbones by matching heuristics.
:func:`convert_combo_backbone` names both copies explicitly instead.
"""

import logging
import re
from collections.abc import Mapping

import torch

from .backbones import VGGISH_ENTRIES, convert_pvt_v2, convert_torchvision_resnet, pvt_v2_rules
from .families import (
    describe_backbone_and_classes,
    original_backbone_kind,
    recognized_by_keys,
    register_checkpoint_family,
)
from .rules import WEIGHT_BIAS, apply_rules, rule, unwrap_state_dict

__all__ = ["COMBO_VISUAL_BACKBONES", "convert_combo_backbone", "convert_combo_checkpoint"]

logger = logging.getLogger(__name__)

#: The prefixes of COMBO's two visual backbones: the frame encoder and the Siam-Encoder's
#: maskige encoder (absent when the Siam-Encoder is off).
COMBO_VISUAL_BACKBONES = ("backbone.", "pre_sam_backbone.")

_FROZEN_BN = r"norm\.(weight|bias|running_mean|running_var)"
# Detectron2's ResNet with FrozenBN, as COMBO (and our COMBO) builds it; names kept.
_RESNET_ENTRY = rf"(stem\.conv1|res[2-5]\.\d+\.(conv[123]|shortcut))\.(weight|{_FROZEN_BN})"
_MHA = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_ENCODER_PARTS = (
    r"self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)|norm1|norm2|linear1"
    r"|linear2"
)
_BILATERAL_PARTS = (
    r"gamma_a|gamma_v_list\.0"
    rf"|(layer_norm_v_list|layer_norm_a_list)\.0\.{WEIGHT_BIAS}"
    r"|attn_list\.0\.(v_proj|a_proj|values_v_proj|values_a_proj|out_v_proj|out_a_proj)"
    rf"\.{WEIGHT_BIAS}"
)
_PREDICTOR_PARTS = (
    rf"transformer_self_attention_layers\.\d+\.(self_attn\.{_MHA}|norm\.{WEIGHT_BIAS})"
    rf"|transformer_cross_attention_layers\.\d+\.(multihead_attn\.{_MHA}|norm\.{WEIGHT_BIAS})"
    rf"|transformer_ffn_layers\.\d+\.(linear1|linear2|norm)\.{WEIGHT_BIAS}"
    rf"|(decoder_norm|class_embed|mask_embed\.layers\.[0-2])\.{WEIGHT_BIAS}"
    r"|(query_feat|query_embed|level_embed)\.weight"
)

# Everything but the visual backbones: same names in the original and in our COMBO.
_SHARED_NAMES = "|".join(
    [
        rf"scale_factor_module\.[0-3]\.(fc1|fc2)\.{WEIGHT_BIAS}",
        rf"audio_backbone\.{VGGISH_ENTRIES}",
        rf"sem_seg_head\.pixel_decoder\.input_proj\.[0-2]\.[01]\.{WEIGHT_BIAS}",
        r"sem_seg_head\.pixel_decoder\.transformer\.level_embed",
        rf"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.\d+\.({_ENCODER_PARTS})"
        rf"\.{WEIGHT_BIAS}",
        rf"sem_seg_head\.pixel_decoder\.mask_features\.{WEIGHT_BIAS}",
        r"sem_seg_head\.pixel_decoder\.(adapter_1|layer_1)\.(weight|norm\.weight|norm\.bias)",
        r"sem_seg_head\.fusion_module\.(audio_pos|level_embed)\.weight",
        rf"sem_seg_head\.fusion_module\.b_attn\.({_BILATERAL_PARTS})",
        rf"sem_seg_head\.audio_transformation\.embeddings\.[024]\.{WEIGHT_BIAS}",
        rf"sem_seg_head\.predictor\.({_PREDICTOR_PARTS})",
        r"criterion\.empty_weight",
    ]
)
_SHARED_RULES = [rule(f"({_SHARED_NAMES})", r"\1")]
_RESNET_RULES = [
    rule(rf"({re.escape(prefix)}{_RESNET_ENTRY})", r"\1") for prefix in COMBO_VISUAL_BACKBONES
]
_PVT_RULES = [r for prefix in COMBO_VISUAL_BACKBONES for r in pvt_v2_rules(prefix, prefix)]


def convert_combo_checkpoint(checkpoint: object) -> dict[str, torch.Tensor]:
    """Map an original COMBO checkpoint (R50 or PVTv2-B5; S4, MS3 or AVSS; with or without the
    Siam-Encoder; Bilateral-Fusion ``MHA-B`` or ``MHA-None``) to the state dict of our ``COMBO``
    meta-architecture.

    Every name is kept, but the PVTv2 backbones': official PVTv2 names under ``backbone.`` and
    ``pre_sam_backbone.`` become timm's (``patch_embed1`` -> ``patch_embed``, ``blockK.j`` ->
    ``stages.{K-1}.blocks.j``, ...; see :mod:`.backbones`). ``criterion.empty_weight`` (the
    no-object class weight, a persistent buffer of the model) is kept.

    Args:
        checkpoint: the loaded file: a bare state dict, one with ``module.`` prefixes, or a
            ``{"model": ...}`` wrapper as Detectron2's checkpointer writes it.

    Raises:
        KeyError: entries that match none of COMBO's names (all listed).
        ValueError: ``checkpoint`` is not a state dict, or its backbone is neither R50 nor PVTv2.
    """
    state_dict = unwrap_state_dict(checkpoint, "COMBO checkpoint")
    kind = original_backbone_kind(
        state_dict, family="COMBO", resnet_key="backbone.stem.conv1.weight"
    )
    backbone_rules = _RESNET_RULES if kind == "R50" else _PVT_RULES
    converted = apply_rules(state_dict, backbone_rules + _SHARED_RULES, f"COMBO {kind}")
    logger.info("Converted a COMBO %s checkpoint: %d entries", kind, len(converted))
    return converted


def _describe(converted: Mapping[str, torch.Tensor]) -> dict:
    return {
        # The classifier has one more row: Mask2Former's "no object".
        **describe_backbone_and_classes(
            converted, classifier="sem_seg_head.predictor.class_embed.weight", extra_classes=1
        ),
        "siam_encoder": any(k.startswith("pre_sam_backbone.") for k in converted),
        "fusion_type": (
            "MHA-B"
            if any(k.startswith("sem_seg_head.fusion_module.b_attn.") for k in converted)
            else "MHA-None"
        ),
    }


register_checkpoint_family(
    "COMBO",
    author="yannqi/COMBO-AVS",
    # The audio MLP beside the Mask2Former decoder's learnable query features is COMBO's own.
    recognizes=recognized_by_keys(
        "sem_seg_head.audio_transformation.embeddings.0.weight",
        "sem_seg_head.predictor.query_feat.weight",
    ),
    convert=convert_combo_checkpoint,
    describe=_describe,
)


# ---------------------------------------------------------------------------------------------
# ImageNet backbone files -> both visual backbones
# ---------------------------------------------------------------------------------------------
_D2_RESNET_RULES = [
    rule(f"({_RESNET_ENTRY})", r"\1"),
    rule(
        r"(stem\.conv1|res[2-5]\.\d+\.(conv[123]|shortcut))\.norm\.num_batches_tracked",
        None,
        "BatchNorm counters (FrozenBN has none)",
    ),
    # convert-torchvision-to-d2 puts torchvision's classifier under the stem.
    rule(rf"stem\.fc\.{WEIGHT_BIAS}", None, "the ImageNet classifier stem.fc.*"),
]


def _single_backbone(state_dict: Mapping[str, torch.Tensor], source: str) -> tuple[dict, str]:
    """One backbone's weights, our names without prefix, and its kind (R50 or PVTv2)."""
    if "stem.conv1.weight" in state_dict:  # Detectron2 names (R-50.pkl)
        return apply_rules(state_dict, _D2_RESNET_RULES, source), "R50"
    if "layer1.0.conv1.weight" in state_dict:  # torchvision names (resnet50-*.pth)
        converted = convert_torchvision_resnet(state_dict)
        return {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked")}, "R50"
    if "patch_embed1.proj.weight" in state_dict:  # official names (d2_pvt_v2_b5.pkl, pvt_v2_b5.pth)
        return convert_pvt_v2(state_dict), "PVTv2"
    hint = ""
    if "res2_0_branch2a_w" in state_dict or "conv1_w" in state_dict:
        hint = (
            "; these are Caffe2 names (MSRA R-50.pkl): COMBO uses torchvision weights, "
            "e.g. Detectron2's ImageNetPretrained/torchvision/R-50.pkl"
        )
    raise ValueError(
        f"{source}: neither a ResNet (stem.conv1.weight or layer1.0.conv1.weight) nor a PVTv2 "
        f"(patch_embed1.proj.weight) backbone file{hint}"
    )


def convert_combo_backbone(
    state_dict: Mapping[str, torch.Tensor], source: str = "backbone file", siam: bool = True
) -> tuple[dict[str, torch.Tensor], str]:
    """Initialise COMBO's visual backbones from one ImageNet backbone file.

    Accepts COMBO's Detectron2 pickles (``R-50.pkl`` with Detectron2 ResNet names, as
    Mask2Former's ``convert-torchvision-to-d2`` writes them; ``d2_pvt_v2_b5.pkl`` with official
    PVTv2 names), after their arrays are made tensors, and the files they come from (torchvision
    ``resnet50-*.pth``, official ``pvt_v2_b5.pth``). Classifiers and BatchNorm counters are
    dropped (the model's ResNet uses FrozenBN).

    Args:
        state_dict: the file's bare state dict.
        source: the file, for messages.
        siam: also fill ``pre_sam_backbone.*`` (the Siam-Encoder's backbone) with the same
            weights; False for a COMBO model built without the Siam-Encoder.

    Returns:
        ``{"backbone.*": tensor, "pre_sam_backbone.*": tensor}`` (both names share each tensor:
        stored once when saved) and the backbone kind, ``"R50"`` or ``"PVTv2"``.

    Raises:
        KeyError: entries the backbone's map does not know (all listed).
        ValueError: the file is no ResNet or PVTv2 backbone.
    """
    weights, kind = _single_backbone(state_dict, source)
    prefixes = COMBO_VISUAL_BACKBONES if siam else COMBO_VISUAL_BACKBONES[:1]
    return {f"{p}{name}": tensor for p in prefixes for name, tensor in weights.items()}, kind
