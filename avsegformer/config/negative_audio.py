"""Config keys of negative audio (silence, noise, off-screen sound: the right masks are empty),
for every meta-architecture: training with negatives (``INPUT.NEGATIVE_AUDIO``, off by default)
and the evaluation under negatives (``TEST.NEGATIVE_AUDIO``, off by default)."""

from detectron2.config import CfgNode as CN

__all__ = ["add_negative_audio_config"]


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
