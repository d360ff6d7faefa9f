"""Config keys of negative audio (silence, noise, off-screen sound: the right masks are empty),
for every meta-architecture: training with negatives (``INPUT.NEGATIVE_AUDIO``, off by default)
and the evaluation under negatives (``TEST.NEGATIVE_AUDIO``, off by default)."""

import logging

from detectron2.config import CfgNode as CN

__all__ = ["add_negative_audio_config", "negative_audio_start_iter", "without_negative_audio"]

logger = logging.getLogger(__name__)


def add_negative_audio_config(cfg):
    """Add ``INPUT.NEGATIVE_AUDIO`` and ``TEST.NEGATIVE_AUDIO`` in place."""
    cfg.INPUT.NEGATIVE_AUDIO = CN()
    n = cfg.INPUT.NEGATIVE_AUDIO
    # Probability that a training clip hears a negative condition instead of its own audio; its
    # masks then become empty (ignore pixels stay ignore). 0 = off, the original recipes.
    n.PROB = 0.0
    # Conditions a negative training clip draws from, uniformly: "silence" (silent waveform
    # through the audio front end), "noise" (see NOISE_*), "offscreen" (another training clip
    # whose sounding classes are absent from this clip; needs class information: S4 categories,
    # AVSS masks or the synthetic AVSBench's clip classes, not MS3).
    n.CONDITIONS = ["silence", "noise", "offscreen"]
    # First training iteration that may draw negatives (a curriculum: the model first learns to
    # segment with the right audio, then to stay silent under negatives). 0 = from the start.
    n.START_ITER = 0
    # The "noise" condition, in training and evaluation: "white" or "pink" Gaussian noise at
    # this RMS level in dB relative to full scale (-20 dBFS = RMS 0.1).
    n.NOISE_COLOR = "white"
    n.NOISE_LEVEL_DB = -20.0

    cfg.TEST.NEGATIVE_AUDIO = CN()
    t = cfg.TEST.NEGATIVE_AUDIO
    # Also score every test dataset under each negative condition: share of frames with any
    # predicted foreground, mean predicted foreground area, and the listening score (see
    # avsegformer.evaluation.negative_audio).
    t.ENABLED = False
    t.CONDITIONS = ["silence", "noise", "offscreen"]
    # Seed of the evaluation's noise and off-screen pairing (per clip: the numbers do not depend
    # on the number of processes or the batch size).
    t.SEED = 0


def negative_audio_start_iter(cfg) -> int:
    """``INPUT.NEGATIVE_AUDIO.START_ITER``, checked: 0 when negatives are drawn from the start
    (or not at all), else the first iteration that draws them.

    Raises:
        ValueError: START_ITER is not an integer >= 0, or is > 0 while PROB is 0.
    """
    n = cfg.INPUT.NEGATIVE_AUDIO
    start = n.START_ITER
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(
            f"INPUT.NEGATIVE_AUDIO.START_ITER must be an integer >= 0 (0: negatives from the "
            f"first iteration), got {start!r}"
        )
    if start > 0 and n.PROB <= 0:
        raise ValueError(
            f"INPUT.NEGATIVE_AUDIO.START_ITER is {start} but INPUT.NEGATIVE_AUDIO.PROB is "
            f"{n.PROB}: no clip would ever be negative; set PROB > 0 or leave START_ITER at 0"
        )
    if start >= cfg.SOLVER.MAX_ITER > 0:
        logger.warning(
            "INPUT.NEGATIVE_AUDIO.START_ITER (%d) >= SOLVER.MAX_ITER (%d): this run trains "
            "without negative audio",
            start,
            cfg.SOLVER.MAX_ITER,
        )
    return start


def without_negative_audio(cfg):
    """A copy of ``cfg`` that draws no negatives in training (``INPUT.NEGATIVE_AUDIO.PROB`` 0),
    frozen like ``cfg``."""
    out = cfg.clone()
    out.defrost()
    out.INPUT.NEGATIVE_AUDIO.PROB = 0.0
    if cfg.is_frozen():
        out.freeze()
    return out
