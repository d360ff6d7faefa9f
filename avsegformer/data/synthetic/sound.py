"""What a synthetic clip sounds like: each sounding class's tone stack, mixed with faint noise."""

from typing import Sequence

import numpy as np

from ..audio import SAMPLE_RATE
from .scene import CLASS_LOOKS

__all__ = ["class_sound", "mix_audio"]


def class_sound(
    rng: np.random.Generator, class_index: int, num_samples: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A class's sound: 4 harmonics of its pitch (±1.5 % per clip), amplitude-modulated at its
    rate, with a random phase; unit peak."""
    look = CLASS_LOOKS[class_index]
    t = np.arange(num_samples) / sample_rate
    pitch = look.pitch_hz * rng.uniform(0.985, 1.015)
    tone = sum(
        np.sin(2 * np.pi * k * pitch * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5)
    )
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * look.modulation_hz * t + rng.uniform(0, 2 * np.pi))
    sound = tone * envelope
    return sound / np.abs(sound).max()


def mix_audio(
    rng: np.random.Generator, sounding_classes: Sequence[int], seconds: int
) -> np.ndarray:
    """The clip's audio: the sounding classes' sounds at random levels plus faint noise,
    quantised to 16 bits (float64 [seconds * 16000] in [-1, 1))."""
    num_samples = seconds * SAMPLE_RATE
    mix = rng.normal(0, 0.01, size=num_samples)
    for class_index in sounding_classes:
        mix += rng.uniform(0.5, 1.0) * class_sound(rng, class_index, num_samples)
    mix *= 0.6 / np.abs(mix).max()
    return np.round(mix * 32767).astype(np.int16) / 32768.0
