"""Activations of transformer feed-forward networks, chosen by name in constructors and configs."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "activation_fn", "activation_module"]

#: Name -> (function, module class).
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], type[nn.Module]]] = {
    "relu": (F.relu, nn.ReLU),
    "gelu": (F.gelu, nn.GELU),
}


def _lookup(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` ("relu" or "gelu")."""
    return _lookup(name)[0]


def activation_module(name: str) -> nn.Module:
    """A new activation module called ``name`` ("relu" or "gelu")."""
    return _lookup(name)[1]()
