"""Training and evaluation engine: trainer, hooks, launcher.

The checkpointer lives in :mod:`avsegformer.checkpoint`; it is re-exported here for the engine's
users.
"""

from ..checkpoint import AtomicDetectionCheckpointer, atomic_write
from .hooks import (
    BackboneFreezeHook,
    NegativeAudioStartHook,
    NonFiniteLossError,
    StatefulBestCheckpointer,
)
from .launch import launch
from .trainer import Trainer

__all__ = [
    "AtomicDetectionCheckpointer",
    "BackboneFreezeHook",
    "NegativeAudioStartHook",
    "NonFiniteLossError",
    "StatefulBestCheckpointer",
    "Trainer",
    "atomic_write",
    "launch",
]
