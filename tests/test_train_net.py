"""End to end: the `make demo --quick` job, --eval-only, kill -9 + --resume, torchrun on CPU.

Everything runs in subprocesses on a tiny generated synthetic dataset (64x64 frames) with the
CPU-sized config; the numbers are not checked against targets, only against each other.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"
COMBO_CONFIG = REPO / "configs" / "synthetic" / "combo_tiny_s4.yaml"
OTHER_AUDIO = "synthetic_s4_test_other_audio"
TINY_OPTS = [
    "INPUT.FRAME_SIZE", "(64, 64)",
    "TEST.AVS.EVAL_SIZE", "(64, 64)",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def _env(datasets_dir: Path, threads: int = 1) -> dict:
    env = dict(os.environ)
    env.update(
        DETECTRON2_DATASETS=str(datasets_dir),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONWARNINGS="ignore",
    )
    return env


def _run(args, env, timeout=900, check=True):
    proc = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """``$DETECTRON2_DATASETS`` holding a tiny ``synthetic_avsbench`` (S4 layout, 64x64)."""
    root = tmp_path_factory.mktemp("datasets")
    _run(
        [
            "datasets/prepare_synthetic_avsbench.py",
            "--output", root / "synthetic_avsbench",
            "--subsets", "s4",
            "--num-train", "4", "--num-val", "2", "--num-test", "2",
            "--size", "64", "--no-progress",
        ],
        _env(root),
    )  # fmt: skip
    return root


def _run_quick_demo(config: Path, datasets_dir: Path, out: Path):
    proc = _run(
        [
            "tools/synthetic_demo.py",
            "--quick",
            "--config-file", config,
            "--output-dir", out,
            "--data-root", datasets_dir / "synthetic_avsbench",
            "--threads", "1",
            *TINY_OPTS,
        ],
        _env(datasets_dir),
    )  # fmt: skip
    return out, json.loads((out / "results.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def quick_demo(datasets_dir, tmp_path_factory):
    """The ``make demo`` job with ``--quick``: output folder, results and stdout."""
    return _run_quick_demo(CONFIG, datasets_dir, tmp_path_factory.mktemp("demo"))


def _training_losses(out: Path) -> list:
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    # Each entry is the median of Detectron2's last 20 iterations: iterations 0-19, then 20-39.
    return [(m["iteration"], m["total_loss"]) for m in metrics if "total_loss" in m]


@pytest.mark.slow
def test_quick_demo_trains_evaluates_and_writes_outputs(quick_demo):
    out, results, stdout = quick_demo
    for key in ("test", "shuffled_audio"):
        assert 0.0 <= results[key]["mIoU"] <= 1.0
        assert 0.0 <= results[key]["Fscore"] <= 1.0
    assert "mIoU" in stdout and "audio of another clip" in stdout
    # The negative-audio rows beside the other-audio row, and their numbers in the results.
    for row in ("silence", "noise", "off-screen sound", "listening score"):
        assert row in stdout
    for condition in ("silence", "noise", "offscreen"):
        share = results["test"][f"negative/{condition}/fg_frame_share"]
        assert 0.0 <= share <= 1.0
        assert 0.0 <= results["test"][f"negative/{condition}/fg_area"] <= share
    assert 0.0 <= results["test"]["listening_score"] <= 1.0
    # Training artefacts: checkpoints, Detectron2's metrics.json and TensorBoard events.
    assert (out / "model_final.pth").is_file()
    assert (out / "model_best.pth").is_file()
    assert (out / "last_checkpoint").read_text().endswith(".pth")
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("avs/mIoU" in m for m in metrics)
    assert list(out.glob("events.out.tfevents.*"))
    # Prediction masks and overlays of every test frame (2 clips x 5 frames), for the clips'
    # own audio and for the other audio, and the comparison picture built from them.
    for predictions in (Path(results["predictions"]), out / "inference" / OTHER_AUDIO):
        assert len(list(predictions.rglob("*_overlay.jpg"))) == 10
        assert len(list(predictions.rglob("*.png"))) == 10
    for condition in ("silence", "noise"):
        negative = out / "inference" / f"synthetic_s4_test_negative_{condition}" / "predictions"
        assert len(list(negative.rglob("*.png"))) == 10
    with Image.open(results["comparison_picture"]) as picture:
        # 2 clips x 7 panels of 256 px (frame, truth, own, other, silence, noise, off-screen),
        # with title bands.
        assert picture.width >= 7 * 256 and picture.height > 2 * 256
    assert not list(out.glob("*.tmp-*")), "a temporary checkpoint file was left behind"


@pytest.mark.slow
def test_quick_demo_training_lowers_the_loss(quick_demo):
    out, _, _ = quick_demo
    losses = _training_losses(out)
    assert [it for it, _ in losses] == [19, 39]
    (_, first), (_, last) = losses
    assert last < 0.9 * first, f"the training loss did not fall: {losses}"


@pytest.mark.slow
def test_quick_combo_demo_reads_maskiges_and_lowers_the_loss(datasets_dir, tmp_path):
    """``make demo-combo ARGS=--quick``: COMBO (Siam-Encoder on the generated maskiges) trains
    end to end on the same code path and is scored with both audios."""
    out, results, stdout = _run_quick_demo(COMBO_CONFIG, datasets_dir, tmp_path / "combo")
    assert results["model"] == "COMBO" and stdout.count("COMBO (tiny, CPU") == 1
    for key in ("test", "shuffled_audio"):
        assert 0.0 <= results[key]["mIoU"] <= 1.0
    log = (out / "log.txt").read_text()
    assert "maskiges pre_SAM_mask" in log and "WarmupPolyLR" in (out / "config.yaml").read_text()
    losses = _training_losses(out)
    assert [it for it, _ in losses] == [19, 39]
    (_, first), (_, last) = losses
    assert last < 0.9 * first, f"the training loss did not fall: {losses}"


@pytest.mark.slow
def test_eval_only_reproduces_the_demo_numbers(quick_demo, datasets_dir, tmp_path):
    out, results, _ = quick_demo
    _run(
        [
            "tools/train_net.py",
            # The demo's full config: it adds the fitted audio front end (MODEL.AUDIO.*).
            "--config-file", out / "config.yaml",
            "--eval-only",
            "MODEL.WEIGHTS", results["weights"],
            "DATASETS.TEST", "('synthetic_s4_test',)",
            "TEST.NEGATIVE_AUDIO.ENABLED", "True",
            "OUTPUT_DIR", tmp_path,
            *TINY_OPTS,
        ],
        _env(datasets_dir),
    )  # fmt: skip
    evaluated = json.loads((tmp_path / "eval_results.json").read_text())["avs"]
    assert evaluated["mIoU"] == pytest.approx(results["test"]["mIoU"], abs=1e-6)
    assert evaluated["Fscore"] == pytest.approx(results["test"]["Fscore"], abs=1e-6)
    # --eval-only scores the negative conditions like the demo, seeded the same way.
    for key in ("negative/noise/fg_area", "negative/offscreen/fg_area", "listening_score"):
        assert evaluated[key] == pytest.approx(results["test"][key], abs=1e-6)


def _tagged_iteration(tag: Path) -> int:
    """The iteration in the name last_checkpoint points to (model_0000003.pth -> 3), else -1."""
    name = tag.read_text() if tag.exists() else ""
    digits = name[len("model_") : -len(".pth")]
    return int(digits) if name.startswith("model_") and digits.isdigit() else -1


def _checkpoint_iteration(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["iteration"]


@pytest.mark.slow
def test_kill_9_then_resume_continues_from_last_complete_checkpoint(datasets_dir, tmp_path):
    train = [
        "tools/train_net.py",
        "--config-file", CONFIG,
        "SOLVER.MAX_ITER", "40",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.FREEZE_BACKBONE_ITERS", "3",
        "TEST.EVAL_PERIOD", "0",
        "DATASETS.TEST", "()",
        "OUTPUT_DIR", tmp_path,
        *TINY_OPTS,
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, *map(str, train)],
        cwd=REPO,
        env=_env(datasets_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tag = tmp_path / "last_checkpoint"
    deadline = time.monotonic() + 600
    try:
        # Kill while it writes: wait until at least two checkpoints exist (one may be mid-write).
        while time.monotonic() < deadline and proc.poll() is None:
            if _tagged_iteration(tag) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    named = tmp_path / tag.read_text()
    killed_at = _checkpoint_iteration(named)  # loads: the named file is complete
    assert killed_at >= 1
    stop = killed_at + 3
    resume = [*train[:3], "--resume", *train[3:], "SOLVER.MAX_ITER", stop]
    resumed = _run(resume, _env(datasets_dir))
    log = (tmp_path / "log.txt").read_text()
    assert f"Starting training from iteration {killed_at + 1}" in log, resumed.stdout[-2000:]
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == stop - 1
    assert final["trainer"]["iteration"] == stop - 1
    assert final["trainer"]["optimizer"]["state"], "the optimizer state was not checkpointed"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_gather_evaluation(datasets_dir, tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    common = [
        "DATASETS.TEST", "('synthetic_s4_test',)",
        "TEST.NEGATIVE_AUDIO.ENABLED", "True",
        *TINY_OPTS,
    ]  # fmt: skip
    _run(
        [
            "-m", "torch.distributed.run",
            "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1",
            "--master_port", _free_port(),
            "tools/train_net.py",
            "--config-file", CONFIG,
            *common,
            "SOLVER.MAX_ITER", "2",
            # Negatives of every condition in both processes' training batches.
            "INPUT.NEGATIVE_AUDIO.PROB", "0.5",
            "MODEL.AVSEGFORMER.EMPTY_FRAME_LOSS_WEIGHT", "1.0",
            "SOLVER.CHECKPOINT_PERIOD", "100",
            "TEST.EVAL_PERIOD", "0",
            "OUTPUT_DIR", train_dir,
        ],
        _env(datasets_dir),
    )  # fmt: skip
    two_process = json.loads((train_dir / "eval_results.json").read_text())["avs"]
    log = (train_dir / "log.txt").read_text()
    assert "on 2 devices" in log  # Detectron2's inference log: both processes evaluated

    _run(
        [
            "tools/train_net.py",
            "--config-file", CONFIG,
            "--eval-only",
            *common,
            "MODEL.WEIGHTS", train_dir / "model_final.pth",
            "OUTPUT_DIR", eval_dir,
        ],
        _env(datasets_dir),
    )  # fmt: skip
    one_process = json.loads((eval_dir / "eval_results.json").read_text())["avs"]
    assert one_process["mIoU"] == pytest.approx(two_process["mIoU"], abs=1e-6)
    assert one_process["Fscore"] == pytest.approx(two_process["Fscore"], abs=1e-6)
    # The negative-audio numbers do not depend on the number of processes either.
    negative = [k for k in one_process if k.startswith("negative/") or k == "listening_score"]
    assert "negative/silence/fg_frame_share" in negative and "listening_score" in negative
    assert sorted(negative) == sorted(k for k in two_process if k in negative)
    for key in negative:
        assert one_process[key] == pytest.approx(two_process[key], abs=1e-6), key
