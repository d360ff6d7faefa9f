"""Checkpoint families: which original code wrote a checkpoint, told from its keys.

Each family (AVSegFormer; further meta-architectures register their own) states how to
recognise its checkpoints and how to convert them. :func:`convert_checkpoint` picks the one
family that recognises a state dict and refuses a state dict no family, or more than one,
recognises.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import load_weights_file
from .rules import unwrap_state_dict

__all__ = [
    "CheckpointFamily",
    "checkpoint_families",
    "convert_checkpoint",
    "convert_checkpoint_file",
    "describe_backbone_and_classes",
    "detect_checkpoint_family",
    "original_backbone_kind",
    "recognized_by_keys",
    "register_checkpoint_family",
]

logger = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


def _no_facts(state_dict: StateDict) -> dict:
    return {}


@dataclass(frozen=True)
class CheckpointFamily:
    """One kind of original checkpoint.

    Attributes:
        name: short name, e.g. ``"AVSegFormer"``.
        author: where the original code lives, recorded in converted files.
        recognizes: ``state_dict -> bool``, True for this family's checkpoints (names only).
        convert: ``state_dict -> state dict`` of this project's meta-architecture.
        describe: ``converted state dict -> dict`` of facts written beside the weights (e.g.
            backbone, number of classes).
        convert_keeping_unused: like ``convert``, but keeping the entries the original saves
            and never uses, for a model that builds them too (None: the family has none).
    """

    name: str
    author: str
    recognizes: Callable[[StateDict], bool]
    convert: Callable[[StateDict], dict[str, torch.Tensor]]
    describe: Callable[[StateDict], dict] = _no_facts
    convert_keeping_unused: Callable[[StateDict], dict[str, torch.Tensor]] | None = None


_FAMILIES: dict[str, CheckpointFamily] = {}


def register_checkpoint_family(
    name: str,
    *,
    author: str,
    recognizes: Callable[[StateDict], bool],
    convert: Callable[[StateDict], dict[str, torch.Tensor]],
    describe: Callable[[StateDict], dict] | None = None,
    convert_keeping_unused: Callable[[StateDict], dict[str, torch.Tensor]] | None = None,
) -> CheckpointFamily:
    """Make ``tools/convert_checkpoint.py`` know a family of original checkpoints.

    Raises:
        ValueError: a family of that name is already registered.
    """
    if name in _FAMILIES:
        raise ValueError(f"checkpoint family {name!r} is already registered")
    family = CheckpointFamily(
        name, author, recognizes, convert, describe or _no_facts, convert_keeping_unused
    )
    _FAMILIES[name] = family
    return family


def recognized_by_keys(*keys: str) -> Callable[[StateDict], bool]:
    """A family's ``recognizes`` test: True for a state dict holding every one of ``keys``
    (entries of modules no other family has)."""
    if not keys:
        raise ValueError("recognized_by_keys needs at least one key")

    def recognizes(state_dict: StateDict) -> bool:
        return all(key in state_dict for key in keys)

    recognizes.__doc__ = f"True when the state dict holds {', '.join(keys)}."
    return recognizes


def original_backbone_kind(
    state_dict: StateDict,
    *,
    family: str,
    resnet_key: str,
    pvt_key: str = "backbone.patch_embed1.proj.weight",
) -> str:
    """``"R50"`` or ``"PVTv2"``: the visual backbone of an original checkpoint, told by the first
    entry of each backbone in the original's names (official PVTv2 names in every family).

    Raises:
        ValueError: neither entry is present; the message names the family and both entries.
    """
    if resnet_key in state_dict:
        return "R50"
    if pvt_key in state_dict:
        return "PVTv2"
    raise ValueError(
        f"{family} checkpoint: found neither {resnet_key} (ResNet-50) nor {pvt_key} (PVTv2); "
        f"is this checkpoint from {family}?"
    )


def describe_backbone_and_classes(
    converted: StateDict, *, classifier: str, extra_classes: int = 0
) -> dict:
    """Facts of a converted state dict of this project's models: ``{"backbone": "R50" or
    "PVTv2-B5", "num_classes": K or None}``.

    Args:
        converted: our names (Detectron2's ResNet has ``backbone.stem.conv1.weight``).
        classifier: the entry whose first dimension counts the classes.
        extra_classes: rows of the classifier that are not classes (Mask2Former's "no object").
    """
    weight = converted.get(classifier)
    return {
        "backbone": "R50" if "backbone.stem.conv1.weight" in converted else "PVTv2-B5",
        "num_classes": int(weight.shape[0]) - extra_classes if weight is not None else None,
    }


def checkpoint_families() -> list[str]:
    """Names of the registered families, in registration order."""
    return list(_FAMILIES)


def detect_checkpoint_family(state_dict: StateDict, source: str = "checkpoint") -> CheckpointFamily:
    """The one registered family that recognises ``state_dict`` (a bare state dict).

    Raises:
        ValueError: no family or several families recognise it; the message names the known
            families and a few of the keys.
    """
    matches = [f for f in _FAMILIES.values() if f.recognizes(state_dict)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        sample = ", ".join(list(state_dict)[:5])
        raise ValueError(
            f"{source}: not a checkpoint of a known family ({', '.join(_FAMILIES)}); "
            f"its first keys are {sample}"
        )
    raise ValueError(
        f"{source}: recognised by several checkpoint families: {[f.name for f in matches]}"
    )


def convert_checkpoint(
    checkpoint: object, source: str = "checkpoint", *, keep_unused: bool = False
) -> dict:
    """Convert a loaded original checkpoint of any registered family.

    Args:
        checkpoint: the loaded file (bare state dict, ``module.`` prefixes, or a ``{"model":
            ...}`` / ``{"state_dict": ...}`` wrapper).
        source: name used in error messages, e.g. the file name.
        keep_unused: keep the entries the original saves and never uses (for a model that
            builds them, e.g. CATR with ``MODEL.CATR.STRICT_COMPAT``); an error for a family
            that cannot.

    Returns:
        ``{"model": state_dict, "__author__": ..., "family": ..., "matching_heuristics": False,
        **facts}``, ready for ``torch.save`` and loadable as ``MODEL.WEIGHTS``.

    Raises:
        ValueError: not a state dict, or not of a known family.
        KeyError: the family's converter met entries it does not know.
    """
    state_dict = unwrap_state_dict(checkpoint, source)
    family = detect_checkpoint_family(state_dict, source)
    convert = family.convert_keeping_unused if keep_unused else family.convert
    if convert is None:
        raise ValueError(
            f"{source}: a {family.name} checkpoint's unused entries cannot be kept (no model "
            "of that family builds them); convert without keeping them"
        )
    try:
        converted = convert(state_dict)
    except (KeyError, ValueError) as error:  # name the file, keep the converter's message
        message = error.args[0] if error.args else ""
        raise type(error)(f"{source}: {message}") from error
    return {
        "model": converted,
        "__author__": f"{family.author} (converted)",
        "family": family.name,
        "matching_heuristics": False,
        **family.describe(converted),
        **({"unused_entries_kept": True} if keep_unused else {}),
    }


def convert_checkpoint_file(src: str | Path, dst: str | Path, *, keep_unused: bool = False) -> dict:
    """Read the original checkpoint ``src`` (without running pickled code), convert it with
    :func:`convert_checkpoint` (``keep_unused`` passed on) and write the result to ``dst``
    (folders created).

    Returns:
        What was written.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError, KeyError: ``src`` is not a plain state dict, or not of a known family, or
            holds entries its family does not know; the message names ``src``.
    """
    output = convert_checkpoint(load_weights_file(src), source=str(src), keep_unused=keep_unused)
    output["source"] = Path(src).name
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(output, dst)
    facts = {k: v for k, v in output.items() if k not in ("model", "__author__")}
    logger.info("wrote %s (%d entries): %s", dst, len(output["model"]), facts)
    return output
