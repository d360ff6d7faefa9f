"""AVSegFormer: audio-visual segmentation as a Detectron2 plugin.

Importing this package makes Detectron2 v0.6 importable on current dependencies (see
:mod:`avsegformer._compat`) and registers every component: the meta-architecture, backbones,
audio backbones, pixel decoder, datasets and evaluator.
"""

from . import _compat

_compat.apply()

from . import data, evaluation, modeling  # noqa: E402  (registration)
from .config import add_avsegformer_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["add_avsegformer_config", "data", "evaluation", "modeling", "__version__"]
