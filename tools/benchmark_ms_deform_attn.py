#!/usr/bin/env python
"""Time multi-scale deformable attention on each available backend.

For one clip of ``--frames`` frames at each ``--sizes`` input size, the AVSegFormer encoder shape:
levels at strides 8, 16 and 32, 8 heads, 4 points, 32 channels per head, one query per token.
Two workloads are timed:

- ``op``: the sampling alone (:func:`avsegformer.layers.ms_deform_attn`), which is what the
  backends differ in;
- ``layer``: a whole :class:`avsegformer.layers.MSDeformAttn` (projections included).

Each is timed forward (no autograd) and forward+backward; a figure is the best of ``--repeats``
wall-clock runs after one warm-up. Sampling points are the encoder's own (pixel centres plus the
initial direction grid, jittered by about a pixel), so memory access is as local as in training.
The ``speed-up`` column divides the PyTorch time by the compiled time measured in the same run.

    python tools/benchmark_ms_deform_attn.py --threads 2
"""

import argparse
import math
import time

import torch

from avsegformer.layers import MSDeformAttn, compiled_op_available, ms_deform_attn

HEADS, POINTS, CHANNELS, STRIDES = 8, 4, 32, (8, 16, 32)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--frames", type=int, default=5, help="frames per clip (the batch)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workloads", nargs="+", default=["op", "layer"], choices=["op", "layer"])
    return parser.parse_args(argv)


def pixel_centres(hw):
    """``[S, 2]`` (x, y) in [0, 1] of every pixel of every level, levels concatenated."""
    centres = []
    for h, w in hw:
        ys, xs = torch.meshgrid(
            (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
        )
        centres.append(torch.stack([xs, ys], -1).reshape(-1, 2))
    return torch.cat(centres)


def level_shapes(size):
    return [(math.ceil(size / s), math.ceil(size / s)) for s in STRIDES]


def encoder_inputs(size, frames, device, generator):
    """Value, shapes, start index, locations and weights of one encoder self-attention call."""
    hw = level_shapes(size)
    shapes = torch.tensor(hw)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    tokens = int(areas.sum())
    reference = pixel_centres(hw)[None, :, None, None, None, :]
    # The initial direction grid of MSDeformAttn, in pixels, plus a pixel of jitter.
    grid = MSDeformAttn(HEADS * CHANNELS, len(hw), HEADS, POINTS).sampling_offsets.bias
    grid = grid.detach().view(1, 1, HEADS, len(hw), POINTS, 2)
    jitter = torch.randn(frames, tokens, HEADS, len(hw), POINTS, 2, generator=generator)
    pixel = shapes.flip(-1).float()[None, None, None, :, None, :]
    locations = reference + (grid + jitter) / pixel
    logits = torch.randn(frames, tokens, HEADS, len(hw) * POINTS, generator=generator)
    weights = logits.softmax(-1).view(frames, tokens, HEADS, len(hw), POINTS)
    value = torch.randn(frames, tokens, HEADS, CHANNELS, generator=generator)
    return [t.to(device) for t in (value, shapes, starts, locations, weights)]


def best_time(fn, repeats, device):
    fn()  # warm-up: first-call allocations, backend logging
    best = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def op_runners(inputs, impl):
    value, shapes, starts, locations, weights = inputs
    grad_output = torch.randn(value.shape[0], locations.shape[1], HEADS * CHANNELS).to(value)

    def forward():
        with torch.no_grad():
            ms_deform_attn(value, shapes, starts, locations, weights, impl=impl)

    def forward_backward():
        leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
        out = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], impl=impl)
        out.backward(grad_output)

    return forward, forward_backward


def layer_runners(inputs, impl, generator):
    value, shapes, starts, _, _ = inputs
    frames, tokens = value.shape[:2]
    layer = MSDeformAttn(HEADS * CHANNELS, shapes.shape[0], HEADS, POINTS, impl=impl)
    layer = layer.to(value.device)
    with torch.no_grad():  # content-dependent offsets and attention, as after some training
        layer.sampling_offsets.weight.normal_(0.0, 0.01, generator=generator)
        layer.attention_weights.weight.normal_(0.0, 0.05, generator=generator)
    src = torch.randn(frames, tokens, HEADS * CHANNELS, generator=generator).to(value)
    levels = shapes.shape[0]
    hw = [tuple(level) for level in shapes.tolist()]
    reference = pixel_centres(hw)[None, :, None, :].expand(frames, -1, levels, -1).to(value)

    def forward():
        with torch.no_grad():
            layer(src, reference, src, shapes, starts)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        query = src.detach().requires_grad_()
        layer(query, reference, query, shapes, starts).sum().backward()

    return forward, forward_backward


def main(argv=None):
    """Print the table; returns ``{(size, workload, pass, backend): milliseconds}``."""
    args = parse_args(argv)
    results = {}
    torch.set_num_threads(args.threads)
    device = args.device
    backends = ["pytorch"]
    if compiled_op_available(device):
        backends.append("compiled")
    else:
        print(f"note: the compiled op is not available for {device}; timing PyTorch only")
    print(
        f"device {device}, {torch.get_num_threads()} threads, {args.frames} frames, "
        f"{HEADS} heads, {POINTS} points, {CHANNELS} channels/head, best of {args.repeats}"
    )
    header = (
        f"{'size':>5} {'workload':>8} {'pass':>9} "
        + " ".join(f"{b + ' ms':>12}" for b in backends)
        + (f" {'speed-up':>9}" if len(backends) == 2 else "")
    )
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        generator = torch.Generator().manual_seed(0)
        inputs = encoder_inputs(size, args.frames, device, generator)
        for workload in args.workloads:
            times = {}
            for impl in backends:
                if workload == "op":
                    runners = op_runners(inputs, impl)
                else:
                    runners = layer_runners(inputs, impl, torch.Generator().manual_seed(1))
                for name, fn in zip(("forward", "fwd+bwd"), runners):
                    times[(impl, name)] = best_time(fn, args.repeats, device)
                    results[(size, workload, name, impl)] = times[(impl, name)]
            for name in ("forward", "fwd+bwd"):
                row = f"{size:>5} {workload:>8} {name:>9} " + " ".join(
                    f"{times[(impl, name)]:>12.1f}" for impl in backends
                )
                if len(backends) == 2:
                    ratio = times[("pytorch", name)] / times[("compiled", name)]
                    row += f" {ratio:>8.1f}x"
                print(row, flush=True)
    return results


if __name__ == "__main__":
    main()
