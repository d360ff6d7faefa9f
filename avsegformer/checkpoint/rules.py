"""Rename rules: the machinery every state-dict converter of this package is built from.

A converter is a list of rules. A rule maps a full-matching source-name pattern to a target name
(a ``re`` template or a function of the match), or to None to drop the tensor. Each source name
must match some rule, so a name no rule knows is an error that lists it, never a silently
dropped tensor. Dropped groups are announced with one log line each.
"""

import logging
import re
from collections.abc import Callable, Mapping

import torch

__all__ = ["Rule", "apply_rules", "rule", "unwrap_state_dict"]

logger = logging.getLogger(__name__)

Target = str | Callable[[re.Match], str] | None
Rule = tuple[re.Pattern, Target, str]

#: Parameter and buffer names of a BatchNorm layer, and of a layer with weight and bias.
BN_ENTRIES = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
WEIGHT_BIAS = r"(weight|bias)"


def rule(pattern: str, target: Target, group: str = "") -> Rule:
    """A rule: ``pattern`` (full match) -> ``target``; ``target=None`` drops the tensor and
    ``group`` names what is dropped in the log line."""
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


def apply_rules(
    state_dict: Mapping[str, torch.Tensor], rules: list[Rule], source: str
) -> dict[str, torch.Tensor]:
    """Rename every entry of ``state_dict`` by the first rule whose pattern matches it in full.

    Raises:
        KeyError: entries that no rule matches (all listed, up to 20).
        ValueError: two entries map to the same target name.
    """
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
