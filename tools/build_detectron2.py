#!/usr/bin/env python
"""Install Detectron2 into the running interpreter's environment, unless a working one is there.

The only Detectron2 on PyPI is ``pb1-detectron2==0.6``: the v0.6 release's Python sources without
the C++ sources, whose ``setup.py`` then fails to compile ``detectron2._C``. This script

1. keeps any importable Detectron2 untouched (a real build from source, or a previous run);
2. otherwise fetches that sdist with pip (cached in ``.cache/detectron2/``), checks its SHA-256,
   and builds a pure-Python wheel ``detectron2-0.6+nocext`` from the unmodified sources (only the
   build recipe is ours: no extension, no ``black`` pin, same packages and ``detectron2.projects``
   mapping as v0.6's own ``setup.py``);
3. installs that wheel with pip, honouring ``--constraint``.

The run-time fixes that make v0.6 work on current PyTorch, NumPy and Pillow (stub ``_C``,
``Image.LINEAR``) are applied in memory by ``avsegformer/_compat.py``, never by editing files.

Usage: ``.venv/bin/python tools/build_detectron2.py [--constraint constraints.txt]``
"""

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
WHEEL_VERSION = "0.6+nocext"

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

BUILD_RECIPE = f"""\
# Written by avsegformer/tools/build_detectron2.py: a pure-Python build of Detectron2 v0.6.
from setuptools import find_packages, setup

PROJECTS = {PROJECTS!r}

setup(
    name="detectron2",
    version={WHEEL_VERSION!r},
    author="FAIR",
    url="https://github.com/facebookresearch/detectron2",
    description="Detectron2 v0.6 Python sources, built without the C++/CUDA extension",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    python_requires=">=3.7",
    install_requires={INSTALL_REQUIRES!r},
)
"""


def log(message: str) -> None:
    print(f"[build_detectron2] {message}", flush=True)


def existing_detectron2() -> str | None:
    """Where an importable Detectron2 lives, or None."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None:
        return None
    result = subprocess.run(
        [sys.executable, "-c", "import detectron2, sys; sys.stdout.write(detectron2.__file__)"],
        capture_output=True,
        text=True,
    )
    return result.stdout if result.returncode == 0 else None


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
    with tempfile.TemporaryDirectory(prefix="detectron2-build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        # The sdist's own recipe compiles _C from C++ sources it does not contain.
        (source / "setup.py").write_text(BUILD_RECIPE)
        shutil.rmtree(source / "pb1_detectron2.egg-info", ignore_errors=True)
        log("building a pure-Python wheel from the v0.6 sources")
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
        "--force", action="store_true", help="build and install even if Detectron2 imports"
    )
    args = parser.parse_args()

    location = existing_detectron2()
    if location and not args.force:
        log(f"keeping the Detectron2 already installed at {Path(location).parent}")
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
