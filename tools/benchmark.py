#!/usr/bin/env python
"""Latency, throughput and peak memory of a model: one eval forward and one training step.

    python tools/benchmark.py --config-file configs/s4/avsegformer_R50.yaml \
        --device cpu --threads 2 --frames 5 --size 224 --runs 3 --output bench.json

The model is randomly initialised (the config's pretrained files are not read, nothing is
downloaded) unless ``--opts MODEL.WEIGHTS FILE`` names a checkpoint, and fed a batch of
``--clips`` random clips (default 1) that follow the model I/O contract (uint8 frames, log-mel,
maskiges when the config reads them, and for training a mask on every frame and frame flags).
Eval is ``model(clips)`` under ``torch.no_grad()``; a training step is forward + backward +
optimiser step (the project's ``build_optimizer``: the config's optimizer, clipping included)
with the visual backbone trainable. Each figure is the median over ``--runs`` runs after
``--warmup`` runs; frames/s counts every frame of the batch.

Memory switches are config keys, e.g. the original MS3 recipe (2 clips of 5 frames at 512x512)
with activation checkpointing everywhere:

    python tools/benchmark.py --config-file configs/ms3/avsegformer_R50.yaml --size 512 \
        --clips 2 --phases train --precision fp32 --opts \
        MODEL.ACTIVATION_CHECKPOINTING.BACKBONE True \
        MODEL.ACTIVATION_CHECKPOINTING.PIXEL_DECODER True \
        MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER True \
        MODEL.ACTIVATION_CHECKPOINTING.MASK_HEAD True

The device is ``--device``, else the config's ``MODEL.DEVICE``; without a GPU a CUDA device
falls back to the CPU with one warning (the table's ``device`` says which one ran).

Peak memory is the process's peak resident set size on CPU (reset before each phase where the
kernel allows it, /proc/self/clear_refs; otherwise the process-lifetime peak) and
``torch.cuda.max_memory_allocated`` on GPU.

``--precision fp32 bf16`` (the default) times both precisions in one process, interleaved run by
run so that a shared machine's load affects both alike, and reports the bf16 speed-up with the
load average and the CPU's bfloat16 features (AMX, AVX512-BF16, or neither). bf16 eval is the
``TEST.PRECISION bf16`` inference path (a bfloat16 copy of the model, see
``avsegformer.modeling.precision``); a bf16 training step runs the float32 model under bfloat16
autocast (``SOLVER.AMP.ENABLED`` on CPU). The peak memory of interleaved phases is their joint peak.
"""

import argparse
import contextlib
import copy
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from detectron2.modeling import build_model

from avsegformer.checkpoint import load_model_weights
from avsegformer.config import setup_cfg
from avsegformer.modeling.precision import apply_inference_precision, cpu_bfloat16_features
from avsegformer.solver import build_optimizer

logger = logging.getLogger("benchmark")

