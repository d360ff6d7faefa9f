"""Build the ``MultiScaleDeformableAttention`` extension (multi-scale deformable attention).

The CPU kernels are always built (any C++20 compiler, as torch itself requires). The CUDA
kernels are added when a GPU is visible or ``FORCE_CUDA=1`` is set, and nvcc is found (``CUDA_HOME``); set
``TORCH_CUDA_ARCH_LIST`` (e.g. ``"9.0"``) to build for a GPU this machine does not have.

    pip install --no-build-isolation ./ops                     # CPU kernels
    FORCE_CUDA=1 pip install --no-build-isolation ./ops        # CPU + CUDA kernels

``--no-build-isolation`` makes the build use the installed torch: the extension must be compiled
against the exact torch it is loaded with.
"""

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE / "src"


def _is_cuda_toolkit(root: Path) -> bool:
    return (root / "include" / "cuda_runtime.h").exists()


def _point_torch_at_the_cuda_toolkit() -> None:
    # torch takes CUDA_HOME from `which nvcc` when it is not set; a wrapper script such as
    # /usr/local/bin/nvcc then yields /usr/local, which has neither the headers nor libcudart.
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None or _is_cuda_toolkit(Path(nvcc).parent.parent):
        return
    if _is_cuda_toolkit(Path("/usr/local/cuda")):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"


_point_torch_at_the_cuda_toolkit()

import torch  # noqa: E402  (after CUDA_HOME is settled: torch reads it at import)
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def want_cuda() -> bool:
    """True when the CUDA kernels should be compiled; an error when forced but impossible."""
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    if not (forced or torch.cuda.is_available()):
        return False
    if CUDA_HOME is None:
        if forced:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME")
        return False
    if torch.version.cuda is None:
        if forced:
            raise RuntimeError(f"FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only build")
        return False
    return True


def relative_sources(pattern: str) -> list[str]:
    # setuptools wants paths relative to setup.py; sorted for a reproducible build order.
    return sorted(str(p.relative_to(HERE)) for p in SOURCE_DIR.glob(pattern))


def make_extension():
    sources = relative_sources("*.cpp") + relative_sources("cpu/*.cpp")
    # -fopenmp: at::parallel_for is an OpenMP region compiled into this extension; without the
    # flag it silently runs on one thread. -g0 drops the debug info Python's flags ask for: it
    # would make the build about twice as slow and the library 20 times larger.
    extra_compile_args = {"cxx": ["-O3", "-fopenmp", "-g0"]}
    extra_link_args = ["-fopenmp"]
    define_macros = []
    extension = CppExtension
    if want_cuda():
        sources += relative_sources("cuda/*.cu")
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3"]
        extension = CUDAExtension
    return extension(
        name="MultiScaleDeformableAttention",
        sources=sources,
        include_dirs=[str(SOURCE_DIR)],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    )


setup(
    name="MultiScaleDeformableAttention",
    version="1.0.0",
    description="Multi-scale deformable attention (CPU and CUDA kernels) for avsegformer",
    license="Apache-2.0",
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
