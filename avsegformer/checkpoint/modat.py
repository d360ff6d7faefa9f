"""Key map of original MoDAT checkpoints (jnjz/MoDAT) to our ``MoDAT`` meta-architecture.

MoDAT is AVSegFormer with another query generator and fusion block, so everything else maps
with AVSegFormer's rules. Registered as the checkpoint family ``"MoDAT"``.
"""

import logging
from collections.abc import Mapping

import torch

from .avsegformer import (
    PVT_RULES,
    QUERY_GENERATOR_LAYER_PARTS,
    SHARED_HEAD_RULES,
    describe_converted,
)
from .families import recognized_by_keys, register_checkpoint_family
from .rules import WEIGHT_BIAS, apply_rules, rule, unwrap_state_dict

__all__ = [
    "convert_modat_checkpoint",
    "convert_modat_head",
    "convert_modat_mixer",
    "convert_modat_query_generator",
]

logger = logging.getLogger(__name__)

_MOE = r"head\.fusion_block\.(spatial_attn|channel_attn)"
# The original hard-codes 16 experts per layer.
_EXPERT = r"(\d|1[0-5])"
_FUSION_PARTS = (
    r"multihead_attn\.(in_proj_weight|out_proj\.weight)|(norm[12]|linear[12])\.(weight|bias)"
)

_QUERY_GENERATOR_RULES = [
    rule(
        rf"head\.query_generator\.early_fusion\.layers\.(\d+)\.({_FUSION_PARTS})",
        r"query_generator.early_fusion.layers.\1.\2",
    ),
    rule(
        r"head\.query_generator\.early_fusion\.conv\..+",
        None,
        "head.query_generator.early_fusion.conv.* (never used by the original model)",
    ),
    rule(
        rf"head\.query_generator\.decoder\.(\d+)\.({QUERY_GENERATOR_LAYER_PARTS})",
        r"query_generator.decoder.\1.\2",
    ),
    rule(rf"head\.query_generator\.conv\.{WEIGHT_BIAS}", r"query_generator.conv.\1"),
]

_MIXER_RULES = [
    rule(rf"{_MOE}\.gate\.w_gating", r"mixer.\1.gate.proj.weight"),
    rule(
        rf"{_MOE}\.experts\.experts\.{_EXPERT}\.((q_proj|kv_proj|proj)\.{WEIGHT_BIAS})",
        r"mixer.\1.experts.\2.\3",
    ),
    rule(
        rf"{_MOE}\.experts\.experts\.{_EXPERT}\.attn\.(in_proj_weight|out_proj\.weight)",
        r"mixer.\1.experts.\2.attn.\3",
    ),
    rule(rf"head\.fusion_block\.(gate_s|gate_c)\.{WEIGHT_BIAS}", r"mixer.\1.\2"),
]

_HEAD_RULES = SHARED_HEAD_RULES + _QUERY_GENERATOR_RULES + _MIXER_RULES


def _convert(state_dict: Mapping[str, torch.Tensor], rules, source: str) -> dict:
    converted = apply_rules(state_dict, rules, source)
    # The original gate is used as ``x @ w_gating`` ([in, out]); ours is an nn.Linear.
    for name in [n for n in converted if n.endswith(".gate.proj.weight")]:
        converted[name] = converted[name].t().contiguous()
    return converted


def _convert_part(state_dict, prefix: str, target_prefix: str, rules, source: str) -> dict:
    prefixed = {f"{prefix}{name}": tensor for name, tensor in state_dict.items()}
    converted = _convert(prefixed, rules, source)
    return {name[len(target_prefix) :]: tensor for name, tensor in converted.items()}


def convert_modat_mixer(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the state dict of the original ``CSA`` alone (``channel_attn.*``, ``spatial_attn.*``,
    ``gate_c.*``, ``gate_s.*``) to :class:`~avsegformer.modeling.moe.DualAttentionMixer`."""
    return _convert_part(state_dict, "head.fusion_block.", "mixer.", _MIXER_RULES, "MoDAT CSA")


def convert_modat_query_generator(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map the state dict of the original ``EncoderDecoderGenerator`` alone to
    :class:`~avsegformer.modeling.transformer.EncoderDecoderQueryGenerator` (the unused
    ``early_fusion.conv.*`` dropped)."""
    return _convert_part(
        state_dict,
        "head.query_generator.",
        "query_generator.",
        _QUERY_GENERATOR_RULES,
        "MoDAT query generator",
    )


def convert_modat_head(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the state dict of the original MoDAT ``AVSegHead`` alone (names without ``head.``) to
    our meta-architecture's names."""
    head = {f"head.{name}": tensor for name, tensor in state_dict.items()}
    return _convert(head, _HEAD_RULES, "MoDAT head")


def convert_modat_checkpoint(checkpoint: object) -> dict[str, torch.Tensor]:
    """Map an original MoDAT checkpoint (PVTv2-B5; S4, MS3 or AVSS) to the state dict of our
    ``MoDAT`` meta-architecture.

    As AVSegFormer's (:func:`~avsegformer.checkpoint.convert_avsegformer_checkpoint`), plus:
    ``head.query_generator.early_fusion.layers`` / ``decoder`` / ``conv`` ->
    ``query_generator.early_fusion.layers`` / ``decoder`` / ``conv``;
    ``head.fusion_block.{channel,spatial}_attn.gate.w_gating`` (``[in, out]``) ->
    ``mixer.{...}.gate.proj.weight`` transposed; ``...experts.experts.{e}`` ->
    ``mixer.{...}.experts.{e}``; ``head.fusion_block.gate_{c,s}`` -> ``mixer.gate_{c,s}``.
    Dropped with one log line each: ``head.query_generator.early_fusion.conv``, ``head.fpn``,
    ``head.attn_fc`` (never used by the original model).

    Raises:
        KeyError: an entry matches none of the known names (all such entries are listed).
        ValueError: ``checkpoint`` is not a state dict, or its backbone is not PVTv2.
    """
    state_dict = unwrap_state_dict(checkpoint, "MoDAT checkpoint")
    if "backbone.patch_embed1.proj.weight" not in state_dict:
        raise ValueError(
            "MoDAT checkpoint: backbone.patch_embed1.proj.weight (PVTv2) not found; the original "
            "MoDAT has PVTv2-B5 configurations only"
        )
    converted = _convert(state_dict, PVT_RULES + _HEAD_RULES, "MoDAT PVTv2")
    logger.info("Converted a MoDAT PVTv2 checkpoint: %d entries", len(converted))
    return converted


register_checkpoint_family(
    "MoDAT",
    author="jnjz/MoDAT",
    # The mixture-of-experts gate and the early-fusion generator are MoDAT's own.
    recognizes=recognized_by_keys(
        "head.fusion_block.channel_attn.gate.w_gating",
        "head.query_generator.early_fusion.layers.0.multihead_attn.in_proj_weight",
    ),
    convert=convert_modat_checkpoint,
    describe=describe_converted,
)
