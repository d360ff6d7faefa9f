"""A converted checkpoint stands alone: evaluating it and the demo need no pretrained file.

The documented model-zoo commands (convert an original checkpoint, then ``--eval-only`` and the
demo with it) run in an empty folder, without ``pretrained/``, on a tiny AVSBench tree. The original
checkpoints are synthesised from the reference key lists of S4 models (AVSegFormer's and COMBO's
R50, MoDAT's PVTv2-B5): every entry is one random value expanded to its shape, scaled by its
fan-in so that activations stay finite, so the files stay a few hundred kilobytes although the
models have 127 M to 191 M parameters.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from avsbench_tree import make_s4_tree
from detectron2.modeling import build_model
from helpers import load_tool, read_key_list

from avsegformer.checkpoint import load_model_weights
from avsegformer.config import setup_cfg
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


def _evaluate_alone(config: Path, weights: str, work: Path, env: dict, opts: list) -> None:
    """``train_net.py --eval-only`` as a command in ``work`` on the S4 test split; the scores
    must be scores."""
    _run(
        [
            REPO / "tools" / "train_net.py",
            "--config-file", config,
            "--eval-only",
            "MODEL.WEIGHTS", weights,
            "DATASETS.TEST", "('avsbench_s4_test',)",
            "OUTPUT_DIR", "output",
            *opts,
        ],
        work,
        env,
    )  # fmt: skip
    results = json.loads((work / "output" / "eval_results.json").read_text())["avs"]
    assert 0 <= results["mIoU"] <= 1 and 0 <= results["Fscore"] <= 1


def _demo_inputs(datasets: Path, config: Path) -> list:
    """``demo.py`` arguments for the test clip ``testA`` of the tree, written to ``out``."""
    clip = datasets / "AVSBench" / "Single-source" / "s4_data"
    return [
        "--config-file", config,
        "--frames", next((clip / "visual_frames" / "test").glob("*/testA")),
        "--audio", next((clip / "audio_wav" / "test").glob("*/testA.wav")),
        "--output", "out",
    ]  # fmt: skip


def test_readme_model_zoo_commands_need_no_pretrained_file(tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    datasets = tmp_path / "datasets"
    make_s4_tree(datasets / "AVSBench" / "Single-source")
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="2")
    torch.save(synthesize_original_checkpoint(), work / "AVSegFormer_res50_s4.pth")
    assert (work / "AVSegFormer_res50_s4.pth").stat().st_size < 1_000_000
    config = REPO / "configs" / "s4" / "avsegformer_R50.yaml"

    _run(
        [
            REPO / "tools" / "convert_checkpoint.py",
            "AVSegFormer_res50_s4.pth",
            "avsegformer_R50_s4.pth",
        ],
        work,
        env,
    )
    _evaluate_alone(config, "avsegformer_R50_s4.pth", work, env, SMALL_FRAMES)
    _run(
        [
            REPO / "tools" / "demo.py",
            *_demo_inputs(datasets, config),
            "--opts", "MODEL.WEIGHTS", "avsegformer_R50_s4.pth", *SMALL_FRAMES,
        ],
        work,
        env,
    )  # fmt: skip
    assert len(list((work / "out" / "masks").glob("*.png"))) == 5
    assert not (work / "pretrained").exists()


# name: (key list of the original, config, the config's frames need maskiges, size overrides)
STANDALONE_MODELS = {
    # COMBO R50 S4 with the Siam-Encoder at its 224x224: maskiges from the dataset's folder in the
    # evaluation, from ``--maskiges`` in the demo.
    "COMBO": ("combo/COMBO_R50_s4.keys.txt", "s4/combo_R50.yaml", True, []),
    # MoDAT PVTv2-B5 S4 (its only backbone) on small frames, as for AVSegFormer.
    "MoDAT": ("modat/MoDAT_pvt2_s4.keys.txt", "s4/modat_pvtv2_b5.yaml", False, SMALL_FRAMES),
}


@pytest.mark.parametrize("name", list(STANDALONE_MODELS))
def test_a_converted_checkpoint_evaluates_and_runs_the_demo_alone(name, tmp_path, monkeypatch):
    """A converted original checkpoint of another meta-architecture: no pretrained file anywhere.
    The evaluation runs as a command in the empty folder; conversion and demo run in-process
    there (each command costs seconds of imports)."""
    keys, config, needs_maskiges, sizes = STANDALONE_MODELS[name]
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    datasets = tmp_path / "datasets"
    make_s4_tree(
        datasets / "AVSBench" / "Single-source",
        videos={"test": [("testA", S4_CATEGORIES[2])]},
        maskiges=needs_maskiges,
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="2")
    torch.save({"model": synthesize_original_checkpoint(keys), "iteration": 9}, "model_best.pth")
    assert (work / "model_best.pth").stat().st_size < 1_000_000
    config = REPO / "configs" / config
    opts = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *sizes]

    load_tool("convert_checkpoint").main(["model_best.pth", "converted.pth"])
    _evaluate_alone(config, "converted.pth", work, env, opts)
    demo = _demo_inputs(datasets, config)
    if needs_maskiges:
        clip = datasets / "AVSBench" / "Single-source" / "s4_data"
        demo += ["--maskiges", next((clip / MASKIGE_FOLDER / "test").glob("*/testA"))]
    demo += ["--opts", "MODEL.WEIGHTS", "converted.pth", *opts]
    assert load_tool("demo").main([str(a) for a in demo]) == 0
    assert len(list((work / "out" / "masks").glob("*.png"))) == 5
    assert not (work / "pretrained").exists()


def test_a_converted_catr_checkpoint_with_its_own_vggish_evaluates_and_runs_the_demo(
    tmp_path, monkeypatch
):
    """CATR PVTv2-B5 S4: the original checkpoint holds no VGGish, which comes from its own
    torchvggish file through ``MODEL.AUDIO.WEIGHTS``. The converted file and that VGGish fill
    every entry of the model (strictly), then evaluation and demo run in an empty folder. Frames
    are fed at 64x64 instead of the released 448x448 to keep the test fast."""
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    datasets = tmp_path / "datasets"
    make_s4_tree(
        datasets / "AVSBench" / "Single-source", videos={"test": [("testA", S4_CATEGORIES[2])]}
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), OMP_NUM_THREADS="2")
    torch.save(synthesize_original_checkpoint("catr/CATR_pvt2_s4.keys.txt"), "S4_best.pth")
    torch.save(synthesize_original_checkpoint("catr/CATR_vggish.keys.txt", seed=1), "vggish.pth")
    assert (work / "S4_best.pth").stat().st_size < 1_000_000
    config = REPO / "configs" / "s4" / "catr_pvtv2_b5.yaml"
    opts = [
        "MODEL.WEIGHTS", "catr_pvtv2_s4.pth",
        "MODEL.AUDIO.WEIGHTS", "vggish.pth",
        "MODEL.CATR.INPUT_SIZE", "(64, 64)",
        *SMALL_FRAMES,
    ]  # fmt: skip

    load_tool("convert_checkpoint").main(["S4_best.pth", "catr_pvtv2_s4.pth"])
    converted = torch.load("catr_pvtv2_s4.pth", weights_only=True)
    assert converted["family"] == "CATR"
    cfg = setup_cfg(str(config), opts)
    model = build_model(cfg)
    vggish = torch.load("vggish.pth", weights_only=True)
    audio = {f"audio_backbone.{k}": v for k, v in vggish.items()}
    model.load_state_dict({**converted["model"], **audio}, strict=True)
    # The project's loading does the same from the two files.
    fresh = build_model(cfg)
    load_model_weights(cfg, fresh)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    del model, fresh

    _evaluate_alone(config, "catr_pvtv2_s4.pth", work, env, opts)
    demo = [*_demo_inputs(datasets, config), "--opts", *opts]
    assert load_tool("demo").main([str(a) for a in demo]) == 0
    assert len(list((work / "out" / "masks").glob("*.png"))) == 5
    assert not (work / "pretrained").exists()
