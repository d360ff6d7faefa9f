"""Detectron2 as `make setup` installs it: any import order, quiet tools, and a clear error from
``import avsegformer`` when the installed Detectron2 cannot run."""

import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter of this environment, from the repository root."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def run_code(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_python("-c", textwrap.dedent(code), env=env)


def has_compiled_detectron2() -> bool:
    spec = importlib.util.find_spec("detectron2._C")
    origin = spec.origin if spec is not None else None
    return bool(origin) and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_detectron2_works_without_avsegformer_in_any_order_and_quietly(tmp_path):
    """Detectron2's Python parts without ``import avsegformer``, then the plugin after them; with
    a CUDA toolkit found (CUDA_HOME) but no GPU, collecting the environment logs nothing."""
    result = run_code(
        """
        import sys
        from detectron2.modeling import META_ARCH_REGISTRY, build_model
        import detectron2.checkpoint, detectron2.engine, detectron2.evaluation
        import detectron2.projects.deeplab
        from detectron2.data import transforms
        from detectron2.utils.collect_env import collect_env_info
        print("avsegformer" in sys.modules, transforms.ExtentTransform.__init__.__defaults__[0])
        assert "PyTorch" in collect_env_info()
        import avsegformer
        print("AVSegFormer" in META_ARCH_REGISTRY)
        """,
        env={"CUDA_HOME": str(tmp_path), "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert result.stdout.split() == ["False", str(int(Image.BILINEAR)), "True"]
    assert result.stderr == ""


def test_tool_run_prints_no_warning():
    result = run_python("tools/train_net.py", "--help", env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stderr == ""


@pytest.mark.skipif(has_compiled_detectron2(), reason="a compiled detectron2._C is installed")
def test_c_stand_in_reports_the_build_and_names_missing_ops():
    import detectron2._C as c_ext
    from detectron2.utils.collect_env import collect_env_info

    assert c_ext.has_cuda() is False
    assert "not built (pure-Python Detectron2 build)" in collect_env_info()
    with pytest.raises(ImportError, match=r"nms_rotated is a compiled Detectron2 op"):
        c_ext.nms_rotated  # noqa: B018


def test_import_avsegformer_names_the_remedy_when_c_is_missing(tmp_path):
    """A Detectron2 with neither the compiled extension nor the stand-in (an older build)."""
    package = tmp_path / "detectron2"
    package.mkdir()
    (package / "__init__.py").write_text("")
    result = run_code("import avsegformer", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: the Detectron2 at ")
    assert str(package) in last_line and "run `make setup`" in last_line


def test_import_avsegformer_names_the_remedy_without_detectron2():
    result = run_code(
        """
        import importlib.abc, sys

        class HideDetectron2(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "detectron2":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, HideDetectron2())
        import avsegformer
        """
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: Detectron2 is not installed: run `make setup`")
