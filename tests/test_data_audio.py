"""VGGish log-mel front end, safe .pkl loading and example padding (avsegformer.data.audio)."""

import os
import pickle

import numpy as np
import pytest
import soundfile
import torch
from helpers import load_fixture

from avsegformer.data import audio

# Upper edge (Hz) of each of the 64 mel bands: the resampler tolerances are stated per band.
_BAND_EDGES_HZ = 700.0 * (
    np.exp(np.linspace(1127 * np.log(1 + 125 / 700), 1127 * np.log(1 + 7500 / 700), 66) / 1127)
    - 1.0
)
_BAND_UPPER_HZ = torch.from_numpy(_BAND_EDGES_HZ[2:])


@pytest.fixture(scope="module")
def vggish_fixture():
    return load_fixture("vggish.pt")


def test_mel_matrix_matches_reference(vggish_fixture):
    ours = audio.vggish_mel_matrix()
    assert ours.dtype == torch.float64 and ours.shape == (257, 64)
    torch.testing.assert_close(ours, vggish_fixture["mel_matrix"], rtol=0, atol=1e-12)
    assert torch.all(ours[0] == 0), "the DC bin must carry no weight"


def test_16k_examples_match_reference_exactly(vggish_fixture):
    case = vggish_fixture["cases"]["sine440_16k"]
    examples = audio.waveform_to_examples(case["waveform"].double().numpy(), 16000)
    assert examples.dtype == torch.float32 and examples.shape == (5, 96, 64)
    torch.testing.assert_close(examples, case["examples"][:, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "atol"), [("chirp_44k1", 1e-4), ("noise_22k05", 1e-5)])
def test_log_mel_of_reference_resampled_signal(vggish_fixture, name, atol):
    # The stored signal is resampy's output rounded to float32; the README measures 6.2e-5
    # (chirp) and 7.2e-7 (noise) for a float64 log-mel of it.
    case = vggish_fixture["cases"][name]
    examples = audio.waveform_to_examples(case["resampled_16k_float32"].double().numpy(), 16000)
    assert examples.shape == case["examples"][:, 0].shape
    torch.testing.assert_close(examples, case["examples"][:, 0], rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("name", "rate", "max_atol", "mean_atol"),
    [("chirp_44k1", 44100, 0.12, 3e-3), ("noise_22k05", 22050, 1e-3, 1e-4)],
)
def test_own_resampler_end_to_end(vggish_fixture, name, rate, max_atol, mean_atol):
    # soxr is not resampy's kaiser_best: a time-domain difference of ~1e-4 shows up as up to
    # ~0.1 in near-silent log-mel bins (log(x + 0.01) amplifies it), and both filters differ
    # in their transition band near the 8 kHz Nyquist. So only bands whose upper edge is below
    # 6 kHz are compared, with a documented loose max and a tight mean.
    case = vggish_fixture["cases"][name]
    examples = audio.waveform_to_examples(case["waveform"].double().numpy(), rate)
    reference = case["examples"][:, 0]
    assert examples.shape == reference.shape, "example count must follow resampy's length"
    below_6k = _BAND_UPPER_HZ < 6000
    diff = (examples - reference).abs()[..., below_6k]
    assert diff.max() <= max_atol
    assert diff.mean() <= mean_atol


def test_num_examples_for_durations():
    assert audio.num_examples_for_samples(80000) == 5
    assert audio.num_examples_for_samples(160000) == 10
    assert audio.num_examples_for_samples(15599) == 0
    assert audio.num_examples_for_samples(15600) == 1
    assert audio.num_examples_for_samples(44100 * 5, 44100) == 5
    for n in (15600, 16000, 31000, 80000):
        assert audio.waveform_to_examples(np.zeros(n)).shape[0] == audio.num_examples_for_samples(n)


def test_silence_is_log_offset():
    examples = audio.waveform_to_examples(np.zeros(16000))
    torch.testing.assert_close(examples, torch.full((1, 96, 64), float(np.log(0.01))))


def test_wav_reading_int16_stereo_and_resampled(tmp_path, vggish_fixture):
    rng = np.random.default_rng(0)
    stereo = rng.integers(-20000, 20000, size=(80000, 2), dtype=np.int16)
    path = os.fspath(tmp_path / "stereo.wav")
    soundfile.write(path, stereo, 16000, subtype="PCM_16")
    expected = audio.waveform_to_examples(stereo / 32768.0, 16000)
    torch.testing.assert_close(audio.load_log_mel(path), expected, rtol=0, atol=0)

    case = vggish_fixture["cases"]["noise_22k05"]
    path = os.fspath(tmp_path / "noise.wav")
    soundfile.write(path, case["waveform"].numpy(), 22050, subtype="PCM_16")
    assert audio.wav_to_log_mel(path).shape == (3, 96, 64)


