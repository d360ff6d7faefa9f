"""Negative audio on the data side: each condition feeds what it says, training negatives have
empty masks, off-screen donors sound nothing the clip shows."""

import json
import math

import numpy as np
import pytest
import torch
from avsbench_tree import make_avss_tree, make_ms3_tree, make_s4_tree

from avsegformer.data.audio import LOG_OFFSET, waveform_to_examples
from avsegformer.data.dataset_mapper import AVSDatasetMapper
from avsegformer.data.datasets import load_avsbench
from avsegformer.data.errors import AVSDataError
from avsegformer.data.masks import IGNORE_LABEL, avss_palette
from avsegformer.data.negative_audio import (
    NegativeAudioSampler,
    clip_seed,
    empty_labels,
    mark_negative,
    negative_log_mel,
    negative_waveform,
    noise_waveform,
)
from avsegformer.data.offscreen import OffscreenDonors, clip_classes, offscreen_records
from avsegformer.data.synthetic import generate


# ---------------------------------------------------------------------------------------------
# silence and noise
# ---------------------------------------------------------------------------------------------
def test_silence_is_silent_after_the_front_end():
    spec = mark_negative({"video_id": "a"}, "silence")["negative_audio"]
    log_mel = negative_log_mel(spec, num_frames=5)
    assert log_mel.shape == (5, 96, 64) and log_mel.dtype == torch.float32
    # VGGish's log-mel of zeros: log(0 + 0.01) in every bin.
    assert torch.equal(log_mel, torch.full_like(log_mel, math.log(LOG_OFFSET)))


def test_noise_has_its_level_and_is_seeded_per_clip():
    def spec(video_id, seed=0, color="white", level=-20.0):
        record = {"video_id": video_id}
        return mark_negative(record, "noise", seed=seed, noise_color=color, noise_level_db=level)[
            "negative_audio"
        ]

    wave = negative_waveform(spec("a"), 5)
    assert wave.shape == (5 * 16000,)
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.1, rel=1e-3)
    quiet = negative_waveform(spec("a", level=-40.0), 5)
    assert np.sqrt(np.mean(quiet**2)) == pytest.approx(0.01, rel=1e-3)
    # A function of (seed, clip) only: the same clip always hears the same noise.
    assert np.array_equal(negative_waveform(spec("a"), 5), wave)
    assert not np.array_equal(negative_waveform(spec("b"), 5), wave)
    assert not np.array_equal(negative_waveform(spec("a", seed=1), 5), wave)
    assert clip_seed(0, "a") == clip_seed(0, "a") != clip_seed(0, "b")
    # Noise is loud in every mel band, far above silence.
    examples = negative_log_mel(spec("a"), 5)
    assert examples.shape == (5, 96, 64)
    assert (examples.mean(dim=(0, 1)) > math.log(LOG_OFFSET) + 1).all()


def test_pink_noise_falls_three_db_per_octave():
    rng = np.random.default_rng(0)
    pink = noise_waveform(rng, 2**18, "pink", -20.0)
    white = noise_waveform(np.random.default_rng(0), 2**18, "white", -20.0)
    assert np.sqrt(np.mean(pink**2)) == pytest.approx(0.1, rel=1e-2)

    def band_power(x, low, high):
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / 16000)
        return power[(freqs >= low) & (freqs < high)].mean()

    # Mean power per bin halves per octave for pink noise, stays flat for white.
    assert band_power(pink, 500, 1000) / band_power(pink, 1000, 2000) == pytest.approx(2, rel=0.1)
    assert band_power(white, 500, 1000) / band_power(white, 1000, 2000) == pytest.approx(1, rel=0.1)
    with pytest.raises(ValueError, match="noise color"):
        noise_waveform(rng, 10, "brown")


def test_empty_labels_keep_ignore():
    labels = torch.tensor([[[0, 1, 255], [5, 255, 3]]])
    assert empty_labels(labels).tolist() == [[[0, 0, 255], [0, 255, 0]]]


# ---------------------------------------------------------------------------------------------
# the mapper
# ---------------------------------------------------------------------------------------------
def _s4_records(tmp_path, split="test"):
    make_s4_tree(tmp_path / "Single-source")
    return load_avsbench("s4", str(tmp_path / "Single-source"), split)


