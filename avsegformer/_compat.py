"""Run Detectron2 v0.6 on today's PyTorch, NumPy and Pillow.

This module is the only place that papers over incompatibilities of the Detectron2 v0.6 Python
sources (the only Detectron2 on PyPI, as ``pb1-detectron2``) with the dependencies we install.
It changes nothing on disk: every fix is applied in memory, only when it is needed, and only
before the affected ``detectron2`` sub-package is first imported. With a complete Detectron2
(compiled ``detectron2._C``, a release newer than v0.6) nothing is applied.

Fixes, each recorded in :data:`APPLIED_FIXES` when it is applied:

``detectron2._C``
    v0.6 imports the compiled extension at import time from ``detectron2.layers``,
    ``detectron2.structures`` and ``detectron2.evaluation``, and ``collect_env_info`` calls
    ``_C.get_compiler_version()``, ``_C.get_cuda_version()`` and ``_C.has_cuda()``. When no
    compiled extension can be found, a stub module takes its place: the three functions answer
    that no extension was built, and any other attribute raises an ``ImportError`` that says
    which compiled op was asked for. AVSegFormer uses none of those ops.
``PIL.Image.LINEAR``
    Removed in Pillow 10 and used as a default argument by ``detectron2.data.transforms`` at
    import time. Aliased to ``Image.BILINEAR``, which is what it always meant.
``importlib.abc``
    ``detectron2/projects/__init__.py`` uses ``importlib.abc`` after ``import importlib``,
    which does not load that submodule on Python >= 3.10.

Call :func:`apply` (``import avsegformer`` does) before importing any ``detectron2``
sub-package in your own scripts.
"""

import importlib.abc  # noqa: F401  (loaded for detectron2.projects on Python >= 3.10)
import importlib.machinery
import importlib.util
import logging
import sys
import types

__all__ = ["apply", "APPLIED_FIXES", "has_compiled_detectron2"]

logger = logging.getLogger(__name__)

STUB_MARKER = "__avsegformer_stub__"

#: Names of the fixes applied in this process, in the order they were applied.
APPLIED_FIXES = []


def has_compiled_detectron2() -> bool:
    """Whether a real, compiled ``detectron2._C`` is importable (our stub does not count)."""
    module = sys.modules.get("detectron2._C")
    if module is not None:
        return not getattr(module, STUB_MARKER, False)
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except (ImportError, ValueError):
        return False


def _make_c_stub() -> types.ModuleType:
    stub = types.ModuleType("detectron2._C")
    stub.__doc__ = "Stand-in for Detectron2's compiled extension, which is not built here."
    stub.__spec__ = importlib.machinery.ModuleSpec("detectron2._C", None)
    setattr(stub, STUB_MARKER, True)
    stub.get_compiler_version = lambda: "not built (pure-Python detectron2)"
    stub.get_cuda_version = lambda: "not built (pure-Python detectron2)"
    stub.has_cuda = lambda: False

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"detectron2._C.{name} is a compiled Detectron2 op, and this Detectron2 was installed "
            "without its C++/CUDA extension. AVSegFormer does not need it; to use it, install "
            "Detectron2 from source (see README, 'GPU machines')."
        )

    stub.__getattr__ = __getattr__
    return stub


def _fix_missing_c_extension() -> None:
    if has_compiled_detectron2():
        return
    import detectron2  # its __init__ only sets up the environment; safe before the stub

    stub = _make_c_stub()
    sys.modules["detectron2._C"] = stub
    detectron2._C = stub
    APPLIED_FIXES.append("detectron2._C")


def _fix_pil_linear() -> None:
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return
    Image.LINEAR = Image.BILINEAR
    APPLIED_FIXES.append("PIL.Image.LINEAR")


def apply() -> None:
    """Apply every needed fix; calling it again does nothing."""
    if getattr(apply, "_done", False):
        return
    _fix_missing_c_extension()
    _fix_pil_linear()
    apply._done = True
    if APPLIED_FIXES:
        logger.debug("Detectron2 v0.6 compatibility fixes applied: %s", ", ".join(APPLIED_FIXES))
