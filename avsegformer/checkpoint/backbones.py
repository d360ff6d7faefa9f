"""Key maps of the pretrained backbones (visual and audio) to this project's module names.

Name mappings (source -> ours), all without a ``backbone.`` prefix unless one is asked for:

* torchvision ResNet -> Detectron2 ResNet: ``conv1`` -> ``stem.conv1``, ``bn1`` ->
  ``stem.conv1.norm``, ``layerK.i.convJ`` -> ``res{K+1}.i.convJ``, ``layerK.i.bnJ`` ->
  ``res{K+1}.i.convJ.norm``, ``layerK.i.downsample.{0,1}`` -> ``res{K+1}.i.shortcut{,.norm}``;
  the ImageNet classifier ``fc`` is dropped.
* official PVTv2 -> timm PVTv2 (:class:`~avsegformer.modeling.backbone.PVTv2Backbone`):
  ``patch_embed1`` -> ``patch_embed``, ``patch_embedK`` -> ``stages.{K-1}.downsample`` (K > 1),
  ``blockK.j`` -> ``stages.{K-1}.blocks.j`` (``mlp.dwconv.dwconv`` -> ``mlp.dwconv``),
  ``normK`` -> ``stages.{K-1}.norm``; the ImageNet classifier ``head`` is dropped.
* torchvggish -> :class:`~avsegformer.modeling.audio_backbone.VGGish`: same names; the PCA
  parameters go to ``postprocessor.{pca_eigen_vectors, pca_means}``.

The ``*_rules`` functions take a source and a target prefix so that whole-model converters
(checkpoints that hold a backbone under some prefix) reuse them.
"""

import re
from collections.abc import Mapping

import torch

from .rules import BN_ENTRIES, WEIGHT_BIAS, Rule, apply_rules, rule

__all__ = [
    "TORCHVISION_RESNET_STAGES",
    "VGGISH_ENTRIES",
    "convert_pvt_v2",
    "convert_torchvision_resnet",
    "convert_vggish",
    "pvt_v2_rules",
    "resnet_rules",
]

#: torchvision stage name -> Detectron2 ``res`` index.
TORCHVISION_RESNET_STAGES = {"layer1": 2, "layer2": 3, "layer3": 4, "layer4": 5}

#: The 18 parameter names of torchvggish (one capture group: the whole name).
VGGISH_ENTRIES = r"((features\.(0|3|6|8|11|13)|embeddings\.(0|2|4))\.(weight|bias))"


def _add_num_batches_tracked(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision files have no ``num_batches_tracked``; add the zero BatchNorm starts from, so
    that the converted file loads with no missing keys."""
    for name in list(state_dict):
        if name.endswith(".running_mean"):
            counter = name[: -len("running_mean")] + "num_batches_tracked"
            state_dict.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return state_dict


def resnet_rules(prefix: str, stages: Mapping[str, int], target_prefix: str) -> list[Rule]:
    """Rules for a torchvision-layout ResNet under ``prefix`` whose stage ``name`` becomes
    Detectron2's ``{target_prefix}res{stages[name]}``."""
    stage = "(" + "|".join(re.escape(s) for s in stages) + ")"
    p, t = re.escape(prefix), target_prefix

    def res(m: re.Match) -> str:
        return f"{t}res{stages[m[1]]}.{m[2]}"

    return [
        rule(rf"{p}conv1\.weight", f"{t}stem.conv1.weight"),
        rule(rf"{p}bn1\.{BN_ENTRIES}", rf"{t}stem.conv1.norm.\1"),
        rule(rf"{p}{stage}\.(\d+)\.conv([123])\.weight", lambda m: f"{res(m)}.conv{m[3]}.weight"),
        rule(
            rf"{p}{stage}\.(\d+)\.bn([123])\.{BN_ENTRIES}",
            lambda m: f"{res(m)}.conv{m[3]}.norm.{m[4]}",
        ),
        rule(rf"{p}{stage}\.(\d+)\.downsample\.0\.weight", lambda m: f"{res(m)}.shortcut.weight"),
        rule(
            rf"{p}{stage}\.(\d+)\.downsample\.1\.{BN_ENTRIES}",
            lambda m: f"{res(m)}.shortcut.norm.{m[3]}",
        ),
    ]


def pvt_v2_rules(prefix: str, target_prefix: str) -> list[Rule]:
    """Rules for an official-layout PVTv2 under ``prefix`` -> timm layout under
    ``target_prefix``."""
    p, t = re.escape(prefix), target_prefix
    block_parts = r"(norm1|norm2|attn\.q|attn\.kv|attn\.proj|attn\.sr|attn\.norm|mlp\.fc1|mlp\.fc2)"
    return [
        rule(rf"{p}patch_embed1\.(proj|norm)\.{WEIGHT_BIAS}", rf"{t}patch_embed.\1.\2"),
        rule(
            rf"{p}patch_embed([234])\.(proj|norm)\.{WEIGHT_BIAS}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.downsample.{m[2]}.{m[3]}",
        ),
        rule(
            rf"{p}block([1-4])\.(\d+)\.{block_parts}\.{WEIGHT_BIAS}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}.{m[4]}",
        ),
        rule(
            rf"{p}block([1-4])\.(\d+)\.mlp\.dwconv\.dwconv\.{WEIGHT_BIAS}",
            lambda m: f"{t}stages.{int(m[1]) - 1}.blocks.{m[2]}.mlp.dwconv.{m[3]}",
        ),
        rule(rf"{p}norm([1-4])\.{WEIGHT_BIAS}", lambda m: f"{t}stages.{int(m[1]) - 1}.norm.{m[2]}"),
    ]


def convert_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision ResNet state dict (e.g. ``resnet50-19c8e357.pth``) to the names of
    Detectron2's ``build_resnet_backbone`` (without the ``backbone.`` prefix).

    BatchNorm ``num_batches_tracked`` counters missing from old files are added as 0. The
    classifier ``fc.*`` is dropped.
    """
    rules = resnet_rules("", TORCHVISION_RESNET_STAGES, "") + [
        rule(rf"fc\.{WEIGHT_BIAS}", None, "the ImageNet classifier fc.*"),
    ]
    return _add_num_batches_tracked(apply_rules(state_dict, rules, "torchvision ResNet"))


def convert_pvt_v2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official PVTv2 state dict (e.g. ``pvt_v2_b5.pth``) to the names of
    :class:`~avsegformer.modeling.backbone.PVTv2Backbone` (without the ``backbone.`` prefix).

    The ImageNet classifier ``head.*`` is dropped.
    """
    rules = pvt_v2_rules("", "") + [
        rule(rf"head\.{WEIGHT_BIAS}", None, "the ImageNet classifier head.*")
    ]
    return apply_rules(state_dict, rules, "official PVTv2")


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
    converted = apply_rules(state_dict, [rule(VGGISH_ENTRIES, r"\1")], "torchvggish")
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
