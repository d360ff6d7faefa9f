"""Negative audio: sounds under which the right segmentation of a clip is empty.

Three conditions, each fed through the model's normal audio path:

* ``silence``: a silent waveform through the VGGish front end, whose log-mel is then
  ``log(0 + 0.01)`` in every bin (the precomputed S4/MS3 log-mels are not used for it);
* ``noise``: white or pink noise at a stated RMS level in dBFS, seeded per clip (see
  :func:`clip_seed`), also through the front end;
* ``offscreen``: the audio of another clip whose sounding classes are absent from this clip
  (:mod:`.offscreen` picks it; the audio files are read as usual).

A record carries its condition in ``negative_audio`` (see :func:`mark_negative`); the data mapper
then makes the log-mel of ``silence``/``noise`` with :func:`negative_log_mel` instead of reading
the clip's file. In training, :class:`NegativeAudioSampler` turns a share of the clips into
negatives and the mapper empties their masks (:func:`empty_labels`).
"""

import hashlib
import logging
from collections.abc import Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, fit_examples, waveform_to_examples
from .masks import IGNORE_LABEL

__all__ = [
    "NEGATIVE_CONDITIONS",
    "NOISE_COLORS",
    "NegativeAudioSampler",
    "check_conditions",
    "clip_seed",
    "empty_labels",
    "is_negative",
    "mark_negative",
    "negative_log_mel",
    "negative_waveform",
    "noise_waveform",
]

logger = logging.getLogger(__name__)

#: Every negative condition, in the order they are reported.
NEGATIVE_CONDITIONS = ("silence", "noise", "offscreen")
#: The conditions whose audio is made here rather than read from a file.
SYNTHESIZED_CONDITIONS = ("silence", "noise")
NOISE_COLORS = ("white", "pink")


def check_conditions(conditions: Sequence[str], what: str = "negative audio") -> tuple[str, ...]:
    """``conditions`` as a tuple, or a ValueError naming the unknown ones."""
    unknown = [c for c in conditions if c not in NEGATIVE_CONDITIONS]
    if unknown or not conditions:
        raise ValueError(
            f"{what} conditions must be a non-empty subset of {NEGATIVE_CONDITIONS}, got "
            f"{list(conditions)}"
        )
    return tuple(conditions)


def clip_seed(seed: int, video_id: str) -> int:
    """A 63-bit seed for one clip: a function of ``seed`` and the clip's id only, so a clip's
    noise does not depend on the order, the batch or the process that maps it."""
    digest = hashlib.sha256(f"{int(seed)}/{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def noise_waveform(
    rng: np.random.Generator, num_samples: int, color: str = "white", level_db: float = -20.0
) -> np.ndarray:
    """Gaussian noise with a flat (``white``) or 1/f power (``pink``) spectrum.

    Args:
        rng: the random stream.
        num_samples: length n.
        color: ``white`` or ``pink``.
        level_db: RMS level in dB relative to full scale (-20 dBFS: RMS 0.1).

    Returns:
        float64 ``[n]``, RMS ``10 ** (level_db / 20)`` before clipping to [-1, 1].
    """
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {color!r}")
    samples = rng.standard_normal(num_samples)
    if color == "pink":
        # Amplitude 1/sqrt(f): power falls 3 dB per octave. No DC.
        spectrum = np.fft.rfft(samples)
        scale = np.zeros(spectrum.shape[0])
        scale[1:] = 1.0 / np.sqrt(np.arange(1, spectrum.shape[0]))
        samples = np.fft.irfft(spectrum * scale, n=num_samples)
    rms = np.sqrt(np.mean(samples**2)) if num_samples else 1.0
    samples = samples * (10.0 ** (level_db / 20.0) / max(rms, 1e-12))
    return np.clip(samples, -1.0, 1.0)


def mark_negative(
    record: dict,
    condition: str,
    *,
    seed: int = 0,
    noise_color: str = "white",
    noise_level_db: float = -20.0,
) -> dict:
    """A shallow copy of ``record`` whose ``negative_audio`` says what the clip hears:
    ``{"condition", "seed", "noise_color", "noise_level_db"}`` (the seed is the clip's own,
    :func:`clip_seed`). ``offscreen`` records also need the donor's audio (:mod:`.offscreen`)."""
    check_conditions([condition])
    marked = dict(record)
    marked["negative_audio"] = {
        "condition": condition,
        "seed": clip_seed(seed, str(record.get("video_id", ""))),
        "noise_color": noise_color,
        "noise_level_db": float(noise_level_db),
    }
    return marked


