"""Training and evaluation engine: trainer, hooks, crash-safe checkpointing, launcher."""

from .checkpoint import AtomicDetectionCheckpointer, atomic_write
from .hooks import BackboneFreezeHook, NonFiniteLossError, StatefulBestCheckpointer
from .launch import launch
from .trainer import Trainer

__all__ = [
    "AtomicDetectionCheckpointer",
    "BackboneFreezeHook",
    "NonFiniteLossError",
    "StatefulBestCheckpointer",
    "Trainer",
    "atomic_write",
    "launch",
]
