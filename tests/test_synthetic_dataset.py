"""The synthetic AVSBench generator (avsegformer.data.synthetic): AVSBench layouts, determinism,
and audio necessity."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avsegformer.data.audio import load_pickled_tensor, waveform_to_examples
from avsegformer.data.datasets import (
    load_avsbench_avss,
    load_avsbench_ms3,
    load_avsbench_s4,
    read_avs_mask,
    read_avss_classes,
)
from avsegformer.data.synthetic import (
    CLASS_LOOKS,
    SceneObject,
    dataset_clip,
    generate,
    mix_audio,
    place_objects,
    render_frames,
)
from avsegformer.evaluation import metrics

SIZES = {"train": 3, "val": 1, "test": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(str(root), split_sizes=SIZES, num_classes=5, seed=7, size=96, progress=False)
    return root


def _content(path: Path) -> bytes:
    if path.suffix == ".pkl":
        # torch's pickled storages carry a random serialization id: compare the values.
        return load_pickled_tensor(str(path)).numpy().tobytes()
    return path.read_bytes()


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(_content(p)).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_s4_layout_reads_back(dataset):
    root = str(dataset / "Single-source")
    for split, count in SIZES.items():
        records = load_avsbench_s4(root, split)
        assert len(records) == count
        for index, record in enumerate(records):
            assert record["height"] == record["width"] == 96
            assert all(os.path.isfile(f) for f in record["file_names"])
            # AVSBench quirk: only the first mask of a train clip exists.
            masks = record["sem_seg_file_names"]
            present = [os.path.isfile(m.replace("_1.png", f"_{k}.png")) for k in range(1, 6)
                       for m in masks[:1]]  # fmt: skip
            assert present == ([True] + [split != "train"] * 4)
            # The mask is exactly the sounding object; the category is its class.
            clip = dataset_clip(7, "s4", split, index, num_classes=5, size=96)
            assert record["category"] == CLASS_LOOKS[clip.sounding_classes[0]].name
            stored = read_avs_mask(masks[0], "binary")
            assert np.array_equal(stored.astype(bool), clip.sounding_mask[0])
            assert len(clip.objects) >= 2  # at least one silent distractor
            raw = np.asarray(Image.open(masks[0]))
            assert set(np.unique(raw)) <= {0, 255}
            log_mel = load_pickled_tensor(record["audio_file_name"])
            assert log_mel.dtype == torch.float32 and log_mel.shape == (5, 1, 96, 64)
            samples, rate = soundfile.read(record["audio_wav_file_name"], dtype="int16")
            assert rate == 16000 and samples.shape == (5 * 16000,)
            assert soundfile.info(record["audio_wav_file_name"]).subtype == "PCM_16"
            # The pkl is the front end applied to the wav's samples.
            expected = waveform_to_examples(samples / 32768.0, rate)
            assert torch.equal(log_mel[:, 0], expected)


def test_ms3_layout_reads_back(dataset):
    root = dataset / "Multi-sources"
    header = (root / "ms3_meta_data.csv").read_text().splitlines()[0]
    assert header.split(",")[1] == "split"
    records = load_avsbench_ms3(str(root), "train")
    assert len(records) == SIZES["train"]
    for record in records:
        name = record["video_id"]
        expected_frame = root / "ms3_data" / "visual_frames" / name / f"{name}.mp4_1.png"
        assert record["file_names"][0] == str(expected_frame) and expected_frame.is_file()
        # Every MS3 frame is annotated, train included.
        assert all(os.path.isfile(m) for m in record["sem_seg_file_names"])
        assert load_pickled_tensor(record["audio_file_name"]).shape == (5, 1, 96, 64)


def test_avss_layout_reads_back(dataset):
    root = dataset / "AVSS"
    classes = read_avss_classes(str(root / "label2idx.json"))
    assert len(classes) == 71 and classes[0] == "background"
    assert classes[1 : 1 + 5] == [look.name for look in CLASS_LOOKS[:5]]
    test = load_avsbench_avss(str(root), "test")
    assert [r["avss_label"] for r in test] == ["v1s", "v1m", "v2"]
    for record in test:
        real = sum(record["frame_valid"])
        assert real == (10 if record["avss_label"] == "v2" else 5)
        for path in record["sem_seg_file_names"][:real]:
            labels = read_avs_mask(path, "palette")
            assert labels.max() <= 5
            semantic = np.asarray(Image.open(path.replace("labels_rgb", "labels_semantic")))
            assert np.array_equal(labels, semantic)
        samples, rate = soundfile.read(record["audio_file_name"], dtype="int16")
        assert rate == 16000 and samples.shape == (real * 16000,)
    train = load_avsbench_avss(str(root), "train")
    v1s = next(r for r in train if r["avss_label"] == "v1s")
    labels_dir = Path(v1s["file_names"][0]).parent.parent / "labels_rgb"
    assert sorted(p.name for p in labels_dir.iterdir()) == ["0.png"]  # first frame only


def test_generation_is_deterministic_with_the_seed(tmp_path):
    sizes = {"train": 1, "val": 1, "test": 1}
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(
            str(tmp_path / folder), split_sizes=sizes, num_classes=4, seed=seed, size=64,
            progress=False,
        )  # fmt: skip
    a, b, c = (_digest(tmp_path / f) for f in "abc")
    assert len(a) > 50 and a == b
    assert a != c
    # A clip does not depend on the size of the other splits.
    generate(
        str(tmp_path / "d"), subsets=["s4"], split_sizes={**sizes, "train": 2}, num_classes=4,
        seed=3, size=64, progress=False,
    )  # fmt: skip
    d = _digest(tmp_path / "d")
    val_files = [k for k in a if k.startswith("Single-source/s4_data/") and "/val/" in k]
    assert val_files and all(d[k] == a[k] for k in val_files)


def test_silent_objects_look_exactly_like_sounding_ones():
    rng = np.random.default_rng(0)
    objects = place_objects(rng, [0, 3, 4], [True, False, False], 96, 5)
    flipped = [
        SceneObject(o.class_index, o.radius, o.center, o.velocity, not o.sounding) for o in objects
    ]
    frames_a, masks_a = render_frames(np.random.default_rng(1), objects, 96, 5)
    frames_b, masks_b = render_frames(np.random.default_rng(1), flipped, 96, 5)
    assert np.array_equal(frames_a, frames_b) and np.array_equal(masks_a, masks_b)


def test_vision_alone_scores_at_most_about_half():
    """Predicting every object (what a model that ignores the audio can do at best without
    guessing) scores <= 0.6 of the exact masks' mIoU; every clip has a silent distractor."""
    ious_all, ious_exact = [], []
    for index in range(24):
        subset = ("s4", "ms3", "avss")[index % 3]
        clip = dataset_clip(11, subset, "test", index, num_classes=8, size=96)
        sounding = np.array([o.sounding for o in clip.objects])
        assert (~sounding).any() and sounding.any()
        gt = torch.from_numpy(clip.sounding_mask)
        # The silent objects are visible and outside the mask.
        for k in np.flatnonzero(~sounding):
            silent = clip.object_masks[:, k]
            assert silent.any() and not (silent & clip.sounding_mask).any()
        everything = torch.from_numpy(clip.object_masks.any(axis=1)).float()
        ious_all.extend(metrics.binary_frame_iou(everything, gt).tolist())
        ious_exact.extend(metrics.binary_frame_iou(gt.float(), gt).tolist())
    assert np.mean(ious_exact) == pytest.approx(1.0, abs=1e-6)
    assert np.mean(ious_all) <= 0.6 * np.mean(ious_exact)


def test_the_audio_names_the_sounding_class():
    """Leave-one-out nearest class-mean on the average log-mel spectrum recovers the class."""
    features, labels = [], []
    for index in range(20):
        rng = np.random.default_rng([5, index])
        class_index = index % 4
        waveform = mix_audio(rng, [class_index], seconds=2)
        features.append(waveform_to_examples(waveform).mean(dim=(0, 1)).numpy())
        labels.append(class_index)
    features, labels = np.stack(features), np.array(labels)
    correct = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        means = np.stack([features[keep & (labels == c)].mean(0) for c in range(4)])
        correct += int(np.argmin(((means - features[i]) ** 2).sum(1)) == labels[i])
    assert correct == len(labels)


def test_label2idx_has_71_distinct_indices(dataset):
    mapping = json.loads((dataset / "AVSS" / "label2idx.json").read_text())
    assert sorted(mapping.values()) == list(range(71))
