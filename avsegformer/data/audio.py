"""Audio front end: VGGish log-mel examples from a wav, or AVSBench's precomputed log-mels.

The log-mel computation reproduces the TF-models VGGish front end that AVSBench and AVSegFormer
use (``vggish_input.waveform_to_examples``): 16 kHz mono, 25 ms periodic-Hann windows every
10 ms, ``|rfft|`` of length 512, 64 HTK mel bands between 125 and 7500 Hz (no weight on the DC
bin, no area normalisation), ``log(mel + 0.01)``, then non-overlapping 96-frame (0.96 s)
examples with the incomplete tail dropped. It runs in float64 and casts to float32 at the end,
which matches the reference to float32 rounding.

Differences from the reference, all deliberate:

* Output shape is ``[N, 96, 64]`` (no channel axis); the model contract feeds ``[T, 96, 64]``.
* Other sample rates are resampled with soxr (very high quality) instead of resampy's
  ``kaiser_best``; the output length follows resampy (``int(n * 16000 / rate)``). The two
  resamplers agree closely below ~7 kHz and differ near the 8 kHz Nyquist (see
  ``tests/test_data_audio.py`` for the measured tolerances).
* AVSBench's ``audio_log_mel/*.pkl`` files are pickled torch tensors; they are read by an
  unpickler that only accepts torch's tensor-rebuild functions, never arbitrary objects.
* A clip whose audio gives more examples than frames is truncated (the reference crashes);
  zero examples, or an unreadable file, is an error naming the file.
"""

import functools
import io
import logging
import math
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import torch

from .errors import AVSDataError

__all__ = [
    "AudioError",
    "SAMPLE_RATE",
    "EXAMPLE_FRAMES",
    "NUM_MEL_BANDS",
    "vggish_mel_matrix",
    "waveform_to_log_mel",
    "waveform_to_examples",
    "read_wav",
    "resample",
    "wav_to_log_mel",
    "load_pickled_tensor",
    "load_log_mel",
    "fit_examples",
    "num_examples_for_samples",
]

logger = logging.getLogger(__name__)

# VGGish front-end constants (vggish_params.py of the reference).
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms at 16 kHz
HOP_SAMPLES = 160  # 10 ms at 16 kHz
FFT_LENGTH = 512  # next power of two above the window
NUM_MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s examples, no overlap

# HTK mel scale: mel = 1127 * ln(1 + f / 700).
_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0

_PAD_MODES = ("repeat", "zero")


class AudioError(AVSDataError):
    """An audio file that cannot be turned into log-mel examples (the message names the file)."""


# ---------------------------------------------------------------------------------------------
# log-mel front end
# ---------------------------------------------------------------------------------------------
def _hertz_to_mel(hertz: np.ndarray) -> np.ndarray:
    return _MEL_HIGH_Q * np.log(1.0 + hertz / _MEL_BREAK_HZ)


@functools.lru_cache(maxsize=4)
def _mel_matrix_np(
    num_mel_bands: int, num_spectrum_bins: int, sample_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    if not 0.0 <= low_hz < high_hz <= sample_rate / 2.0:
        raise ValueError(
            f"mel band edges must satisfy 0 <= low < high <= Nyquist, got {low_hz}, {high_hz} "
            f"at {sample_rate} Hz"
        )
    bin_mels = _hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrum_bins))
    edges = np.linspace(
        _hertz_to_mel(np.float64(low_hz)), _hertz_to_mel(np.float64(high_hz)), num_mel_bands + 2
    )
    weights = np.empty((num_spectrum_bins, num_mel_bands), dtype=np.float64)
    for band in range(num_mel_bands):
        lower, center, upper = edges[band : band + 3]
        rising = (bin_mels - lower) / (center - lower)
        falling = (upper - bin_mels) / (upper - center)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    # The DC bin can fall inside the first band for low_hz > 0; VGGish gives it no weight.
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


def vggish_mel_matrix(
    num_mel_bands: int = NUM_MEL_BANDS,
    num_spectrum_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = MEL_MIN_HZ,
    high_hz: float = MEL_MAX_HZ,
) -> torch.Tensor:
    """Triangular HTK-mel filterbank of the VGGish front end.

    Returns:
        float64 ``[num_spectrum_bins, num_mel_bands]`` (257 x 64 by default): spectrum
        magnitudes times this matrix give mel-band energies.
    """
    return torch.from_numpy(
        _mel_matrix_np(num_mel_bands, num_spectrum_bins, sample_rate, low_hz, high_hz).copy()
    )