def test_pickled_tensor_loads_like_avsbench(tmp_path):
    tensor = torch.randn(5, 1, 96, 64, requires_grad=True)  # how AVSBench wrote them
    path = os.fspath(tmp_path / "clip.pkl")
    with open(path, "wb") as f:
        pickle.dump(tensor, f)
    loaded = audio.load_log_mel(path)
    assert loaded.shape == (5, 96, 64) and not loaded.requires_grad
    assert torch.equal(loaded, tensor.detach()[:, 0])

    path_pt = os.fspath(tmp_path / "clip.pt")
    torch.save(tensor.detach()[:, 0], path_pt)
    assert torch.equal(audio.load_log_mel(path_pt), tensor.detach()[:, 0])

    path_npy = os.fspath(tmp_path / "clip.npy")
    np.save(path_npy, tensor.detach().numpy())
    assert torch.equal(audio.load_log_mel(path_npy), tensor.detach()[:, 0])


class _TensorAfterSideEffect:
    """A pickle payload that, when unpickled by a loader that runs arbitrary callables, writes
    ``trace`` and then yields a valid AVSBench log-mel tensor [5, 1, 96, 64]: a loader that only
    checks the result's type and shape would accept it."""

    def __init__(self, trace: str):
        self.trace = trace

    def __reduce__(self):
        code = (
            f"(open({self.trace!r}, 'w').write('code ran'), "
            "__import__('torch').zeros(5, 1, 96, 64))[1]"
        )
        return (eval, (code,))


def _write_pickle(path, payload) -> str:
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    return os.fspath(path)


def _write_torch_save(path, payload) -> str:
    torch.save(payload, path)
    return os.fspath(path)


def _unsafe_load(path):
    if path.endswith(".pt"):
        return torch.load(path, weights_only=False)
    with open(path, "rb") as f:
        return pickle.load(f)


# AVSBench's .pkl files are plain pickles; .pt files are torch.save zip archives.
_FORMATS = pytest.mark.parametrize(
    ("file_name", "write"), [("evil.pkl", _write_pickle), ("evil.pt", _write_torch_save)]
)


@_FORMATS
def test_exploit_payload_runs_and_passes_as_a_tensor_when_unpickled(tmp_path, file_name, write):
    # The payload is live: an unrestricted load runs its code and gets a tensor of the right shape.
    trace = tmp_path / "trace.txt"
    path = write(tmp_path / file_name, _TensorAfterSideEffect(os.fspath(trace)))
    result = _unsafe_load(path)
    assert trace.read_text() == "code ran"
    assert torch.is_tensor(result) and result.shape == (5, 1, 96, 64)


@_FORMATS
def test_exploit_pickle_is_refused_without_running_its_code(tmp_path, file_name, write):
    trace = tmp_path / "trace.txt"
    path = write(tmp_path / file_name, _TensorAfterSideEffect(os.fspath(trace)))
    with pytest.raises(audio.AudioError, match=file_name):
        audio.load_log_mel(path)
    assert not trace.exists(), "the loader executed code from the file"
    with pytest.raises(audio.AudioError, match=file_name):
        audio.load_pickled_tensor(path)
    assert not trace.exists(), "the loader executed code from the file"


@pytest.mark.parametrize("payload", [{"not": "a tensor"}, [1, 2, 3]])
def test_pickle_with_anything_but_a_tensor_is_refused(tmp_path, payload):
    path = _write_pickle(tmp_path / "evil.pkl", payload)
    with pytest.raises(audio.AudioError, match="evil.pkl"):
        audio.load_log_mel(path)


def test_bad_files_name_the_file(tmp_path):
    missing = os.fspath(tmp_path / "missing.pkl")
    with pytest.raises(audio.AudioError, match="missing.pkl"):
        audio.load_log_mel(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav")
    with pytest.raises(audio.AudioError, match="garbage.wav"):
        audio.load_log_mel(os.fspath(garbage))
    wrong_shape = os.fspath(tmp_path / "wrong.pkl")
    with open(wrong_shape, "wb") as f:
        pickle.dump(torch.zeros(5, 96, 32), f)
    with pytest.raises(audio.AudioError, match="wrong.pkl"):
        audio.load_log_mel(wrong_shape)


def test_fit_examples_padding_and_truncation():
    examples = torch.arange(3, dtype=torch.float32).view(3, 1, 1).expand(3, 96, 64)
    repeated = audio.fit_examples(examples, 5, "repeat")
    assert repeated.shape == (5, 96, 64)
    assert repeated[:, 0, 0].tolist() == [0, 1, 2, 2, 2]
    zeroed = audio.fit_examples(examples, 5, "zero")
    assert zeroed[:, 0, 0].tolist() == [0, 1, 2, 0, 0]
    assert audio.fit_examples(examples, 2, "zero")[:, 0, 0].tolist() == [0, 1]
    with pytest.raises(audio.AudioError, match="clip.wav"):
        audio.fit_examples(examples[:0], 5, "repeat", source="clip.wav")
    with pytest.raises(ValueError, match="padding"):
        audio.fit_examples(examples, 5, "reflect")
