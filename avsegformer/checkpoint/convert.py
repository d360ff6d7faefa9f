"""Pure state-dict converters: original and pretrained checkpoints to this project's names.

Every function takes a state dict (``{name: tensor}``) and returns a new one; nothing here reads or
writes files (``tools/convert_*.py`` do). Each source name is matched against a complete pattern,
so a name this module does not know is an error that lists it, never a silently dropped tensor.
Groups the original model saves but never uses are dropped with one log line each.

Name mappings (source -> ours):

* torchvision ResNet-50 -> Detectron2 ResNet: ``conv1`` -> ``stem.conv1``, ``bn1`` ->
  ``stem.conv1.norm``, ``layerK.i.convJ`` -> ``res{K+1}.i.convJ``, ``layerK.i.bnJ`` ->
  ``res{K+1}.i.convJ.norm``, ``layerK.i.downsample.{0,1}`` -> ``res{K+1}.i.shortcut{,.norm}``;
  the ImageNet classifier ``fc`` is dropped.
* official PVTv2 -> timm PVTv2 (:class:`~avsegformer.modeling.backbone.PVTv2Backbone`):
  ``patch_embed1`` -> ``patch_embed``, ``patch_embedK`` -> ``stages.{K-1}.downsample`` (K > 1),
  ``blockK.j`` -> ``stages.{K-1}.blocks.j`` (``mlp.dwconv.dwconv`` -> ``mlp.dwconv``),
  ``normK`` -> ``stages.{K-1}.norm``; the ImageNet classifier ``head`` is dropped.
* torchvggish -> :class:`~avsegformer.modeling.audio_backbone.VGGish`: same names; the PCA
  parameters go to ``postprocessor.{pca_eigen_vectors, pca_means}``.
* original AVSegFormer -> our ``AVSegFormer`` meta-architecture: see
  :func:`convert_avsegformer_checkpoint`.
"""

import logging
import re
from collections.abc import Callable, Mapping

import torch