def test_mapper_feeds_the_condition_instead_of_the_file(tmp_path):
    record = _s4_records(tmp_path)[0]
    mapper = AVSDatasetMapper(is_train=False, frame_size=(32, 32))
    own = mapper(record)["log_mel"]
    silent = mapper(mark_negative(record, "silence"))["log_mel"]
    noisy = mapper(mark_negative(record, "noise", seed=3))["log_mel"]
    assert torch.equal(silent, torch.full_like(own, math.log(LOG_OFFSET)))
    assert torch.equal(
        noisy, negative_log_mel(mark_negative(record, "noise", seed=3)["negative_audio"], 5)
    )
    assert not torch.equal(noisy, own)
    # The frames are the clip's own.
    assert torch.equal(mapper(mark_negative(record, "noise"))["frames"], mapper(record)["frames"])


def test_training_negatives_have_empty_masks(tmp_path):
    records = _s4_records(tmp_path, "train")
    record = records[0]
    plain = AVSDatasetMapper(is_train=True, frame_size=(32, 32))
    always = AVSDatasetMapper(
        is_train=True,
        frame_size=(32, 32),
        negative_audio=NegativeAudioSampler(1.0, ["silence", "noise"]),
    )
    own = plain(record)
    assert (own["sem_seg"] == 1).any()  # S4 train: frame 1 annotated with an object
    np.random.seed(0)
    negative = always(record)
    assert negative["negative_audio"]["condition"] in ("silence", "noise")
    # Annotated frame all background; the unannotated ones stay ignored.
    assert (negative["sem_seg"][0] == 0).all()
    assert (negative["sem_seg"][1:] == IGNORE_LABEL).all()
    assert torch.equal(negative["sem_seg"] == IGNORE_LABEL, own["sem_seg"] == IGNORE_LABEL)
    assert not torch.equal(negative["log_mel"], own["log_mel"])
    # Off by default; an evaluation mapper never draws negatives.
    assert "negative_audio" not in own
    evaluation = AVSDatasetMapper(
        is_train=False, frame_size=(32, 32), negative_audio=NegativeAudioSampler(1.0, ["silence"])
    )
    assert "negative_audio" not in evaluation(record)


def test_sampler_probability_and_reproducibility():
    records = [{"video_id": f"c{i}", "category": f"k{i % 3}"} for i in range(6)]
    donors = OffscreenDonors(records)
    sampler = NegativeAudioSampler(0.3, donors=donors)

    def draws(seed):
        np.random.seed(seed)
        out = [sampler(records[i % 6]) for i in range(2000)]
        return [(r.get("negative_audio") or {}).get("condition") for r in out]

    first = draws(1)
    assert draws(1) == first  # reproducible under the seed
    assert draws(2) != first
    share = sum(c is not None for c in first) / len(first)
    assert share == pytest.approx(0.3, abs=0.04)
    counts = {c: first.count(c) for c in ("silence", "noise", "offscreen")}
    assert min(counts.values()) > 0.25 * share * len(first)
    assert NegativeAudioSampler(0.0, ["silence"])(records[0]) is records[0]
    with pytest.raises(ValueError, match="donors"):
        NegativeAudioSampler(0.5, ["offscreen"])
    with pytest.raises(ValueError, match="conditions"):
        NegativeAudioSampler(0.5, ["thunder"])


def test_config_builds_the_sampler_only_when_on():
    from helpers import tiny_avsegformer_cfg

    cfg = tiny_avsegformer_cfg()
    assert cfg.INPUT.NEGATIVE_AUDIO.PROB == 0.0 and not cfg.TEST.NEGATIVE_AUDIO.ENABLED
    assert NegativeAudioSampler.from_config(cfg) is None
    cfg.INPUT.NEGATIVE_AUDIO.PROB = 0.25
    cfg.INPUT.NEGATIVE_AUDIO.CONDITIONS = ["silence", "noise"]
    cfg.INPUT.NEGATIVE_AUDIO.NOISE_COLOR = "pink"
    sampler = NegativeAudioSampler.from_config(cfg)
    assert (sampler.prob, sampler.conditions, sampler.noise_color) == (
        0.25,
        ("silence", "noise"),
        "pink",
    )


