"""tools/benchmark.py end to end on the CPU-sized synthetic config (figures are not checked)."""

import json
import sys
from pathlib import Path

import avsegformer  # noqa: F401  (before any detectron2 sub-package)

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import benchmark  # noqa: E402


def test_benchmark_reports_both_phases(tmp_path, capsys):
    output = tmp_path / "bench.json"
    report = benchmark.main(
        [
            "--config-file", str(REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"),
            "--threads", "1", "--frames", "2", "--size", "64", "--runs", "2", "--warmup", "0",
            "--output", str(output),
            "--opts", "MODEL.AUDIO.FREEZE", "True",
        ]
    )  # fmt: skip
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert report["frames"] == 2 and report["opts"] == ["MODEL.AUDIO.FREEZE", "True"]
    for phase in ("eval", "train"):
        result = report["results"][phase]
        assert len(result["runs_s"]) == 2
        assert result["min_s"] <= result["median_s"] <= result["max_s"]
        assert result["frames_per_s"] == pytest.approx(2 / result["median_s"])
        assert result["peak_memory_gb"] > 0.1
    table = capsys.readouterr().out
    assert "eval" in table and "train" in table and "frames/s" in table


def test_benchmark_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        benchmark.main(["--config-file", "x.yaml", "--device", "cuda"])
