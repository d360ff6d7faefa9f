#!/usr/bin/env python
"""Segment the sounding objects of your own clip.

    python tools/demo.py --config-file configs/synthetic/avsegformer_tiny_s4.yaml \\
        --input clip.mp4 --output out/ --opts MODEL.WEIGHTS output/synthetic_s4/model_best.pth
    python tools/demo.py --config-file ... --frames frames_dir/ --audio sound.wav --output out/

Any frame size and any audio sample rate or length work. As in AVSBench, the clip is cut into
0.96 s audio windows (one VGGish log-mel example each) and one frame is taken at the middle of
each window; with ``--frames`` every image is one such step and the audio is fitted to them.
Audio comes from ``--audio`` (any format soundfile or librosa reads) or, for a video without
``--audio``, from its own audio track (PyAV). Without a GPU, a CUDA config runs on the CPU.

A COMBO model with the Siam-Encoder (``MODEL.COMBO.SIAM_ENCODER``) also needs ``--maskiges DIR``:
one maskige per frame, AVSBench's naming: ``X_mask_color.png`` for a frame ``X.png`` of
``--frames``, ``0000_mask_color.png``, ``0001_...`` for the steps of a video (see
``avsegformer.data.maskiges`` to paint them from a segmenter's masks).

Writes ``masks/<i>.png`` (0/255, or the class palette), ``overlays/<i>.jpg`` and, when OpenCV
can encode it, ``overlay.mp4``. Bad input ends with a one-line message and exit code 2.
"""

import argparse
import logging
import sys

from avsegformer.config import setup_cfg
from avsegformer.data.errors import AVSDataError
from avsegformer.predictor import ClipPredictor, read_clip, read_clip_maskiges, write_predictions

EXIT_BAD_INPUT = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="VIDEO", help="a video file OpenCV can read")
    source.add_argument("--frames", metavar="DIR", help="a folder of frames, in name order")
    parser.add_argument("--audio", metavar="FILE", help="audio file (needed with --frames)")
    parser.add_argument(
        "--maskiges", metavar="DIR", help="one maskige per frame (COMBO with Siam-Encoder)"
    )
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--threshold", type=float, default=0.5, help="binary mask threshold")
    parser.add_argument(
        "--chunk", type=int, default=5, help="frames per forward pass (memory vs. speed)"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="inference precision (default: the config's TEST.PRECISION)",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser.parse_args(argv)


def run(args) -> dict:
    """Segment the clip of ``args``; the number of frames and the overlay video (or None)."""
    if args.frames and not args.audio:
        raise AVSDataError("--frames needs --audio FILE (a folder of images has no sound)")
    if args.chunk < 1:
        raise AVSDataError(f"--chunk must be >= 1, got {args.chunk}")
    frames, log_mel = read_clip(video=args.input, frames=args.frames, audio=args.audio)
    maskiges = None
    if args.maskiges:
        maskiges = read_clip_maskiges(args.maskiges, len(frames), frames=args.frames)
    opts = [*args.opts, *(["TEST.PRECISION", args.precision] if args.precision else [])]
    predictor = ClipPredictor(setup_cfg(args.config_file, opts), chunk=args.chunk)
    probs = predictor(frames, log_mel, maskiges)
    palette = predictor.palette(probs.shape[1])
    video = write_predictions(args.output, frames, predictor.labels(probs, args.threshold), palette)
    return {"frames": len(frames), "video": video}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except (AVSDataError, FileNotFoundError) as err:  # unreadable inputs, missing weights
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    video = f", overlay video {summary['video']}" if summary["video"] else ""
    print(f"{summary['frames']} frames segmented: masks and overlays in {args.output}{video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
