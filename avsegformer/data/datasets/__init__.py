"""Dataset loaders and registration (AVSBench builtins and users' own clips)."""

from . import builtin  # noqa: F401  (registers avsbench_* and synthetic_* names, lazily)
from .avsbench import (
    AVSBENCH_SUBSETS,
    AVSS_NUM_CLASSES,
    BINARY_CLASSES,
    BINARY_COLORS,
    S4_CATEGORIES,
    AVSDataError,
    avss_palette,
    load_avsbench,
    load_avsbench_avss,
    load_avsbench_ms3,
    load_avsbench_s4,
    read_avs_mask,
    read_avss_classes,
    register_avs_dataset,
    register_avsbench,
    voc_palette,
)
from .builtin import register_all_avsbench

__all__ = [
    "AVSBENCH_SUBSETS",
    "AVSS_NUM_CLASSES",
    "BINARY_CLASSES",
    "BINARY_COLORS",
    "S4_CATEGORIES",
    "AVSDataError",
    "avss_palette",
    "load_avsbench",
    "load_avsbench_avss",
    "load_avsbench_ms3",
    "load_avsbench_s4",
    "read_avs_mask",
    "read_avss_classes",
    "register_all_avsbench",
    "register_avs_dataset",
    "register_avsbench",
    "voc_palette",
]
