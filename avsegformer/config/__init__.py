"""The project's config schema and loading.

:func:`add_avsegformer_config` (:mod:`.schema`) adds every key of the project to Detectron2's
defaults: the keys shared by all meta-architectures (:mod:`.defaults`) and each
meta-architecture's own (one module per model, e.g. :mod:`.avsegformer`). yacs refuses unknown
keys, so these modules are the schema of every YAML under ``configs/``. :func:`setup_cfg`
(:mod:`.loading`) is how every tool turns a YAML file and overrides into a config.
"""

from .loading import fall_back_to_cpu, setup_cfg
from .schema import add_avsegformer_config

__all__ = ["add_avsegformer_config", "fall_back_to_cpu", "setup_cfg"]
