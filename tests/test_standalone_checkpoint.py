"""A converted checkpoint stands alone: evaluating it and the demo need no pretrained file.

The documented model-zoo commands (convert an original checkpoint, then ``--eval-only`` and the
demo with it) run in an empty folder, without ``pretrained/``, on a tiny AVSBench tree. The original
checkpoints are synthesised from the reference key lists of the R50 S4 models (AVSegFormer's
released one, COMBO's): every entry is one random value expanded to its shape, scaled by its
fan-in so that activations stay finite, so the files stay a few hundred kilobytes although the
models have 127 M and 159 M parameters.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from avsbench_tree import make_s4_tree
from helpers import load_tool, read_key_list

from avsegformer.data.datasets.layout import MASKIGE_FOLDER, S4_CATEGORIES

REPO = Path(__file__).resolve().parents[1]
KEYS = "AVSegFormer_res50_s4.keys.txt"
# The README's commands need these only to run in seconds on a CPU.
SMALL_FRAMES = [
    "MODEL.DEVICE", "cpu",
    "INPUT.FRAME_SIZE", "(64, 64)",
    "TEST.AVS.EVAL_SIZE", "(64, 64)",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def synthesize_original_checkpoint(keys: str = KEYS, seed: int = 0) -> dict[str, torch.Tensor]:
    """Original key names and shapes; one random value per entry (an expanded scalar)."""
    rng = np.random.default_rng(seed)
    state_dict = {}
    for name, shape, dtype in read_key_list(keys):
        if dtype == "int64":
            value = torch.tensor(0, dtype=torch.long)
        elif name.endswith("running_var"):
            value = torch.tensor(1.0)
        elif name.endswith(("running_mean", "bias")):
            value = torch.tensor(float(rng.uniform(-0.1, 0.1)))
        elif len(shape) == 1:  # norm weights, level embedding rows
            value = torch.tensor(float(rng.uniform(0.5, 1.5)))
        else:
            fan_in = int(np.prod(shape[1:]))
            value = torch.tensor(float(rng.uniform(-1.0, 1.0)) / fan_in)
        state_dict[name] = value.expand(shape)
    return state_dict


def _run(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_readme_model_zoo_commands_need_no_pretrained_file(tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    datasets = tmp_path / "datasets"
    make_s4_tree(datasets / "AVSBench" / "Single-source")
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="2")
    torch.save(synthesize_original_checkpoint(), work / "AVSegFormer_res50_s4.pth")
    assert (work / "AVSegFormer_res50_s4.pth").stat().st_size < 1_000_000

    _run(
        [
            REPO / "tools" / "convert_checkpoint.py",
            "AVSegFormer_res50_s4.pth",
            "avsegformer_R50_s4.pth",
        ],
        work,
        env,
    )
    _run(
        [
            REPO / "tools" / "train_net.py",
            "--config-file", REPO / "configs" / "s4" / "avsegformer_R50.yaml",
            "--eval-only",
            "MODEL.WEIGHTS", "avsegformer_R50_s4.pth",
            "DATASETS.TEST", "('avsbench_s4_test',)",
            "OUTPUT_DIR", "output",
            *SMALL_FRAMES,
        ],
        work,
        env,
    )  # fmt: skip

    results = json.loads((work / "output" / "eval_results.json").read_text())["avs"]
    assert 0 <= results["mIoU"] <= 1 and 0 <= results["Fscore"] <= 1

    clip = datasets / "AVSBench" / "Single-source" / "s4_data"
    frames = next((clip / "visual_frames" / "test").glob("*/testA"))
    _run(
        [
            REPO / "tools" / "demo.py",
            "--config-file", REPO / "configs" / "s4" / "avsegformer_R50.yaml",
            "--frames", frames,
            "--audio", next((clip / "audio_wav" / "test").glob("*/testA.wav")),
            "--output", "out",
            "--opts", "MODEL.WEIGHTS", "avsegformer_R50_s4.pth", *SMALL_FRAMES,
        ],
        work,
        env,
    )  # fmt: skip
    assert len(list((work / "out" / "masks").glob("*.png"))) == 5
    assert not (work / "pretrained").exists()


def test_a_converted_combo_checkpoint_evaluates_and_runs_the_demo_alone(tmp_path, monkeypatch):
    """COMBO R50 S4 with the Siam-Encoder at 224x224: maskiges from the dataset's folder in the
    evaluation, from ``--maskiges`` in the demo; no pretrained file anywhere. The evaluation runs
    as a command in the empty folder; conversion and demo run in-process there (each command
    costs seconds of imports)."""
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    datasets = tmp_path / "datasets"
    make_s4_tree(
        datasets / "AVSBench" / "Single-source",
        videos={"test": [("testA", S4_CATEGORIES[2])]},
        maskiges=True,
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="2")
    original = synthesize_original_checkpoint("combo/COMBO_R50_s4.keys.txt")
    torch.save({"model": original, "iteration": 9}, "model_best.pth")
    assert (work / "model_best.pth").stat().st_size < 1_000_000
    config = REPO / "configs" / "s4" / "combo_R50.yaml"
    cpu = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"]

    load_tool("convert_checkpoint").main(["model_best.pth", "combo_R50_s4.pth"])
    _run(
        [
            REPO / "tools" / "train_net.py",
            "--config-file", config,
            "--eval-only",
            "MODEL.WEIGHTS", "combo_R50_s4.pth",
            "DATASETS.TEST", "('avsbench_s4_test',)",
            "OUTPUT_DIR", "output",
            *cpu,
        ],
        work,
        env,
    )  # fmt: skip
    results = json.loads((work / "output" / "eval_results.json").read_text())["avs"]
    assert 0 <= results["mIoU"] <= 1 and 0 <= results["Fscore"] <= 1

    clip = datasets / "AVSBench" / "Single-source" / "s4_data"
    demo = [
        "--config-file", config,
        "--frames", next((clip / "visual_frames" / "test").glob("*/testA")),
        "--audio", next((clip / "audio_wav" / "test").glob("*/testA.wav")),
        "--output", "out",
    ]  # fmt: skip
    weights = ["--opts", "MODEL.WEIGHTS", "combo_R50_s4.pth", *cpu]
    maskiges = next((clip / MASKIGE_FOLDER / "test").glob("*/testA"))
    assert load_tool("demo").main([str(a) for a in [*demo, "--maskiges", maskiges, *weights]]) == 0
    assert len(list((work / "out" / "masks").glob("*.png"))) == 5
    assert not (work / "pretrained").exists()
