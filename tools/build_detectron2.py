#!/usr/bin/env python
"""Install the project's Detectron2 build into the running interpreter's environment.

The only Detectron2 on PyPI is ``pb1-detectron2==0.6``: the v0.6 release's Python sources without
the C++ sources, whose ``setup.py`` then fails to compile ``detectron2._C``. This script

1. decides what to do with the Detectron2 already installed (:func:`plan`): a compiled Detectron2
   (with a real ``_C`` extension) or one built elsewhere is kept; an up-to-date build of this
   script is kept; an older build of this script (``0.6+nocext``, ``0.6+avs<other>``) is replaced;
2. fetches that sdist with pip (cached in ``.cache/detectron2/``) and checks its SHA-256;
3. patches the extracted sources (:data:`PATCHES`, :data:`NEW_FILES`) so that v0.6 runs on
   today's PyTorch, NumPy, Pillow and Python, whatever the import order, and builds a pure-Python
   wheel ``detectron2-0.6+avs<hash>``, the hash being that of this script (so the version names the
   patch set, and changing a patch makes ``make setup`` rebuild);
4. installs that wheel with pip, honouring ``--constraint``.

Usage: ``.venv/bin/python tools/build_detectron2.py [--constraint constraints.txt] [--force]``
"""

import argparse
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

#: Versions this script has ever given its wheel: ``+nocext`` (unpatched) and ``+avs<hash>``.
PROJECT_BUILD_VERSION = re.compile(r"0\.6\+(nocext|avs[0-9a-f]{12})")

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "detectron2"

# Detectron2 v0.6's install_requires, minus the formatter pin (black==21.4b2 does not install on
# current Python and is only used to pretty-print lazy configs) and the Python 3.6 backport.
INSTALL_REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "future",
    "pydot",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

# Same mapping as v0.6's setup.py: small projects installed as detectron2.projects.*.
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}


@dataclass(frozen=True)
class SourcePatch:
    """Replace ``old`` by ``new`` in one file of the sdist, which must hold ``old`` ``count`` times."""

    path: str
    old: str
    new: str
    count: int = 1


C_STAND_IN = '''\
"""Stand-in for Detectron2's compiled extension, which this pure-Python build does not include.

Detectron2 v0.6 imports ``detectron2._C`` when ``detectron2.layers``, ``detectron2.structures`` and
``detectron2.evaluation`` are imported, and ``collect_env_info`` asks it how it was built. Those
questions are answered here; asking for a compiled op (rotated boxes, deformable convolution, the
C++ COCO evaluator) raises an ImportError that names it. To have them, build Detectron2 from source.
"""

NOT_BUILT = "not built (pure-Python Detectron2 build)"


def get_compiler_version():
    return NOT_BUILT


def get_cuda_version():
    return NOT_BUILT


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        f"detectron2._C.{name} is a compiled Detectron2 op, and this Detectron2 was built without "
        "its C++/CUDA extension; to use it, build Detectron2 from source."
    )
'''

#: Files added to the sdist's sources.
NEW_FILES = {"detectron2/_C.py": C_STAND_IN}

# PyTorch warns (FutureWarning) on every torch.jit.script call. v0.6 scripts two classes at import,
# and fvcore.nn, which every model module imports, two functions: hidden there, and only there.
QUIET_HELPER = '''
@contextlib.contextmanager
def quiet_torchscript_deprecation():
    """Hide PyTorch's FutureWarning that torch.jit.script is deprecated, inside this block only."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\\.jit\\.script` is deprecated", category=FutureWarning
        )
        yield
'''

SCRIPT_QUIETLY = '''

def _script_quietly(cls):
    """``torch.jit.script(cls)`` without the deprecation warning; names resolve in this module."""
    with quiet_torchscript_deprecation():
        return torch.jit.script(cls, _frames_up=1)

'''

