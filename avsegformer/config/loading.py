"""Turning a YAML file and overrides into a config: :func:`setup_cfg`, the one way every tool
does it."""

import logging
import os
from collections.abc import Sequence

import torch
from detectron2.config import get_cfg

from .schema import add_avsegformer_config

__all__ = ["fall_back_to_cpu", "setup_cfg"]

logger = logging.getLogger(__name__)


def setup_cfg(config_file: str | os.PathLike, opts: Sequence[str] = (), *, freeze: bool = True):
    """Detectron2's defaults + the project's keys + ``config_file`` + ``KEY VALUE`` ``opts``.

    A CUDA ``MODEL.DEVICE`` on a machine without CUDA becomes ``cpu`` with one warning (see
    :func:`fall_back_to_cpu`), so the task configs, whose device is ``cuda``, run on a laptop.
    """
    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(os.fspath(config_file))
    cfg.merge_from_list(list(opts))
    fall_back_to_cpu(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def fall_back_to_cpu(cfg) -> bool:
    """Set an unfrozen ``cfg``'s ``MODEL.DEVICE`` to ``cpu`` when it names CUDA and CUDA is not
    available, logging one warning. Returns whether it did."""
    device = cfg.MODEL.DEVICE
    if not device.startswith("cuda") or torch.cuda.is_available():
        return False
    logger.warning(
        "MODEL.DEVICE is %r but CUDA is not available: running on the CPU "
        "(pass MODEL.DEVICE cpu to silence this)",
        device,
    )
    cfg.MODEL.DEVICE = "cpu"
    return True
