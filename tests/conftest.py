"""Fixtures shared by every test module (plain helpers are in ``helpers.py``)."""

import pytest
import torch
from helpers import forget_dataset, unique_dataset_name


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same RNG state and with two intra-op threads at most."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def new_dataset_name():
    """Make unique dataset names; each is removed from both catalogs after the test."""
    names = []

    def make(prefix: str = "avs") -> str:
        names.append(unique_dataset_name(prefix))
        return names[-1]

    yield make
    for name in names:
        forget_dataset(name)
