"""Key map of original CATR checkpoints (aspirinone/CATR.github.io) to our ``CATR`` model.

The original saves ``model.module.state_dict()`` of its ``Pred_endecoder``: the PVTv2-B5 under
``encoder_backbone.`` and no VGGish (it runs outside the model, from its own torchvggish file,
which our model receives through ``MODEL.AUDIO.WEIGHTS``). Our ``CATR`` keeps the original
names of every weight it uses, so the map is a rename of the backbone (the same PVTv2 map as
AVSegFormer's ``backbone.``) and identity elsewhere. The weights the original saves but never
uses (see :data:`CATR_DEAD_WEIGHTS`) are not built in our model and are dropped, with one log
line, or kept under their names for a model built with ``MODEL.CATR.STRICT_COMPAT``.
Registered as the checkpoint family ``"CATR"``.
"""

import logging
import re
from collections.abc import Mapping

import torch

from .backbones import pvt_v2_rules
from .families import recognized_by_keys, register_checkpoint_family
from .rules import BN_ENTRIES, WEIGHT_BIAS, apply_rules, rule, unwrap_state_dict

__all__ = ["CATR_DEAD_WEIGHTS", "convert_catr_checkpoint"]

logger = logging.getLogger(__name__)

#: The original's prefix of its visual backbone, and ours.
_ORIGINAL_BACKBONE, _BACKBONE = "encoder_backbone.", "backbone."

_MHA = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_ENCODER_LAYER = rf"self_attn\.{_MHA}|(linear1|linear2|norm1|norm2)\.{WEIGHT_BIAS}"
_DECODER_LAYER = rf"(self_attn|multihead_attn)\.{_MHA}|(linear[12]|norm[123])\.{WEIGHT_BIAS}"
# conv / BatchNorm / PReLU of the block gate's two outputs.
_GATE_OUTPUT = rf"output[12]\.(0\.{WEIGHT_BIAS}|1\.{BN_ENTRIES}|2\.weight)"

#: Live entries outside the backbone: our names are the original ones.
_LIVE_NAMES = "|".join(
    [
        rf"conv[234]\.conv2d_list\.[0-3]\.{WEIGHT_BIAS}",
        rf"vid_embed_proj\.{WEIGHT_BIAS}",
        r"obj_queries\.weight",
        rf"transformer\.spatial_encoder\.layers\.\d+\.({_ENCODER_LAYER})",
        rf"transformer\.temporal_encoder\.layers\.\d+\.({_ENCODER_LAYER})",
        rf"transformer\.temporal_encoder\.layers\.\d+\.(av_atten|va_atten)\.multihead_attn\.{_MHA}",
        rf"transformer\.temporal_encoder\.(attention_feature\.0\.{WEIGHT_BIAS}|{_GATE_OUTPUT})",
        rf"transformer\.decoder\.layers\.\d+\.({_DECODER_LAYER})",
        rf"transformer\.decoder\.norm\.{WEIGHT_BIAS}",
        rf"transformer\.audio_proj\.(fc|layer_norm)\.{WEIGHT_BIAS}",
        # No adapter3 / lay5 / gn5: that stage exists with MODEL.CATR.MASK_STRIDE 8 only.
        rf"spatial_decoder\.(lay[1-4]|gn[1-4]|adapter[12]|out_lay)\.{WEIGHT_BIAS}",
        rf"is_referred_head\.{WEIGHT_BIAS}",
        rf"instance_kernels_head\.layers\.[01]\.{WEIGHT_BIAS}",
    ]
)

#: Entry groups the original saves but no output depends on (no gradient ever reaches them),
#: as full-match patterns; ``{last}`` is the index of the last temporal encoder layer.
CATR_DEAD_WEIGHTS = (
    r"path[1-4]\..+",  # FeatureFusionBlocks, never called
    r"conv1\..+",  # the stride-4 input projection: computed, output never read
    r"fusion_module\..+",  # never called
    r"transformer\.temporal_encoder\.(av_atten|va_atten)\..+",  # never called
    # The 15680-channel 1x1 convs inside every cross-attention module: never called.
    r"transformer\.temporal_encoder\.layers\.\d+\.(av_atten|va_atten)\.vid_embed_proj\..+",
    # The last layer's audio update only feeds that layer's memory, which is discarded.
    r"transformer\.temporal_encoder\.layers\.{last}\.va_atten\..+",
)
_DEAD_GROUP = (
    "the weights the original never uses (path1-4, conv1, fusion_module, the temporal "
    "encoder's own av_atten/va_atten, every vid_embed_proj of a cross-attention, the last "
    "temporal layer's va_atten)"
)