__all__ = [
    "convert_avsegformer_checkpoint",
    "convert_pvt_v2",
    "convert_torchvision_resnet",
    "convert_vggish",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

# A rule maps a full-matching source-name pattern to a target name (a ``re`` template or a
# function of the match), or to None to drop the tensor.
Target = str | Callable[[re.Match], str] | None
Rule = tuple[re.Pattern, Target, str]

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_WB = r"(weight|bias)"


def _rule(pattern: str, target: Target, group: str = "") -> Rule:
    return re.compile(pattern), target, group


def unwrap_state_dict(checkpoint: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the bare state dict inside a loaded checkpoint.

    Accepts a bare ``{name: tensor}`` dict, a ``{"model": ...}`` or ``{"state_dict": ...}``
    wrapper (other wrapper entries such as optimiser state are ignored), and names carrying the
    ``module.`` prefix of ``DataParallel``/``DistributedDataParallel`` (stripped).

    Raises:
        ValueError: ``checkpoint`` holds no state dict, or a value is not a tensor.
    """
    state_dict = checkpoint
    for wrapper_key in ("model", "state_dict"):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper_key), Mapping):
            state_dict = state_dict[wrapper_key]
            break
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(
            f"{source} is not a state dict: expected a non-empty {{name: tensor}} dict, or one "
            f"under a 'model' or 'state_dict' key; got {type(checkpoint).__name__}"
        )
    not_tensors = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise ValueError(
            f"{source} is not a state dict: {len(not_tensors)} entries are not tensors "
            f"(first: {not_tensors[:5]})"
        )
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _apply_rules(
    state_dict: Mapping[str, torch.Tensor], rules: list[Rule], source: str
) -> dict[str, torch.Tensor]:
    converted = {}
    unknown = []
    dropped: dict[str, list[str]] = {}
    for name, tensor in state_dict.items():
        for pattern, target, group in rules:
            match = pattern.fullmatch(name)
            if match is None:
                continue
            if target is None:
                dropped.setdefault(group, []).append(name)
            else:
                new_name = target(match) if callable(target) else match.expand(target)
                if new_name in converted:
                    raise ValueError(f"{source}: two entries map to {new_name}")
                converted[new_name] = tensor
            break
        else:
            unknown.append(name)
    if unknown:
        shown = ", ".join(unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise KeyError(f"{source}: {len(unknown)} unknown entries: {shown}")
    for group, names in dropped.items():
        numel = sum(state_dict[n].numel() for n in names)
        logger.info("%s: dropped %s: %d tensors, %d values", source, group, len(names), numel)
    return converted


def _add_num_batches_tracked(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision files have no ``num_batches_tracked``; add the zero BatchNorm starts from, so
    that the converted file loads with no missing keys."""
    for name in list(state_dict):
        if name.endswith(".running_mean"):
            counter = name[: -len("running_mean")] + "num_batches_tracked"
            state_dict.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return state_dict


# ---------------------------------------------------------------------------------------------
# ResNet-50: torchvision layout -> Detectron2 layout
# ---------------------------------------------------------------------------------------------
def _resnet_rules(prefix: str, stages: dict[str, int], target_prefix: str) -> list[Rule]:
    """Rules for a torchvision-layout ResNet whose stage ``name`` becomes Detectron2's
    ``res{stages[name]}``."""
    stage = "(" + "|".join(re.escape(s) for s in stages) + ")"
    p, t = re.escape(prefix), target_prefix

    def res(m: re.Match) -> str:
        return f"{t}res{stages[m[1]]}.{m[2]}"

    return [
        _rule(rf"{p}conv1\.weight", f"{t}stem.conv1.weight"),
        _rule(rf"{p}bn1\.{_BN}", rf"{t}stem.conv1.norm.\1"),
        _rule(rf"{p}{stage}\.(\d+)\.conv([123])\.weight", lambda m: f"{res(m)}.conv{m[3]}.weight"),
        _rule(
            rf"{p}{stage}\.(\d+)\.bn([123])\.{_BN}", lambda m: f"{res(m)}.conv{m[3]}.norm.{m[4]}"
        ),
        _rule(rf"{p}{stage}\.(\d+)\.downsample\.0\.weight", lambda m: f"{res(m)}.shortcut.weight"),
        _rule(
            rf"{p}{stage}\.(\d+)\.downsample\.1\.{_BN}", lambda m: f"{res(m)}.shortcut.norm.{m[3]}"
        ),
    ]


_TORCHVISION_STAGES = {"layer1": 2, "layer2": 3, "layer3": 4, "layer4": 5}


def convert_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision ResNet state dict (e.g. ``resnet50-19c8e357.pth``) to the names of
    Detectron2's ``build_resnet_backbone`` (without the ``backbone.`` prefix).

    BatchNorm ``num_batches_tracked`` counters missing from old files are added as 0. The
    classifier ``fc.*`` is dropped.
    """
    rules = _resnet_rules("", _TORCHVISION_STAGES, "") + [
        _rule(rf"fc\.{_WB}", None, "the ImageNet classifier fc.*"),
    ]
    return _add_num_batches_tracked(_apply_rules(state_dict, rules, "torchvision ResNet"))


# ---------------------------------------------------------------------------------------------
# PVTv2: official layout -> timm layout
# ---------------------------------------------------------------------------------------------
def _pvt_rules(prefix: str, target_prefix: str) -> list[Rule]:
    p, t = re.escape(prefix), target_prefix
    block_parts = r"(norm1|norm2|attn\.q|attn\.kv|attn\.proj|attn\.sr|attn\.norm|mlp\.fc1|mlp\.fc2)"
    return [
        _rule(rf"{p}patch_embed1\.(proj|norm)\.{_WB}", rf"{t}patch_embed.\1.\2"),
        _rule(
            rf"{p}patch_embed([234])\.(proj|norm)\.{_WB}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.downsample.{m[2]}.{m[3]}",
        ),
        _rule(
            rf"{p}block([1-4])\.(\d+)\.{block_parts}\.{_WB}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}.{m[4]}",
        ),
        _rule(
            rf"{p}block([1-4])\.(\d+)\.mlp\.dwconv\.dwconv\.{_WB}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.blocks.{m[2]}.mlp.dwconv.{m[3]}",
        ),
        _rule(rf"{p}norm([1-4])\.{_WB}", lambda m: f"{t}stages.{int(m[1]) - 1}.norm.{m[2]}"),
    ]


def convert_pvt_v2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official PVTv2 state dict (e.g. ``pvt_v2_b5.pth``) to the names of
    :class:`~avsegformer.modeling.backbone.PVTv2Backbone` (without the ``backbone.`` prefix).

    The ImageNet classifier ``head.*`` is dropped.
    """
    rules = _pvt_rules("", "") + [_rule(rf"head\.{_WB}", None, "the ImageNet classifier head.*")]
    return _apply_rules(state_dict, rules, "official PVTv2")


# ---------------------------------------------------------------------------------------------
# VGGish
# ---------------------------------------------------------------------------------------------
_VGGISH_NAMES = r"((features\.(0|3|6|8|11|13)|embeddings\.(0|2|4))\.(weight|bias))"


def convert_vggish(
    state_dict: Mapping[str, torch.Tensor], pca: Mapping[str, object] | None = None
) -> dict[str, torch.Tensor]:
    """Check and copy a torchvggish state dict (``vggish-10086976.pth``) into a tensor-only,
    float32 state dict of :class:`~avsegformer.modeling.audio_backbone.VGGish`.

    Args:
        state_dict: ``features.*`` and ``embeddings.*`` of torchvggish.
        pca: optionally the contents of ``vggish_pca_params-970ea276.pth``: ``pca_eigen_vectors``
            ``[128, 128]`` and ``pca_means`` ``[128]`` or ``[128, 1]`` (tensors or NumPy arrays).
            They become ``postprocessor.pca_eigen_vectors`` / ``postprocessor.pca_means``.
    """
    converted = _apply_rules(state_dict, [_rule(_VGGISH_NAMES, r"\1")], "torchvggish")
    expected = 2 * (6 + 3)
    if len(converted) != expected:
        raise KeyError(
            f"torchvggish: expected the {expected} entries of features.* and embeddings.*, "
            f"got {len(converted)}"
        )
    converted = {k: v.float() for k, v in converted.items()}
    if pca is not None:
        missing = {"pca_eigen_vectors", "pca_means"} - set(pca)
        if missing:
            raise KeyError(f"VGGish PCA parameters: missing {sorted(missing)}")
        vectors = torch.as_tensor(pca["pca_eigen_vectors"], dtype=torch.float32)
        means = torch.as_tensor(pca["pca_means"], dtype=torch.float32).reshape(-1)
        if vectors.shape != (128, 128) or means.shape != (128,):
            raise ValueError(
                "VGGish PCA parameters: expected pca_eigen_vectors [128, 128] and pca_means "
                f"[128], got {list(vectors.shape)} and {list(means.shape)}"
            )
        converted["postprocessor.pca_eigen_vectors"] = vectors.contiguous()
        converted["postprocessor.pca_means"] = means.contiguous()
    return converted


# ---------------------------------------------------------------------------------------------
# original AVSegFormer checkpoint -> our AVSegFormer meta-architecture
# ---------------------------------------------------------------------------------------------
_MHA = r"(self_attn|cross_attn)\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
_ENCODER_PARTS = (
    r"self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)|norm1|norm2|linear1"
    r"|linear2"
)

_HEAD_RULES = [
    _rule(r"head\.level_embed", "pixel_decoder.level_embed"),
    _rule(rf"head\.in_proj\.(\d+)\.([01])\.{_WB}", r"pixel_decoder.input_proj.\1.\2.\3"),
    _rule(
        rf"head\.transformer\.encoder\.layers\.(\d+)\.({_ENCODER_PARTS})\.{_WB}",
        r"pixel_decoder.encoder.layers.\1.\2.\4",
    ),
    _rule(rf"head\.lateral_conv\.([01])\.{_WB}", r"pixel_decoder.lateral_conv.\1.\2"),
    _rule(rf"head\.out_conv\.([01])\.{_WB}", r"pixel_decoder.output_conv.\1.\2"),
    _rule(r"head\.query_generator\.query\.weight", "query_generator.query.weight"),
    _rule(
        rf"head\.query_generator\.layers\.(\d+)\.({_MHA}|(ffn\.[02]|norm[123])\.{_WB})",
        r"query_generator.layers.\1.\2",
    ),
    _rule(r"head\.learnable_query\.weight", "learnable_query.weight"),
    _rule(
        rf"head\.transformer\.decoder\.layers\.(\d+)\.({_MHA}|(norm[123]|linear[12])\.{_WB})",
        r"transformer_decoder.layers.\1.\2",
    ),
    _rule(rf"head\.fusion_block\.((q_proj|kv_proj|proj)\.{_WB})", r"mixer.\1"),
    _rule(rf"head\.mlp\.layers\.([012])\.{_WB}", r"mask_head.mlp.layers.\1.\2"),
    _rule(rf"head\.fc\.([024])\.{_WB}", r"mask_head.fc.\1.\2"),
    _rule(r"head\.fpn\..+", None, "head.fpn.* (never used by the original model)"),
    _rule(r"head\.attn_fc\..+", None, "head.attn_fc.* (never used by the original model)"),
    _rule(rf"audio_proj\.{_WB}", r"audio_proj.\1"),
    _rule(rf"vggish\.{_VGGISH_NAMES}", r"audio_backbone.\1"),
]

_AVSEGFORMER_RESNET_STAGES = {"layer1": 2, "layer2": 3, "layer3_1": 4, "layer4_1": 5}


def convert_avsegformer_head(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the state dict of the original ``AVSegHead`` alone (names without the ``head.``
    prefix, e.g. ``transformer.encoder.layers.0.norm1.weight``) to our meta-architecture's names,
    with the rules of :func:`convert_avsegformer_checkpoint` (``fpn.*`` and ``attn_fc.*`` dropped).
    """
    head = {f"head.{name}": tensor for name, tensor in state_dict.items()}
    return _apply_rules(head, _HEAD_RULES, "AVSegFormer head")


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
    if "backbone.conv1.weight" in state_dict:
        backbone_rules = _resnet_rules("backbone.", _AVSEGFORMER_RESNET_STAGES, "backbone.") + [
            _rule(
                r"backbone\.layer3_2\..+",
                None,
                "backbone.layer3_2.* (never used by the original model)",
            ),
            _rule(
                r"backbone\.layer4_2\..+",
                None,
                "backbone.layer4_2.* (never used by the original model)",
            ),
        ]
        kind = "R50"
    elif "backbone.patch_embed1.proj.weight" in state_dict:
        backbone_rules = _pvt_rules("backbone.", "backbone.")
        kind = "PVTv2"
    else:
        raise ValueError(
            "AVSegFormer checkpoint: found neither backbone.conv1.weight (ResNet-50) nor "
            "backbone.patch_embed1.proj.weight (PVTv2); is this an AVSegFormer checkpoint?"
        )
    converted = _apply_rules(state_dict, backbone_rules + _HEAD_RULES, f"AVSegFormer {kind}")
    logger.info("Converted an AVSegFormer %s checkpoint: %d entries", kind, len(converted))
    return converted