def is_negative(record: dict) -> bool:
    """Whether ``record`` hears a negative condition (its right masks are empty)."""
    return bool(record.get("negative_audio"))


def negative_waveform(spec: dict, num_frames: int) -> np.ndarray:
    """The 16 kHz waveform of a ``silence``/``noise`` clip of ``num_frames`` seconds (one
    VGGish example per frame)."""
    num_samples = int(num_frames) * SAMPLE_RATE
    condition = spec["condition"]
    if condition == "silence":
        return np.zeros(num_samples)
    if condition == "noise":
        rng = np.random.default_rng(int(spec["seed"]))
        return noise_waveform(rng, num_samples, spec["noise_color"], spec["noise_level_db"])
    raise ValueError(f"no waveform is made for the {condition!r} condition")


def negative_log_mel(spec: dict, num_frames: int) -> torch.Tensor:
    """The VGGish log-mel examples of a ``silence``/``noise`` clip: float32 ``[T, 96, 64]``."""
    examples = waveform_to_examples(negative_waveform(spec, num_frames), SAMPLE_RATE)
    return fit_examples(examples, num_frames, "repeat", source=f"<{spec['condition']}>")


def empty_labels(labels: torch.Tensor) -> torch.Tensor:
    """Training labels ``[T, H, W]`` of a negative clip: background (0) everywhere except the
    ignore pixels (255), which stay ignored."""
    return torch.where(labels == IGNORE_LABEL, labels, torch.zeros_like(labels))


class NegativeAudioSampler:
    """Turns a share of the training clips into negatives (their masks become empty).

    Each clip is a negative with probability ``prob``, its condition drawn uniformly from
    ``conditions``. The draws come from NumPy's global generator, which Detectron2 seeds from
    ``SEED`` per process and per data-loader worker (as its augmentations do): a run is
    reproducible under the trainer's seed, and processes draw independent streams.

    Args:
        prob: probability that a clip is a negative (0 = never).
        conditions: subset of :data:`NEGATIVE_CONDITIONS`.
        noise_color, noise_level_db: the ``noise`` condition (see :func:`noise_waveform`).
        donors: an :class:`~avsegformer.data.offscreen.OffscreenDonors` over the training
            clips; needed for ``offscreen``.
    """

    def __init__(
        self,
        prob: float,
        conditions: Sequence[str] = NEGATIVE_CONDITIONS,
        *,
        noise_color: str = "white",
        noise_level_db: float = -20.0,
        donors=None,
    ):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"the negative-audio probability must be in [0, 1], got {prob}")
        if noise_color not in NOISE_COLORS:
            raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {noise_color!r}")
        self.prob = float(prob)
        self.conditions = check_conditions(conditions, "INPUT.NEGATIVE_AUDIO")
        if "offscreen" in self.conditions and donors is None:
            raise ValueError("the offscreen condition needs the training clips' donors")
        self.noise_color = noise_color
        self.noise_level_db = float(noise_level_db)
        self.donors = donors

    @classmethod
    def from_config(cls, cfg) -> "NegativeAudioSampler | None":
        """The sampler of ``INPUT.NEGATIVE_AUDIO`` over ``DATASETS.TRAIN``, None when off."""
        from .offscreen import OffscreenDonors

        n = cfg.INPUT.NEGATIVE_AUDIO
        if n.PROB <= 0:
            return None
        donors = None
        if "offscreen" in n.CONDITIONS:
            donors = OffscreenDonors.from_datasets(cfg.DATASETS.TRAIN)
        return cls(
            n.PROB,
            n.CONDITIONS,
            noise_color=n.NOISE_COLOR,
            noise_level_db=n.NOISE_LEVEL_DB,
            donors=donors,
        )

    def __call__(self, record: dict) -> dict:
        """``record`` itself, or with probability ``prob`` a negative copy of it."""
        if self.prob <= 0 or np.random.random() >= self.prob:
            return record
        condition = self.conditions[np.random.randint(len(self.conditions))]
        marked = mark_negative(
            record,
            condition,
            seed=int(np.random.randint(2**31)),
            noise_color=self.noise_color,
            noise_level_db=self.noise_level_db,
        )
        if condition == "offscreen":
            donor = self.donors.draw(record, np.random)
            if donor is None:  # nothing sounds outside this clip: a silent clip instead
                return mark_negative(record, "silence")
            marked = self.donors.with_audio_of(marked, donor)
        return marked