PATCHES = [
    # Importable in any order, and quiet.
    SourcePatch(
        "detectron2/__init__.py",
        "from .utils.env import setup_environment\n\nsetup_environment()\n",
        "from .utils.env import quiet_torchscript_deprecation, setup_environment\n\n"
        "setup_environment()\n\n"
        "with quiet_torchscript_deprecation():\n"
        "    import fvcore.nn  # noqa: F401  (scripts its focal losses at import)\n",
    ),
    SourcePatch(
        "detectron2/utils/env.py",
        "import importlib\nimport importlib.util\n",
        "import contextlib\nimport importlib\nimport importlib.util\nimport warnings\n",
    ),
    SourcePatch(
        "detectron2/utils/env.py",
        '__all__ = ["seed_all_rng"]\n',
        '__all__ = ["seed_all_rng"]\n\n' + QUIET_HELPER,
    ),
    SourcePatch(
        "detectron2/modeling/box_regression.py",
        "from detectron2.structures import Boxes\n",
        "from detectron2.structures import Boxes\n"
        "from detectron2.utils.env import quiet_torchscript_deprecation\n" + SCRIPT_QUIETLY,
    ),
    SourcePatch(
        "detectron2/modeling/box_regression.py",
        "@torch.jit.script\nclass",
        "@_script_quietly\nclass",
        2,
    ),
    # Python >= 3.10: `import importlib` no longer loads importlib.abc.
    SourcePatch(
        "detectron2/projects/__init__.py",
        "import importlib\n",
        "import importlib\nimport importlib.abc\nimport importlib.util\n",
    ),
    # Pillow 10 removed Image.LINEAR, an alias of BILINEAR.
    SourcePatch(
        "detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR"
    ),
    # NumPy 1.24 removed the aliases np.bool, np.int and np.float.
    SourcePatch("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.int)", "dtype=int)", 2),
    SourcePatch("detectron2/evaluation/sem_seg_evaluation.py", "np.float)", "np.float64)", 5),
    SourcePatch("detectron2/evaluation/pascal_voc_evaluation.py", "(np.bool)", "(bool)", 2),
    SourcePatch("detectron2/structures/masks.py", ".astype(np.bool)", ".astype(bool)", 2),
    SourcePatch("detectron2/structures/masks.py", "dtype=np.bool)", "dtype=bool)"),
    # Without a GPU, collect_env_info reads neither CUDA_HOME nor ROCM_HOME, but importing them from
    # torch.utils.cpp_extension logs "No CUDA runtime is found" when nvcc is on the PATH.
    SourcePatch(
        "detectron2/utils/collect_env.py",
        "    from torch.utils.cpp_extension import CUDA_HOME, ROCM_HOME\n",
        "    if has_gpu:\n"
        "        from torch.utils.cpp_extension import CUDA_HOME, ROCM_HOME\n"
        "    else:\n"
        "        CUDA_HOME = ROCM_HOME = None\n",
    ),
]


def patch_set_version(script: bytes) -> str:
    """The wheel's version for a build script with this content: ``0.6+avs<12 hex of SHA-256>``."""
    return f"{SDIST_VERSION}+avs{hashlib.sha256(script).hexdigest()[:12]}"


WHEEL_VERSION = patch_set_version(Path(__file__).read_bytes())


def apply_patches(source: Path) -> None:
    """Patch the extracted sdist at ``source`` in place; refuse sources the patches do not fit."""
    for patch in PATCHES:
        path = source / patch.path
        if not path.is_file():
            raise SystemExit(f"{path}: missing; these are not the Detectron2 v0.6 sources")
        text = path.read_text()
        found = text.count(patch.old)
        if found != patch.count:
            raise SystemExit(
                f"{path}: expected {patch.count} occurrence(s) of {patch.old!r}, found {found}; "
                "these are not the Detectron2 v0.6 sources the patches were written for"
            )
        path.write_text(text.replace(patch.old, patch.new))
    for relative, text in NEW_FILES.items():
        path = source / relative
        if path.exists():
            raise SystemExit(f"{path}: already exists; these are not the Detectron2 v0.6 sources")
        path.write_text(text)


def build_recipe(version: str) -> str:
    """The ``setup.py`` that replaces the sdist's own (which compiles C++ sources it lacks)."""
    return f"""\
# Written by avsegformer/tools/build_detectron2.py: a patched pure-Python build of Detectron2 v0.6.
from setuptools import find_packages, setup

PROJECTS = {PROJECTS!r}

setup(
    name="detectron2",
    version={version!r},
    author="FAIR",
    url="https://github.com/facebookresearch/detectron2",
    description="Detectron2 v0.6 Python sources, patched for current dependencies, without _C",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    python_requires=">=3.7",
    install_requires={INSTALL_REQUIRES!r},
)
"""