# ---------------------------------------------------------------------------------------------
# off-screen donors
# ---------------------------------------------------------------------------------------------
def test_offscreen_donor_sounds_nothing_the_clip_shows():
    records = [
        {"video_id": "a", "sounding_classes": ["dog"], "visible_classes": ["dog", "cat"]},
        {"video_id": "b", "sounding_classes": ["cat"], "visible_classes": ["cat", "car"]},
        {"video_id": "c", "sounding_classes": ["car"], "visible_classes": ["car", "dog"]},
        {"video_id": "d", "sounding_classes": ["bird"], "visible_classes": ["bird", "dog"]},
    ]
    for record in records:
        record["audio_file_name"] = f"{record['video_id']}.wav"
    chosen = {r["video_id"]: r for r in offscreen_records(records, seed=0)}
    # a shows dog and cat: only c (car) qualifies... and d (bird).
    assert chosen["a"]["audio_donor"] in ("c", "d")
    assert chosen["b"]["audio_donor"] in ("d",)
    assert chosen["c"]["audio_donor"] in ("b", "d")
    assert chosen["d"]["audio_donor"] in ("b", "c")
    by_id = {r["video_id"]: r for r in records}
    for video_id, record in chosen.items():
        donor = by_id[record["audio_donor"]]
        assert not set(donor["sounding_classes"]) & set(by_id[video_id]["visible_classes"])
        assert record["audio_file_name"] == donor["audio_file_name"]
        assert record["audio_classes"] == donor["sounding_classes"]
        assert record["negative_audio"]["condition"] == "offscreen"
    # The pairing is a function of (seed, clip): a subset of clips keeps its donors.
    assert offscreen_records(records, seed=0) == offscreen_records(records, seed=0)


def test_offscreen_leaves_out_clips_without_a_donor():
    records = [
        {"video_id": "a", "category": "dog", "audio_file_name": "a.pkl"},
        {"video_id": "b", "category": "dog", "audio_file_name": "b.pkl"},
        {"video_id": "c", "category": "cat", "audio_file_name": "c.pkl"},
    ]
    chosen = offscreen_records(records)
    assert [(r["video_id"], r["audio_donor"]) for r in chosen] == [
        ("a", "c"),
        ("b", "c"),
        ("c", chosen[2]["audio_donor"]),
    ]
    assert chosen[2]["audio_donor"] in ("a", "b")
    assert offscreen_records(records[:2]) == []


def test_avss_classes_come_from_the_masks_and_ms3_has_none(tmp_path):
    make_avss_tree(tmp_path / "AVSS")
    records = load_avsbench("avss", str(tmp_path / "AVSS"), "test")
    palette = avss_palette()
    sounding, visible = clip_classes(records[0], palette)
    # The test tree paints classes 5 and 70 beside the background.
    assert sounding == visible == frozenset({5, 70})
    make_ms3_tree(tmp_path / "Multi-sources")
    ms3 = load_avsbench("ms3", str(tmp_path / "Multi-sources"), "test")
    assert clip_classes(ms3[0]) is None
    with pytest.raises(AVSDataError, match="no class information"):
        OffscreenDonors(ms3, dataset="ms3_test")


def test_synthetic_dataset_lists_every_clips_classes(tmp_path):
    generate(
        str(tmp_path),
        subsets=("s4", "avss"),
        split_sizes={"train": 0, "val": 0, "test": 6},
        size=32,
        progress=False,
    )
    records = load_avsbench("s4", str(tmp_path / "Single-source"), "test")
    table = json.loads((tmp_path / "Single-source" / "clip_classes.json").read_text())
    assert set(table) == {r["video_id"] for r in records}
    for record in records:
        # S4: one sounding object, its category; at least one silent object of another class.
        assert record["sounding_classes"] == [record["category"]]
        assert set(record["visible_classes"]) > set(record["sounding_classes"])
    for record in offscreen_records(records, seed=0):
        assert not set(record["audio_classes"]) & set(record["visible_classes"])
    avss = load_avsbench("avss", str(tmp_path / "AVSS"), "test")
    assert all(r["sounding_classes"] and r["visible_classes"] for r in avss)
    # The sounding classes named in the table are the ones the masks hold.
    index = json.loads((tmp_path / "AVSS" / "label2idx.json").read_text())
    for record in avss:
        without_table = {k: v for k, v in record.items() if not k.endswith("_classes")}
        from_masks, _ = clip_classes(without_table, avss_palette())
        assert from_masks == {index[name] for name in record["sounding_classes"]}


def test_silence_front_end_matches_vggish_of_zeros():
    # The made silence is what the front end gives for a silent wav file.
    zeros = waveform_to_examples(np.zeros(3 * 16000))
    spec = mark_negative({"video_id": "x"}, "silence")["negative_audio"]
    assert torch.equal(negative_log_mel(spec, 3), zeros)
