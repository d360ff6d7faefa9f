"""Key map of original AVSegFormer checkpoints (vvvb-github/AVSegFormer) to our ``AVSegFormer``.

Registered as the checkpoint family ``"AVSegFormer"``; see :func:`convert_avsegformer_checkpoint`
for the map.
"""

import logging
from collections.abc import Mapping

import torch

from .backbones import VGGISH_ENTRIES, pvt_v2_rules, resnet_rules
from .families import (
    describe_backbone_and_classes,
    original_backbone_kind,
    recognized_by_keys,
    register_checkpoint_family,
)
from .rules import WEIGHT_BIAS, apply_rules, rule, unwrap_state_dict

__all__ = [
    "PVT_RULES",
    "QUERY_GENERATOR_LAYER_PARTS",
    "RESNET_RULES",
    "SHARED_HEAD_RULES",
    "convert_avsegformer_checkpoint",
    "convert_avsegformer_head",
    "describe_converted",
]

logger = logging.getLogger(__name__)

_MHA = r"(self_attn|cross_attn)\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_ENCODER_PARTS = (
    r"self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)|norm1|norm2|linear1"
    r"|linear2"
)

#: Rules of the head parts every AVSegFormer-derived model shares (all but the query generator
#: and the fusion block), and of ``audio_proj`` and VGGish.
SHARED_HEAD_RULES = [
    rule(r"head\.level_embed", "pixel_decoder.level_embed"),
    rule(rf"head\.in_proj\.(\d+)\.([01])\.{WEIGHT_BIAS}", r"pixel_decoder.input_proj.\1.\2.\3"),
    rule(
        rf"head\.transformer\.encoder\.layers\.(\d+)\.({_ENCODER_PARTS})\.{WEIGHT_BIAS}",
        r"pixel_decoder.encoder.layers.\1.\2.\4",
    ),
    rule(rf"head\.lateral_conv\.([01])\.{WEIGHT_BIAS}", r"pixel_decoder.lateral_conv.\1.\2"),
    rule(rf"head\.out_conv\.([01])\.{WEIGHT_BIAS}", r"pixel_decoder.output_conv.\1.\2"),
    rule(r"head\.learnable_query\.weight", "learnable_query.weight"),
    rule(
        rf"head\.transformer\.decoder\.layers\.(\d+)\.({_MHA}|(norm[123]|linear[12])\.{WEIGHT_BIAS})",
        r"transformer_decoder.layers.\1.\2",
    ),
    rule(rf"head\.mlp\.layers\.([012])\.{WEIGHT_BIAS}", r"mask_head.mlp.layers.\1.\2"),
    rule(rf"head\.fc\.([024])\.{WEIGHT_BIAS}", r"mask_head.fc.\1.\2"),
    rule(r"head\.fpn\..+", None, "head.fpn.* (never used by the original model)"),
    rule(r"head\.attn_fc\..+", None, "head.attn_fc.* (never used by the original model)"),
    rule(rf"audio_proj\.{WEIGHT_BIAS}", r"audio_proj.\1"),
    rule(rf"vggish\.{VGGISH_ENTRIES}", r"audio_backbone.\1"),
]

#: The AVSegFormer query generator (``layers.{i}`` are the generator layers, whatever the model).
QUERY_GENERATOR_LAYER_PARTS = rf"{_MHA}|(ffn\.[02]|norm[123])\.{WEIGHT_BIAS}"

_HEAD_RULES = SHARED_HEAD_RULES + [
    rule(r"head\.query_generator\.query\.weight", "query_generator.query.weight"),
    rule(
        rf"head\.query_generator\.layers\.(\d+)\.({QUERY_GENERATOR_LAYER_PARTS})",
        r"query_generator.layers.\1.\2",
    ),
    rule(rf"head\.fusion_block\.((q_proj|kv_proj|proj)\.{WEIGHT_BIAS})", r"mixer.\1"),
]