def _last_temporal_layer(state_dict: Mapping[str, torch.Tensor]) -> int:
    layers = {
        int(m[1])
        for name in state_dict
        if (m := re.match(r"transformer\.temporal_encoder\.layers\.(\d+)\.", name))
    }
    if not layers:
        raise ValueError("CATR checkpoint: no transformer.temporal_encoder.layers.* entries")
    return max(layers)


def convert_catr_checkpoint(
    checkpoint: object, keep_unused: bool = False
) -> dict[str, torch.Tensor]:
    """Map an original CATR checkpoint (PVTv2-B5, S4: the only released model) to the state dict
    of our ``CATR`` meta-architecture.

    ``encoder_backbone.*`` (official PVTv2 names) -> ``backbone.*`` (timm names, as for
    AVSegFormer's ``backbone.``); every other live entry keeps its name (``conv2``-``conv4``,
    ``vid_embed_proj``, ``obj_queries``, ``transformer.{spatial_encoder, temporal_encoder,
    decoder, audio_proj}``, ``spatial_decoder``, ``is_referred_head``,
    ``instance_kernels_head``). The groups of :data:`CATR_DEAD_WEIGHTS` are dropped with one log
    line. The result holds no ``audio_backbone.*``: VGGish comes from ``MODEL.AUDIO.WEIGHTS``.

    Args:
        checkpoint: the loaded file: a bare state dict (as ``train.py`` saves it), one with
            ``module.`` prefixes, or a ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper.
        keep_unused: keep the groups of :data:`CATR_DEAD_WEIGHTS` under their names, for a
            model built with ``MODEL.CATR.STRICT_COMPAT``.

    Raises:
        KeyError: entries that match none of CATR's names (all listed).
        ValueError: ``checkpoint`` is not a state dict, or its backbone is not PVTv2.
    """
    state_dict = unwrap_state_dict(checkpoint, "CATR checkpoint")
    if f"{_ORIGINAL_BACKBONE}patch_embed1.proj.weight" not in state_dict:
        raise ValueError(
            f"CATR checkpoint: {_ORIGINAL_BACKBONE}patch_embed1.proj.weight (PVTv2) not found; "
            "the original CATR releases PVTv2-B5 only (its ResNet-50 model is missing)"
        )
    last = _last_temporal_layer(state_dict)
    target = r"\g<0>" if keep_unused else None
    dead = [rule(p.replace("{last}", str(last)), target, _DEAD_GROUP) for p in CATR_DEAD_WEIGHTS]
    rules = pvt_v2_rules(_ORIGINAL_BACKBONE, _BACKBONE) + dead + [rule(f"({_LIVE_NAMES})", r"\1")]
    converted = apply_rules(state_dict, rules, "CATR PVTv2")
    logger.info("Converted a CATR PVTv2 checkpoint: %d entries", len(converted))
    return converted


def _describe(converted: Mapping[str, torch.Tensor]) -> dict:
    def count(prefix: str) -> int:
        return len({n[len(prefix) :].split(".")[0] for n in converted if n.startswith(prefix)})

    ffn = converted.get("transformer.temporal_encoder.layers.0.linear1.weight")
    queries = converted.get("obj_queries.weight")
    return {
        "backbone": "PVTv2-B5",
        "num_classes": 1,
        "num_queries": int(queries.shape[0]) if queries is not None else None,
        "encoder_layers": count("transformer.spatial_encoder.layers."),
        "decoder_layers": count("transformer.decoder.layers."),
        "dim_feedforward": int(ffn.shape[0]) if ffn is not None else None,
        "audio_backbone": "not included: MODEL.AUDIO.WEIGHTS gives VGGish",
    }


register_checkpoint_family(
    "CATR",
    author="aspirinone/CATR.github.io",
    # The block gate and the referred-query head are CATR's own; the backbone under the
    # original's prefix tells an original checkpoint from a converted one (``backbone.``).
    recognizes=recognized_by_keys(
        "transformer.temporal_encoder.attention_feature.0.weight",
        "is_referred_head.weight",
        f"{_ORIGINAL_BACKBONE}patch_embed1.proj.weight",
    ),
    convert=convert_catr_checkpoint,
    describe=_describe,
    convert_keeping_unused=lambda state_dict: convert_catr_checkpoint(state_dict, keep_unused=True),
)
