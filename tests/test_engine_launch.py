"""The launcher: torchrun detection, single process, and the CPU multi-process error."""

import pytest
import torch

from avsegformer.engine.launch import launch, torchrun_world_size


def test_single_process_calls_main_directly(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch(lambda a, b: a + b, 1, args=(2, 3)) == 5


def test_torchrun_environment_detection(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert torchrun_world_size() == 0  # WORLD_SIZE alone is not a launcher
    monkeypatch.setenv("RANK", "0")
    assert torchrun_world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launch(lambda: "ran", 8) == "ran"  # torchrun with one process: no process group


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_several_processes_without_cuda_point_to_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        launch(lambda: None, 2)