@dataclass(frozen=True)
class InstalledDetectron2:
    location: Path  # the package directory
    version: str | None  # of its distribution; None without metadata (e.g. a source checkout)
    compiled: bool  # a real compiled detectron2._C extension is there


def has_compiled_extension(package_dir: Path) -> bool:
    """Whether ``package_dir`` holds a compiled ``_C`` extension module (not a ``_C.py``)."""
    return any(
        (package_dir / f"_C{suffix}").is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def find_installed() -> InstalledDetectron2 | None:
    """The Detectron2 this interpreter would import, without importing it."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    location = Path(next(iter(spec.submodule_search_locations)))
    try:
        version = importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return InstalledDetectron2(location, version, has_compiled_extension(location))


def plan(installed: InstalledDetectron2 | None, wanted: str, force: bool = False):
    """``(install, reason)``: whether to build and install the ``wanted`` wheel, and why (not)."""
    if force:
        return True, "--force: installing the project's build"
    if installed is None:
        return True, "no Detectron2 installed"
    where = f"the Detectron2 at {installed.location}"
    if installed.compiled:
        return False, f"keeping {where}: it has a compiled _C extension"
    if installed.version == wanted:
        return False, f"keeping {where}: it is this script's current build ({wanted})"
    if installed.version and PROJECT_BUILD_VERSION.fullmatch(installed.version):
        return True, f"replacing {where}: an older build of this script ({installed.version})"
    return False, f"keeping {where}: not built by this script (version {installed.version})"


def log(message: str) -> None:
    print(f"[build_detectron2] {message}", flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist() -> Path:
    sdist = CACHE_DIR / SDIST_FILE
    if not sdist.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        log(f"downloading {SDIST_NAME}=={SDIST_VERSION} with pip")
        # pip prepares the metadata by running the sdist's setup.py, which imports torch: torch
        # must already be installed (tools/setup_env.sh installs it first).
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--no-build-isolation", "--dest", str(CACHE_DIR), f"{SDIST_NAME}=={SDIST_VERSION}",
            ],
            check=True,
        )  # fmt: skip
    actual = sha256_of(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise SystemExit(
            f"{sdist}: SHA-256 {actual} is not the expected {SDIST_SHA256}; the file was removed, "
            "run the set-up again to download it anew."
        )
    return sdist


def build_wheel(sdist: Path) -> Path:
    wheel = CACHE_DIR / f"detectron2-{WHEEL_VERSION}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    for stale in CACHE_DIR.glob("detectron2-*-py3-none-any.whl"):
        stale.unlink()  # wheels of older patch sets
    with tempfile.TemporaryDirectory(prefix="detectron2-build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        apply_patches(source)
        (source / "setup.py").write_text(build_recipe(WHEEL_VERSION))
        shutil.rmtree(source / "pb1_detectron2.egg-info", ignore_errors=True)
        log(f"building the pure-Python wheel {wheel.name} from the patched v0.6 sources")
        subprocess.run(
            [
                sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--wheel-dir", str(CACHE_DIR), str(source),
            ],
            check=True,
        )  # fmt: skip
    if not wheel.exists():
        raise SystemExit(f"pip did not produce {wheel}")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", "-c", help="pip constraints file for the dependencies")
    parser.add_argument(
        "--force", action="store_true", help="build and install even over a kept Detectron2"
    )
    args = parser.parse_args()

    install, reason = plan(find_installed(), WHEEL_VERSION, args.force)
    log(reason)
    if not install:
        return
    wheel = build_wheel(fetch_sdist())
    command = [sys.executable, "-m", "pip", "install", str(wheel)]
    if args.constraint:
        command += ["--constraint", args.constraint]
    if args.force:
        command.append("--force-reinstall")
    subprocess.run(command, check=True)
    log(f"installed {wheel.name}")


if __name__ == "__main__":
    main()
