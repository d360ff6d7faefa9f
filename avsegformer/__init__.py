"""AVSegFormer: audio-visual segmentation as a Detectron2 plugin.

Importing this package checks that the installed Detectron2 can run (see
:mod:`avsegformer._compat`) and registers every component: the meta-architecture, backbones,
audio backbones, pixel decoder, datasets and evaluator.
"""

from ._compat import require_detectron2

require_detectron2()  # before the registrations import detectron2, for a clear error

from . import data, evaluation, modeling  # noqa: E402  (registration)
from .config import add_avsegformer_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["add_avsegformer_config", "data", "evaluation", "modeling", "__version__"]
