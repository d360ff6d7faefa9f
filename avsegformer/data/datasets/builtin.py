"""Builtin datasets: ``avsbench_{s4,ms3,avss}_{train,val,test}`` and their synthetic twins.

AVSBench lives under ``$AVSBENCH_ROOT`` when set, else ``$DETECTRON2_DATASETS/AVSBench`` (default
``./datasets/AVSBench``), in the folders ``Single-source``, ``Multi-sources`` and ``AVSS``.
``synthetic_{s4,ms3,avss}_{train,val,test}`` point at the same layout under
``$DETECTRON2_DATASETS/synthetic_avsbench`` (written by :mod:`avsegformer.data.synthetic`).
Registration only records paths; nothing is read until a dataset is used.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .avsbench import register_avsbench
from .layout import AVSBENCH_SUBSETS, SPLITS

__all__ = [
    "BUILTIN_AVSBENCH_NAMES",
    "default_avsbench_root",
    "default_synthetic_root",
    "register_all_avsbench",
]

#: Every builtin dataset name with its (subset, split).
BUILTIN_AVSBENCH_NAMES = {
    f"avsbench_{subset}_{split}": (subset, split) for subset in AVSBENCH_SUBSETS for split in SPLITS
}


def default_avsbench_root() -> str:
    """``$AVSBENCH_ROOT``, else ``$DETECTRON2_DATASETS/AVSBench`` (default ``datasets``)."""
    root = os.environ.get("AVSBENCH_ROOT")
    if not root:
        root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "AVSBench")
    return os.path.expanduser(root)


def default_synthetic_root() -> str:
    """``$DETECTRON2_DATASETS/synthetic_avsbench`` (default ``datasets/synthetic_avsbench``)."""
    root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_avsbench")
    return os.path.expanduser(root)


def register_all_avsbench(root: str, *, prefix: str = "avsbench", replace: bool = False) -> None:
    """Register the nine AVSBench-layout splits under ``root`` as ``<prefix>_<subset>_<split>``.

    Args:
        root: folder holding ``Single-source``, ``Multi-sources`` and ``AVSS``.
        prefix: ``avsbench`` for the real data, ``synthetic`` for the generated one.
        replace: drop earlier registrations of the same names first (to point the builtin
            names at another root after ``import avsegformer`` registered the default one).
    """
    for builtin_name, (subset, split) in BUILTIN_AVSBENCH_NAMES.items():
        name = builtin_name.replace("avsbench", prefix, 1)
        if replace and name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        folder = os.path.join(root, AVSBENCH_SUBSETS[subset]["folder"])
        register_avsbench(name, subset, folder, split)


# Only when imported as part of the package (Detectron2's convention), not when run as a script.
if __name__.endswith(".builtin"):
    register_all_avsbench(default_avsbench_root())
    register_all_avsbench(default_synthetic_root(), prefix="synthetic")
