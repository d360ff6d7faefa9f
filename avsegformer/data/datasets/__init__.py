"""Dataset loaders and registration (AVSBench builtins and users' own clips).

``layout`` describes AVSBench on disk, ``avsbench`` loads and registers it, ``own_data`` registers
your own clips, ``builtin`` registers the ``avsbench_*``/``synthetic_*`` names at import.
"""

from ..errors import AVSDataError
from ..masks import (
    AVSS_NUM_CLASSES,
    BINARY_CLASSES,
    BINARY_COLORS,
    avss_palette,
    read_avs_mask,
    voc_palette,
)
from . import builtin  # noqa: F401  (registers avsbench_* and synthetic_* names, lazily)
from .avsbench import (
    load_avsbench,
    load_avsbench_avss,
    load_avsbench_ms3,
    load_avsbench_s4,
    read_avss_classes,
    register_avsbench,
)
from .builtin import register_all_avsbench
from .layout import AVSBENCH_SUBSETS, S4_CATEGORIES
from .own_data import register_avs_dataset

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
