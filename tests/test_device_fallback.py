"""Without a GPU, the task configs (``MODEL.DEVICE cuda``) run on the CPU after one warning:
``setup_cfg`` and the README's commands (train_net --eval-only, demo, benchmark)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from avsbench_tree import make_s4_tree
from helpers import CONFIG_DIR, REPO, load_tool
from PIL import Image

from avsegformer.config import fall_back_to_cpu, setup_cfg

S4_CONFIG = CONFIG_DIR / "s4" / "avsegformer_R50.yaml"
#: The R50 task model at 64x64 with random weights (no pretrained file is read).
SMALL_OPTS = ["MODEL.WEIGHTS", "", "MODEL.AUDIO.WEIGHTS", "", "INPUT.FRAME_SIZE", "(64, 64)"]
FALLBACK_MESSAGE = "CUDA is not available: running on the CPU"


@pytest.fixture
def no_cuda(monkeypatch):
    """This process sees no GPU, whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def fallback_records(caplog):
    return [r for r in caplog.records if FALLBACK_MESSAGE in r.getMessage()]


def test_setup_cfg_moves_a_cuda_config_to_the_cpu_with_one_warning(no_cuda, caplog):
    cfg = setup_cfg(S4_CONFIG, ["MODEL.DEVICE", "cuda:1"])
    assert cfg.MODEL.DEVICE == "cpu" and cfg.is_frozen()
    (record,) = fallback_records(caplog)
    assert record.levelname == "WARNING"
    assert "'cuda:1'" in record.getMessage() and "MODEL.DEVICE cpu" in record.getMessage()
    # A CPU config is left alone, silently.
    caplog.clear()
    assert setup_cfg(S4_CONFIG, ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"
    assert not fallback_records(caplog)


def test_a_cuda_config_is_kept_when_cuda_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = setup_cfg(S4_CONFIG, freeze=False)
    assert cfg.MODEL.DEVICE == "cuda" and not fall_back_to_cpu(cfg)


def test_eval_only_with_a_task_config_runs_on_the_cpu(tmp_path):
    """The README's ``train_net.py --eval-only`` on an S4 tree, in a process that sees no GPU."""
    make_s4_tree(tmp_path / "AVSBench" / "Single-source")
    env = dict(
        os.environ,
        AVSBENCH_ROOT=str(tmp_path / "AVSBench"),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", str(S4_CONFIG), "--eval-only",
         *SMALL_OPTS, "TEST.AVS.EVAL_SIZE", "(64, 64)", "DATASETS.TEST", "('avsbench_s4_test',)",
         "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "NVIDIA" not in output
    assert sum(FALLBACK_MESSAGE in line for line in output.splitlines()) == 1, output[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())["avs"]
    assert 0.0 <= results["mIoU"] <= 1.0


def test_demo_with_a_task_config_runs_on_the_cpu(tmp_path, no_cuda, caplog, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 100, 20)).save(frames / f"{i}.png")
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
    soundfile.write(str(tmp_path / "a.wav"), tone, rate)
    code = load_tool("demo").main(
        ["--config-file", str(S4_CONFIG), "--frames", str(frames), "--audio",
         str(tmp_path / "a.wav"), "--output", str(tmp_path / "out"), "--opts", *SMALL_OPTS]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(fallback_records(caplog)) == 1
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 2


@pytest.mark.parametrize("device_args", [[], ["--device", "cuda"]])
def test_benchmark_with_a_task_config_runs_on_the_cpu(no_cuda, caplog, capsys, device_args):
    report = load_tool("benchmark").main(
        ["--config-file", str(S4_CONFIG), *device_args, "--phases", "eval", "--frames", "1",
         "--size", "64", "--runs", "1", "--warmup", "0", "--threads", "1"]
    )  # fmt: skip
    assert report["device"] == "cpu"
    assert len(fallback_records(caplog)) == 1
    assert "device=cpu" in capsys.readouterr().out