@functools.lru_cache(maxsize=1)
def _periodic_hann() -> torch.Tensor:
    n = torch.arange(WINDOW_SAMPLES, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2.0 * math.pi / WINDOW_SAMPLES * n)


def waveform_to_log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """Log-mel spectrogram of a 16 kHz mono waveform, in float64.

    Args:
        waveform: ``[n]`` samples in [-1, 1], 16 kHz.

    Returns:
        float64 ``[F, 64]`` with ``F = 1 + (n - 400) // 160`` frames (0 when ``n < 400``).
    """
    waveform = torch.as_tensor(waveform, dtype=torch.float64)
    if waveform.dim() != 1:
        raise ValueError(f"expected a mono waveform [n], got shape {tuple(waveform.shape)}")
    if waveform.numel() < WINDOW_SAMPLES:
        return waveform.new_zeros((0, NUM_MEL_BANDS))
    frames = waveform.unfold(0, WINDOW_SAMPLES, HOP_SAMPLES)  # [F, 400]
    spectrum = torch.fft.rfft(frames * _periodic_hann(), n=FFT_LENGTH).abs()  # [F, 257]
    mel = spectrum @ vggish_mel_matrix()
    return torch.log(mel + LOG_OFFSET)


def waveform_to_examples(waveform, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """VGGish input examples of a waveform (``vggish_input.waveform_to_examples``).

    Args:
        waveform: ``[n]`` or ``[n, channels]`` float samples in [-1, 1] (numpy or torch);
            channels are averaged.
        sample_rate: rate of ``waveform``; anything but 16 kHz is resampled first.

    Returns:
        float32 ``[N, 96, 64]`` with ``N = (F - 96) // 96 + 1`` for ``F >= 96`` STFT frames,
        else 0 (shorter than 0.975 s).
    """
    data = np.asarray(waveform, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    elif data.ndim != 1:
        raise ValueError(f"expected a waveform [n] or [n, channels], got shape {data.shape}")
    if sample_rate != SAMPLE_RATE:
        data = resample(data, sample_rate)
    log_mel = waveform_to_log_mel(torch.from_numpy(data))
    num_examples = (log_mel.shape[0] - EXAMPLE_FRAMES) // EXAMPLE_FRAMES + 1
    num_examples = max(num_examples, 0)
    examples = log_mel[: num_examples * EXAMPLE_FRAMES].reshape(
        num_examples, EXAMPLE_FRAMES, NUM_MEL_BANDS
    )
    return examples.to(torch.float32)


def num_examples_for_samples(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """How many 0.96 s examples a signal of ``num_samples`` at ``sample_rate`` yields."""
    if sample_rate != SAMPLE_RATE:
        num_samples = int(num_samples * SAMPLE_RATE / sample_rate)
    if num_samples < WINDOW_SAMPLES:
        return 0
    num_frames = 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES
    return max((num_frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES + 1, 0)


def resample(data: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample mono float64 audio to 16 kHz with soxr (very high quality).

    The length is forced to resampy's ``int(n * 16000 / sample_rate)`` so that the number of
    examples matches the reference for every input length.
    """
    import soxr  # imported here so that `import avsegformer` stays light

    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    target_len = int(data.shape[0] * SAMPLE_RATE / sample_rate)
    out = soxr.resample(np.ascontiguousarray(data), sample_rate, SAMPLE_RATE, quality="VHQ")
    out = np.asarray(out, dtype=np.float64)
    if out.shape[0] >= target_len:
        return out[:target_len]
    return np.pad(out, (0, target_len - out.shape[0]))


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Read an audio file the way the reference does: int16 samples / 32768, channels averaged.

    Returns:
        (float64 ``[n]`` mono samples in [-1, 1), sample rate).
    """
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as err:  # soundfile's errors derive from these
        raise AudioError(f"{path}: cannot read audio ({err})") from err
    return (data / 32768.0).mean(axis=1), int(rate)


def wav_to_log_mel(path: str) -> torch.Tensor:
    """VGGish log-mel examples of an audio file.

    Returns:
        float32 ``[N, 96, 64]``; N may be 0 for clips shorter than 0.975 s.
    """
    data, rate = read_wav(path)
    return waveform_to_examples(data, rate)


def _restricted_tensor_rebuild(storage, storage_offset, size, stride, *_ignored):
    # Same as torch._utils._rebuild_tensor_v2, without requires_grad and backward hooks (the
    # AVSBench files were written from a graph leaf with requires_grad=True).
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor storage has unexpected type {type(storage)}")
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def _storage_from_bytes(data: bytes):
    # torch pickles a storage as a nested torch.save; read it with torch's own safe loader.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _TensorUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild torch tensors and nothing else."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _restricted_tensor_rebuild,
        ("torch._utils", "_rebuild_tensor"): _restricted_tensor_rebuild,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only pickled torch tensors are accepted"
            ) from None


def load_pickled_tensor(path: str) -> torch.Tensor:
    """Load a tensor saved with ``pickle.dump`` or ``torch.save`` without running arbitrary code.

    Raises:
        AudioError: naming ``path`` when it is missing, unreadable, or holds anything but a
            tensor.
    """
    try:
        with open(path, "rb") as f:
            if zipfile.is_zipfile(f):
                f.seek(0)
                obj = torch.load(f, map_location="cpu", weights_only=True)
            else:
                f.seek(0)
                obj = _TensorUnpickler(f).load()
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as err:  # what malformed pickles raise
        raise AudioError(f"{path}: cannot load log-mel tensor ({err})") from err
    if not torch.is_tensor(obj):
        raise AudioError(f"{path}: expected a pickled tensor, found {type(obj).__name__}")
    return obj.detach()


def load_log_mel(path: str) -> torch.Tensor:
    """Log-mel examples of one clip from a ``.pkl`` / ``.pt`` tensor, a ``.npy`` array or audio.

    The file kind is chosen by extension: ``.pkl``/``.pt``/``.pth`` (AVSBench's pickled
    ``[N, 1, 96, 64]`` tensors), ``.npy`` (``[N, 96, 64]`` or ``[N, 1, 96, 64]``, no pickles),
    anything else is decoded as audio (wav, flac, ...) and run through the front end.

    Returns:
        float32 ``[N, 96, 64]``.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pkl", ".pt", ".pth"):
        examples = load_pickled_tensor(path)
    elif ext == ".npy":
        try:
            examples = torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise AudioError(f"{path}: cannot load log-mel array ({err})") from err
    else:
        examples = wav_to_log_mel(path)
    if examples.dim() == 4 and examples.shape[1] == 1:
        examples = examples[:, 0]
    if examples.dim() != 3 or tuple(examples.shape[1:]) != (EXAMPLE_FRAMES, NUM_MEL_BANDS):
        raise AudioError(
            f"{path}: log-mel examples must be [N, 1, 96, 64] or [N, 96, 64], "
            f"got {tuple(examples.shape)}"
        )
    return examples.to(torch.float32).contiguous()


def fit_examples(
    examples: torch.Tensor, num_frames: int, pad: str = "repeat", source: str = "<audio>"
) -> torch.Tensor:
    """Make a clip's log-mel examples match its frame count.

    Args:
        examples: ``[N, 96, 64]``.
        num_frames: T, the clip length.
        pad: ``"repeat"`` the last example (AVSBench S4/MS3 preprocessing) or ``"zero"``
            (AVSS in the original, zeros in the log-mel domain, not silence).
        source: the file the examples came from, for error messages.

    Returns:
        ``[T, 96, 64]``: truncated when N > T, padded when N < T.
    """
    if pad not in _PAD_MODES:
        raise ValueError(f"audio padding must be one of {_PAD_MODES}, got {pad!r}")
    count = examples.shape[0]
    if count == 0:
        raise AudioError(
            f"{source}: no log-mel example (the audio is shorter than 0.975 s or empty)"
        )
    if count > num_frames:
        logger.debug("%s: %d log-mel examples truncated to %d", source, count, num_frames)
        return examples[:num_frames]
    if count < num_frames:
        if pad == "repeat":
            filler = examples[-1:].expand(num_frames - count, -1, -1)
        else:
            filler = examples.new_zeros((num_frames - count,) + tuple(examples.shape[1:]))
        examples = torch.cat([examples, filler], dim=0)
    return examples
