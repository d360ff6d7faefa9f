"""The project's config schema: every key of every meta-architecture."""

from .avsegformer import add_avsegformer_model_config
from .catr import add_catr_config
from .combo import add_combo_config
from .defaults import add_shared_config
from .mask_former import add_mask_former_config
from .modat import add_modat_model_config
from .negative_audio import add_negative_audio_config

__all__ = ["add_avsegformer_config"]


def add_avsegformer_config(cfg):
    """Add every key of the project to a Detectron2 config, in place: the keys shared by all
    meta-architectures, then each meta-architecture's own. Calling it twice is harmless."""
    if hasattr(cfg.MODEL, "AVSEGFORMER"):
        return
    add_shared_config(cfg)
    add_negative_audio_config(cfg)
    add_avsegformer_model_config(cfg)
    add_modat_model_config(cfg)
    add_mask_former_config(cfg)
    add_combo_config(cfg)
    add_catr_config(cfg)
