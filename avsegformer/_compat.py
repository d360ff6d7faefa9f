"""Fail at ``import avsegformer``, with the remedy, when Detectron2 cannot run here.

Detectron2 v0.6, the release the project builds (``tools/build_detectron2.py``), imports its
compiled extension ``detectron2._C`` from ``detectron2.layers``, ``detectron2.structures`` and
``detectron2.evaluation``. The project's build ships a pure-Python stand-in for it; a Detectron2
built from source has the real one. Any other install (for example an older build of this project)
would fail later with ``cannot import name '_C' from 'detectron2'``; this check says what to run.
"""

import importlib.util

__all__ = ["require_detectron2"]

REMEDY = (
    "run `make setup` (or `python tools/build_detectron2.py`) to install the project's Detectron2 "
    "build, or install Detectron2 built from source"
)


def require_detectron2() -> None:
    """Raise an ImportError naming the remedy unless Detectron2 and its ``_C`` are importable."""
    try:
        spec = importlib.util.find_spec("detectron2._C")
    except ModuleNotFoundError as e:
        if e.name != "detectron2":
            raise
        raise ImportError(f"Detectron2 is not installed: {REMEDY}.") from None
    if spec is None:
        import detectron2

        location = detectron2.__path__[0]
        raise ImportError(
            f"the Detectron2 at {location} has no detectron2._C (neither the compiled extension "
            f"nor the project's pure-Python stand-in): {REMEDY}."
        )