PRECISIONS = ("fp32", "bf16")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: the config's MODEL.DEVICE"
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = torch's)")
    parser.add_argument("--frames", type=int, default=5, help="frames T of each clip")
    parser.add_argument("--clips", type=int, default=1, help="clips per batch")
    parser.add_argument("--size", type=int, default=224, help="square frame size")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per phase")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per phase")
    parser.add_argument("--phases", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument(
        "--precision",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        help="precisions timed side by side (default: both)",
    )
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    return parser.parse_args(argv)


def benchmark_cfg(args: argparse.Namespace):
    """The config file with random weights, then ``--device``, then ``--opts``.

    The config's pretrained files are dropped (a benchmark must not depend on, or download,
    them); weights given in ``--opts`` (``MODEL.WEIGHTS``, ``MODEL.AUDIO.WEIGHTS``) are used.
    """
    opts = ["MODEL.WEIGHTS", "", "MODEL.AUDIO.WEIGHTS", ""]
    if args.device:
        opts += ["MODEL.DEVICE", args.device]
    return setup_cfg(args.config_file, [*opts, *args.opts])


def make_clip(
    cfg, num_frames: int, size: int, train: bool, num_classes: int, seed: int = 0
) -> dict:
    """One random clip as the data mapper produces it (the model's input contract), with
    maskiges when the config reads them (``INPUT.MASKIGE_FOLDER``).

    Args:
        num_classes: the model's output classes (1 or 2 for the binary tasks, where the
            targets are {0, 1}; else class ids).
        seed: of the clip's random content.
    """
    generator = torch.Generator().manual_seed(seed)

    def image():
        return torch.randint(
            0, 256, (num_frames, 3, size, size), dtype=torch.uint8, generator=generator
        )

    clip = {
        "frames": image(),
        "log_mel": torch.randn(num_frames, 96, 64, generator=generator),
        "height": size,
        "width": size,
    }
    if cfg.INPUT.MASKIGE_FOLDER:
        clip["maskiges"] = image()
    if train:
        # No pixel is marked as ignored.
        clip["sem_seg"] = torch.randint(
            0, max(num_classes, 2), (num_frames, size, size), generator=generator
        )
        clip["frame_valid"] = torch.ones(num_frames, dtype=torch.bool)
    return clip


def autocast_context(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The one place that sets the numeric precision of every timed forward."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        # CPU autocast, or AMP on GPU; the training step keeps fp32 weights and optimizer.
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    raise ValueError(f"unsupported precision {precision!r} on {device}")


class PeakMemory:
    """Peak memory of one phase: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: str):
        self.device = device

    def reset(self) -> None:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return
        # Linux resets the VmHWM high-water mark on "5"; harmless elsewhere if it fails.
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")

    def peak_bytes(self) -> int:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def time_interleaved(steps: dict, runs: int, warmup: int, device: str) -> dict:
    """Seconds of each ``steps[name]()`` call: ``warmup`` untimed rounds, then ``runs`` rounds
    that call every step once, in turn."""

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize()
    times = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def forget_audio_embeddings(model) -> None:
    """Drop the audio embeddings the model remembers, so that every timed step pays for them, as
    a clip the model has not seen yet does (the benchmark runs the same clips again and again)."""
    cache = getattr(model, "audio_embeddings", None)
    if cache is not None:
        cache.clear()


def eval_step(model, clips, precision: str):
    """One eval forward; bf16 runs a copy of the model converted by ``TEST.PRECISION``."""
    model = model.eval()
    if precision != "fp32":
        model = apply_inference_precision(copy.deepcopy(model), precision)

    def step():
        forget_audio_embeddings(model)
        with torch.no_grad():
            model(clips)

    return step


def train_step(model, clips, cfg, precision: str, device: str):
    """One training step (forward, backward, optimiser step) under the precision's autocast."""
    model.train()
    model.backbone.requires_grad_(True)
    optimizer = build_optimizer(cfg, model)

    def step():
        forget_audio_embeddings(model)
        with autocast_context(precision, device):
            losses = model(clips)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def benchmark_phase(phase, model, cfg, args, device: str, memory: PeakMemory) -> dict:
    """Every precision of one phase, interleaved: ``{precision: summary}``."""
    train = phase == "train"
    clips = [
        make_clip(cfg, args.frames, args.size, train, model.num_classes, seed=seed)
        for seed in range(args.clips)
    ]
    if phase == "eval":
        steps = {p: eval_step(model, clips, p) for p in args.precision}
    else:
        # One model trained by every precision in turn: each step is timed alike.
        steps = {p: train_step(model, clips, cfg, p, device) for p in args.precision}
    memory.reset()
    times = time_interleaved(steps, args.runs, args.warmup, device)
    peak = memory.peak_bytes()
    frames = args.clips * args.frames
    return {p: summarize(times[p], frames, peak) for p in args.precision}


def summarize(times: list[float], frames: int, peak_bytes: int) -> dict:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "frames_per_s": frames / median,
        "peak_memory_gb": peak_bytes / 1e9,
        "runs_s": times,
    }


def print_table(results: dict, header: dict) -> None:
    print(", ".join(f"{k}={v}" for k, v in header.items()))
    print(
        f"{'phase':<6} {'prec':<5} {'median s':>9} {'min s':>8} {'max s':>8} {'frames/s':>9} "
        f"{'peak GB':>8} {'vs fp32':>8}"
    )
    for phase, by_precision in results.items():
        for precision, r in by_precision.items():
            speedup = r.get("speedup_vs_fp32")
            ratio = f"{speedup:>7.2f}x" if speedup else f"{'':>8}"
            print(
                f"{phase:<6} {precision:<5} {r['median_s']:>9.3f} {r['min_s']:>8.3f} "
                f"{r['max_s']:>8.3f} {r['frames_per_s']:>9.2f} {r['peak_memory_gb']:>8.2f} {ratio}"
            )


def add_speedups(results: dict) -> None:
    """``speedup_vs_fp32`` (fp32 median / this median) of every other precision, in place."""
    for by_precision in results.values():
        if "fp32" not in by_precision:
            continue
        for precision, r in by_precision.items():
            if precision != "fp32":
                r["speedup_vs_fp32"] = by_precision["fp32"]["median_s"] / r["median_s"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = benchmark_cfg(args)
    device = torch.device(cfg.MODEL.DEVICE).type
    torch.manual_seed(0)
    model = build_model(cfg)
    load_model_weights(cfg, model)
    num_parameters = sum(p.numel() for p in model.parameters())

    memory = PeakMemory(device)
    load_before = os.getloadavg()
    results = {
        phase: benchmark_phase(phase, model, cfg, args, device, memory) for phase in args.phases
    }
    add_speedups(results)

    header = {
        "config": args.config_file,
        "device": device,
        "threads": torch.get_num_threads(),
        "clips": args.clips,
        "frames": args.frames,
        "size": args.size,
        "runs": args.runs,
        "precision": args.precision,
        "parameters": num_parameters,
        "torch": torch.__version__,
        "cpu_bf16": cpu_bfloat16_features(),
        # 1-minute load average before and after: the machine's other work inflates timings.
        "load_avg": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print_table(results, header)
    report = {**header, "opts": args.opts, "results": results}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
