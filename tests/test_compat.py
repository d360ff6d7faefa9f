"""Detectron2 v0.6 works on this stack through avsegformer._compat, and only where needed."""

import subprocess
import sys
import textwrap

from avsegformer import _compat

import pytest


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_detectron2_subpackages_import_after_avsegformer():
    out = run_python(
        """
        import avsegformer
        import detectron2.checkpoint, detectron2.data, detectron2.engine
        import detectron2.evaluation, detectron2.modeling
        from detectron2.data import transforms
        print(transforms.ExtentTransform.__init__.__defaults__[0])
        """
    )
    from PIL import Image

    assert int(out.strip()) == int(Image.BILINEAR)


def test_collect_env_info_reports_the_missing_extension():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info
    if not _compat.has_compiled_detectron2():
        assert "not built (pure-Python detectron2)" in info


@pytest.mark.skipif(_compat.has_compiled_detectron2(), reason="a compiled detectron2._C exists")
def test_stub_is_applied_when_the_extension_is_missing():
    assert "detectron2._C" in _compat.APPLIED_FIXES
    import detectron2._C as c_ext

    assert c_ext.has_cuda() is False
    with pytest.raises(ImportError, match="nms_rotated.*compiled Detectron2 op"):
        c_ext.nms_rotated  # noqa: B018


def test_pillow_fix_applied_only_when_linear_is_missing():
    out = run_python(
        """
        from PIL import Image
        had_linear = hasattr(Image, "LINEAR")
        from avsegformer import _compat
        _compat.apply()
        print(had_linear, "PIL.Image.LINEAR" in _compat.APPLIED_FIXES, Image.LINEAR == Image.BILINEAR)
        """
    )
    had_linear, applied, aliased = out.split()
    assert applied == str(had_linear == "False")
    assert aliased == "True"


def test_real_extension_is_kept_untouched():
    """With a compiled detectron2._C importable (simulated by an import hook that provides one),
    no stub replaces it and detectron2.layers imports the real module."""
    out = run_python(
        """
        import importlib.abc, importlib.machinery, sys, types

        class FakeCompiled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path=None, target=None):
                if name == "detectron2._C":
                    return importlib.machinery.ModuleSpec(name, self, origin="fake_C.so")
                return None
            def create_module(self, spec):
                module = types.ModuleType(spec.name)
                module.get_compiler_version = lambda: "GCC fake"
                module.get_cuda_version = lambda: "none"
                module.has_cuda = lambda: False
                return module
            def exec_module(self, module):
                pass

        sys.meta_path.insert(0, FakeCompiled())
        import avsegformer
        from avsegformer import _compat
        import detectron2.layers
        import detectron2._C as c_ext
        print(_compat.has_compiled_detectron2(), "detectron2._C" in _compat.APPLIED_FIXES,
              c_ext.get_compiler_version())
        """
    )
    assert out.split("\n")[0] == "True False GCC fake"


def test_apply_is_idempotent():
    before = list(_compat.APPLIED_FIXES)
    _compat.apply()
    _compat.apply()
    assert before == _compat.APPLIED_FIXES
