"""The deformable-attention extension builds from ops/ with CUDA, and the result loads.

No GPU is needed: nvcc compiles the CUDA kernels for one architecture (``TORCH_CUDA_ARCH_LIST``,
default 9.0; override with ``MSDA_TEST_CUDA_ARCH``) in a temporary directory, so any compile error
in ``ops/src/cuda`` fails CI. The CPU-only build is what the environment set-up installs and what
``test_ms_deform_attn.py`` exercises.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import CUDA_HOME

OPS_DIR = Path(__file__).resolve().parents[1] / "ops"
NVCC = shutil.which("nvcc") or (
    str(Path(CUDA_HOME) / "bin" / "nvcc")
    if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").exists()
    else None
)


def copy_sources(destination: Path) -> Path:
    """A private copy of ops/ without build products, so the test never touches the repo's."""
    target = destination / "ops"
    shutil.copytree(
        OPS_DIR,
        target,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "*.so", "__pycache__"),
    )
    return target


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.skipif(torch.version.cuda is None, reason="torch is a CPU-only build")
def test_cuda_extension_compiles_and_loads(tmp_path):
    source = copy_sources(tmp_path)
    env = dict(os.environ)
    env.update(
        FORCE_CUDA="1",
        TORCH_CUDA_ARCH_LIST=os.environ.get("MSDA_TEST_CUDA_ARCH", "9.0"),
        MAX_JOBS=os.environ.get("MAX_JOBS", "2"),
    )
    lib_dir, temp_dir = tmp_path / "lib", tmp_path / "temp"
    build = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "build_ext",
            "--build-lib",
            str(lib_dir),
            "--build-temp",
            str(temp_dir),
        ],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, f"CUDA build failed:\n{log[-6000:]}"
    assert any(temp_dir.rglob("ms_deform_attn_cuda.o")), f"nvcc did not run:\n{log[-3000:]}"
    # Our own sources compile without warnings (torch's headers are not ours to fix).
    own_warnings = [
        line for line in log.splitlines() if "warning" in line and str(source / "src") in line
    ]
    assert not own_warnings, "\n".join(own_warnings)
    libraries = list(lib_dir.glob("MultiScaleDeformableAttention*.so"))
    assert len(libraries) == 1, libraries

    # In a fresh interpreter (the installed CPU build has the same module name): the CUDA build
    # loads without a GPU, says it has CUDA kernels, and its CPU kernels are right.
    check = textwrap.dedent(
        f"""
        import torch
        import MultiScaleDeformableAttention as ext
        assert ext.__file__.startswith({str(lib_dir)!r}), ext.__file__
        assert ext.built_with_cuda()
        from avsegformer.layers import ms_deform_attn_core_pytorch
        g = torch.Generator().manual_seed(0)
        shapes = torch.tensor([[3, 5], [2, 2]])
        starts = torch.tensor([0, 15])
        value = torch.randn(2, 19, 3, 4, dtype=torch.float64, generator=g)
        loc = torch.rand(2, 6, 3, 2, 2, 2, dtype=torch.float64, generator=g) * 1.4 - 0.2
        attn = torch.rand(2, 6, 3, 2, 2, dtype=torch.float64, generator=g)
        out = ext.ms_deform_attn_forward(value, shapes, starts, loc, attn, 2)
        ref = ms_deform_attn_core_pytorch(value, shapes, loc, attn)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
        print("ok")
        """
    )
    # PYTHONPATH comes before site-packages: the new build shadows the installed one.
    path = os.pathsep.join(p for p in (str(lib_dir), os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
