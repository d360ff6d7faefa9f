"""tools/benchmark.py end to end on the CPU-sized synthetic config (figures are not checked)."""

import json
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from helpers import load_tool

from avsegformer.config import setup_cfg

REPO = Path(__file__).resolve().parents[1]
benchmark = load_tool("benchmark")


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
    assert report["precision"] == ["fp32", "bf16"]  # both by default, side by side
    assert report["cpu_bf16"] in {"AMX+AVX512-BF16", "AMX", "AVX512-BF16", "neither"}
    assert len(report["load_avg"]) == 2
    for phase in ("eval", "train"):
        for precision in ("fp32", "bf16"):
            result = report["results"][phase][precision]
            assert len(result["runs_s"]) == 2
            assert result["min_s"] <= result["median_s"] <= result["max_s"]
            assert result["frames_per_s"] == pytest.approx(2 / result["median_s"])
            assert result["peak_memory_gb"] > 0.1
        by_precision = report["results"][phase]
        assert by_precision["bf16"]["speedup_vs_fp32"] == pytest.approx(
            by_precision["fp32"]["median_s"] / by_precision["bf16"]["median_s"]
        )
    table = capsys.readouterr().out
    assert "eval" in table and "train" in table and "frames/s" in table and "vs fp32" in table
    assert f"cpu_bf16={report['cpu_bf16']}" in table


def test_benchmark_times_one_precision_when_asked():
    report = benchmark.main(
        [
            "--config-file", str(REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"),
            "--phases", "eval", "--precision", "bf16", "--frames", "1", "--size", "64",
            "--runs", "1", "--warmup", "0",
        ]
    )  # fmt: skip
    assert list(report["results"]["eval"]) == ["bf16"]
    assert "speedup_vs_fp32" not in report["results"]["eval"]["bf16"]


def test_benchmark_loads_model_weights_from_the_opts(tmp_path, monkeypatch):
    """``--opts MODEL.WEIGHTS FILE`` is loaded into the timed model (else it is random)."""
    config = REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"
    source = build_model(setup_cfg(config))
    with torch.no_grad():
        for index, parameter in enumerate(source.parameters()):
            parameter.fill_(index / 1000)
    weights = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, weights)

    built = []

    def recording_build_model(cfg):
        built.append(build_model(cfg))
        return built[-1]

    monkeypatch.setattr(benchmark, "build_model", recording_build_model)
    argv = ["--config-file", str(config), "--phases", "eval", "--frames", "1", "--size", "64",
            "--runs", "1", "--warmup", "0", "--precision", "fp32"]  # fmt: skip
    benchmark.main([*argv, "--opts", "MODEL.WEIGHTS", str(weights)])
    benchmark.main(argv)
    loaded, random = (dict(model.state_dict()) for model in built)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert not torch.equal(
        random["backbone.stem.conv1.weight"], loaded["backbone.stem.conv1.weight"]
    )


def test_benchmark_feeds_maskiges_to_combo(tmp_path):
    """A COMBO config reads maskiges (INPUT.MASKIGE_FOLDER): the random clip carries them, and
    the training step runs the config's optimizer (full-model clipping)."""
    config = REPO / "configs" / "synthetic" / "combo_tiny_s4.yaml"
    report = benchmark.main(
        ["--config-file", str(config), "--threads", "1", "--frames", "5", "--size", "64",
         "--runs", "1", "--warmup", "0", "--precision", "fp32"]
    )  # fmt: skip
    assert set(report["results"]) == {"eval", "train"}
    cfg = setup_cfg(config)
    clip = benchmark.make_clip(cfg, 5, 64, train=True, num_classes=2)
    assert clip["maskiges"].shape == clip["frames"].shape == (5, 3, 64, 64)
    assert set(clip["sem_seg"].unique().tolist()) == {0, 1}
    cfg.defrost()
    cfg.INPUT.MASKIGE_FOLDER = ""
    assert "maskiges" not in benchmark.make_clip(cfg, 5, 64, train=False, num_classes=2)


def test_benchmark_trains_on_several_clips_with_memory_switches():
    report = benchmark.main(
        [
            "--config-file", str(REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"),
            "--phases", "train", "--precision", "fp32", "--clips", "2", "--frames", "1",
            "--size", "64", "--runs", "1", "--warmup", "0",
            "--opts", "MODEL.ACTIVATION_CHECKPOINTING.BACKBONE", "True",
            "MODEL.ACTIVATION_CHECKPOINTING.MASK_HEAD", "True",
        ]
    )  # fmt: skip
    assert report["clips"] == 2
    result = report["results"]["train"]["fp32"]
    assert result["frames_per_s"] == pytest.approx(2 / result["median_s"])


@pytest.mark.parametrize(
    "frames,opts",
    [(5, []), (10, ["MODEL.CATR.NUM_FRAMES", "10", "MODEL.CATR.NUM_CLASSES", "71"])],
    ids=["s4", "avss"],
)
def test_benchmark_runs_catr_on_whole_clips(frames, opts):
    """CATR takes one clip of its NUM_FRAMES; the training step runs its set criterion (the
    released one, or the class-trajectory one with 71 classes)."""
    config = REPO / "configs" / "synthetic" / "catr_tiny_s4.yaml"
    report = benchmark.main(
        ["--config-file", str(config), "--threads", "1", "--frames", str(frames), "--size", "64",
         "--runs", "1", "--warmup", "0", "--precision", "fp32", "--opts", *opts]
    )  # fmt: skip
    assert set(report["results"]) == {"eval", "train"}
    assert report["results"]["train"]["fp32"]["median_s"] > 0
