"""Test set-up shared by every test module.

``import avsegformer`` comes first: it applies the Detectron2 v0.6 compatibility fixes that every
``detectron2.*`` sub-package import below relies on.
"""

import os
from pathlib import Path

import avsegformer  # noqa: F401  (must precede detectron2 sub-package imports)

import pytest
import torch

#: Fixtures produced by the original AVSegFormer code: ``<repo>/../shared/reference`` (the layout
#: of this project's CI), or wherever ``AVSEGFORMER_REFERENCE_DIR`` points.
REFERENCE_DIR = Path(
    os.environ.get(
        "AVSEGFORMER_REFERENCE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "reference",
    )
)


def fixture_path(name: str) -> Path:
    """Path of a reference file: a key list (``"AVSegFormer_res50_s4.keys.txt"``) or a fixture
    (``"head_tiny.pt"``, looked up under ``fixtures/`` too).

    Outside CI a missing reference directory skips the test (users may clone without it); in CI
    (``CI`` set) it is an error, so the reference checks can never be skipped silently there.
    """
    for path in (REFERENCE_DIR / name, REFERENCE_DIR / "fixtures" / name):
        if path.exists():
            return path
    message = (
        f"reference file {name} not found under {REFERENCE_DIR} (set AVSEGFORMER_REFERENCE_DIR)"
    )
    if os.environ.get("CI"):
        raise FileNotFoundError(message)
    pytest.skip(message)


def load_fixture(name: str):
    """Load a reference ``.pt`` fixture with every tensor made contiguous (some are stored as
    overlapping strided views to keep the files small)."""

    def dense(obj):
        if torch.is_tensor(obj):
            return obj.contiguous()
        if isinstance(obj, dict):
            return {k: dense(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(dense(v) for v in obj)
        return obj

    return dense(torch.load(fixture_path(name), map_location="cpu", weights_only=True))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same RNG state and with two intra-op threads at most."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)