# The original's ResNet-50 keeps two copies of its last two stages; only the ``_1`` ones run.
_RESNET_STAGES = {"layer1": 2, "layer2": 3, "layer3_1": 4, "layer4_1": 5}
RESNET_RULES = resnet_rules("backbone.", _RESNET_STAGES, "backbone.") + [
    rule(r"backbone\.layer3_2\..+", None, "backbone.layer3_2.* (never used by the original model)"),
    rule(r"backbone\.layer4_2\..+", None, "backbone.layer4_2.* (never used by the original model)"),
]
PVT_RULES = pvt_v2_rules("backbone.", "backbone.")


def convert_avsegformer_head(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the state dict of the original ``AVSegHead`` alone (names without the ``head.``
    prefix, e.g. ``transformer.encoder.layers.0.norm1.weight``) to our meta-architecture's names,
    with the rules of :func:`convert_avsegformer_checkpoint` (``fpn.*`` and ``attn_fc.*`` dropped).
    """
    head = {f"head.{name}": tensor for name, tensor in state_dict.items()}
    return apply_rules(head, _HEAD_RULES, "AVSegFormer head")


def convert_avsegformer_checkpoint(checkpoint: object) -> dict[str, torch.Tensor]:
    """Map an original AVSegFormer checkpoint (R50 or PVTv2-B5; S4, MS3 or AVSS) to the state dict
    of our ``AVSegFormer`` meta-architecture.

    ``backbone.*`` (torchvision-style R50, with ``layer3_1``/``layer4_1`` -> ``res4``/``res5``, or
    official PVTv2) -> ``backbone.*``; ``vggish.*`` -> ``audio_backbone.*``; ``audio_proj.*`` kept;
    ``head.in_proj``, ``head.level_embed``, ``head.transformer.encoder``, ``head.lateral_conv``,
    ``head.out_conv`` -> ``pixel_decoder.{input_proj, level_embed, encoder, lateral_conv,
    output_conv}``; ``head.query_generator`` -> ``query_generator``; ``head.learnable_query`` ->
    ``learnable_query``; ``head.transformer.decoder`` -> ``transformer_decoder``;
    ``head.fusion_block`` -> ``mixer``; ``head.mlp`` / ``head.fc`` -> ``mask_head.mlp`` /
    ``mask_head.fc``. The never-used groups ``backbone.layer3_2``, ``backbone.layer4_2``,
    ``head.fpn`` and ``head.attn_fc`` are dropped with one log line each.

    Args:
        checkpoint: the loaded file: a bare state dict, one with ``module.`` prefixes, or a
            ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper.

    Raises:
        KeyError: an entry matches none of the known names (all such entries are listed).
        ValueError: ``checkpoint`` is not a state dict, or its backbone is neither R50 nor PVTv2.
    """
    state_dict = unwrap_state_dict(checkpoint, "AVSegFormer checkpoint")
    kind = original_backbone_kind(
        state_dict, family="AVSegFormer", resnet_key="backbone.conv1.weight"
    )
    backbone_rules = RESNET_RULES if kind == "R50" else PVT_RULES
    converted = apply_rules(state_dict, backbone_rules + _HEAD_RULES, f"AVSegFormer {kind}")
    logger.info("Converted an AVSegFormer %s checkpoint: %d entries", kind, len(converted))
    return converted


def describe_converted(converted: Mapping[str, torch.Tensor]) -> dict:
    """Facts of a converted AVSegFormer-layout state dict: backbone and number of classes."""
    return describe_backbone_and_classes(converted, classifier="mask_head.fc.4.weight")


register_checkpoint_family(
    "AVSegFormer",
    author="vvvb-github/AVSegFormer",
    # The audio-conditioned query generator and the fusion block are AVSegFormer's own.
    recognizes=recognized_by_keys(
        "head.query_generator.query.weight", "head.fusion_block.q_proj.weight"
    ),
    convert=convert_avsegformer_checkpoint,
    describe=describe_converted,
)
