"""The dataset validator (avsegformer.data.validation, tools/validate_dataset.py) reports every
kind of planted corruption, one line each."""

import csv
import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from avsbench_tree import (
    avss_class_names,
    make_avss_tree,
    make_ms3_tree,
    make_s4_tree,
    write_binary_mask,
    write_frame,
    write_wav,
)
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from avsegformer.data.datasets import register_avsbench
from avsegformer.data.validation import validate_dataset

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "validate_dataset.py"


@pytest.fixture
def register():
    names = []

    def make(subset, root, split):
        name = f"test_validate_{subset}_{split}_{uuid.uuid4().hex[:6]}"
        register_avsbench(name, subset, os.fspath(root), split)
        names.append(name)
        return name

    yield make
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _matching(problems, *fragments):
    return [line for line in problems if all(f in line for f in fragments)]


def test_clean_trees_have_no_problem(tmp_path, register):
    names = [
        register("s4", make_s4_tree(tmp_path / "Single-source")["root"], "train"),
        register("ms3", make_ms3_tree(tmp_path / "Multi-sources")["root"], "val"),
        register("avss", make_avss_tree(tmp_path / "AVSS")["root"], "train"),
    ]
    for name in names:
        problems, clips = validate_dataset(name)
        assert problems == [] and clips > 0


def test_binary_subset_corruptions(tmp_path, register):
    root = make_s4_tree(tmp_path / "Single-source")["root"]
    data = root / "s4_data"
    category = "female_singing"  # of valA, see avsbench_tree.make_s4_tree
    frames = data / "visual_frames" / "val" / category / "valA"
    masks = data / "gt_masks" / "val" / category / "valA"
    planted = {
        "missing frame": (frames / "valA_3.png").unlink,
        "unreadable frame": lambda: (frames / "valA_4.png").write_bytes(b"\x89PNG broken"),
        "missing mask": (masks / "valA_2.png").unlink,
        "values outside {0, 255}": lambda: Image.fromarray(np.full((24, 24), 77, np.uint8)).save(
            masks / "valA_5.png"
        ),
        "differs from its frame": lambda: write_binary_mask(masks / "valA_1.png", size=(12, 24)),
        "wrong clip length": lambda: write_frame(frames / "valA_6.png"),
    }
    for plant in planted.values():
        plant()
    files = {
        "missing frame": "valA_3.png",
        "unreadable frame": "valA_4.png",
        "missing mask": "valA_2.png",
        "values outside {0, 255}": "valA_5.png",
        "differs from its frame": "valA_1.png",
        "wrong clip length": "valA_6.png",
    }
    # audio of the first test clip: missing; of the second: not a tensor pickle
    (data / "audio_log_mel" / "test" / "male_speech" / "testA.pkl").unlink()
    with open(data / "audio_log_mel" / "test" / "male_speech" / "testB.pkl", "wb") as f:
        pickle.dump({"weights": [1, 2]}, f)

    problems, clips = validate_dataset(register("s4", root, "val"))
    assert clips == 1
    for kind, file_name in files.items():
        assert len(_matching(problems, kind, file_name)) == 1, (kind, problems)
    assert len(problems) == len(files), problems

    problems, _ = validate_dataset(register("s4", root, "test"))
    assert len(_matching(problems, "testA.pkl", "missing audio")) == 1
    assert len(_matching(problems, "testB.pkl", "expected a pickled tensor")) == 1
    assert len(problems) == 2, problems


def test_csv_row_pointing_nowhere_and_short_pkl(tmp_path, register):
    root = make_ms3_tree(tmp_path / "Multi-sources", videos={"train": ["good"]})["root"]
    with open(root / "ms3_meta_data.csv", "a", newline="") as f:
        csv.writer(f).writerow(["ghost", "train"])
    with open(root / "ms3_data" / "audio_log_mel" / "train" / "good.pkl", "wb") as f:
        pickle.dump(torch.zeros(3, 1, 96, 64), f)
    problems, clips = validate_dataset(register("ms3", root, "train"))
    assert clips == 2
    assert len(_matching(problems, "ghost", "points nowhere", "ms3_meta_data.csv")) == 1
    assert len(_matching(problems, "good.pkl", "3 log-mel examples for 5 frames")) == 1
    assert len(problems) == 2, problems


def test_avss_corruptions(tmp_path, register):
    root = make_avss_tree(tmp_path / "AVSS", clips={"test": [("clipA", "v1m"), ("clipB", "v2")]})[
        "root"
    ]
    clip_a = root / "v1m" / "clipA"
    rgb = np.array(Image.open(clip_a / "labels_rgb" / "1.png").convert("RGB"))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(clip_a / "labels_rgb" / "1.png")
    write_wav(clip_a / "audio.wav", seconds=2.0)  # 2 examples for 5 frames
    clip_b = root / "v2" / "clipB"
    (clip_b / "frames" / "9.jpg").unlink()  # a v2 clip with 9 frames
    (clip_b / "audio.wav").write_bytes(b"RIFF....WAVEfmt garbage")

    name = register("avss", root, "test")
    problems, clips = validate_dataset(name)
    assert clips == 2
    assert (
        len(_matching(problems, "1.png", "colours outside the 71-colour palette", "(1, 2, 3) x1"))
        == 1
    )
    assert len(_matching(problems, "clipA", "audio.wav", "2 log-mel examples for 5 frames")) == 1
    assert len(_matching(problems, "9.jpg", "missing frame")) == 1
    assert len(_matching(problems, "clipB", "audio.wav", "cannot read audio")) == 1
    assert len(problems) == 4, problems

    names = avss_class_names()[:70]
    (root / "label2idx.json").write_text(json.dumps({n: i for i, n in enumerate(names)}))
    other = register("avss", root, "test")
    problems, _ = validate_dataset(other)
    assert len(_matching(problems, "label2idx.json", "71")) == 1


def test_unknown_name_and_cli_exit_status(tmp_path):
    assert validate_dataset("no_such_dataset_name") == (
        ["no_such_dataset_name: not a registered dataset"],
        0,
    )
    root = tmp_path / "d2"
    make_ms3_tree(root / "AVSBench" / "Multi-sources", videos={"val": ["ok"], "test": ["bad"]})
    (
        root / "AVSBench" / "Multi-sources" / "ms3_data" / "gt_masks" / "test" / "bad" / "bad_3.png"
    ).unlink()
    env = dict(os.environ, DETECTRON2_DATASETS=os.fspath(root), OMP_NUM_THREADS="1")
    env.pop("AVSBENCH_ROOT", None)
    result = subprocess.run(
        [sys.executable, os.fspath(TOOL), "avsbench_ms3_val", "avsbench_ms3_test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "avsbench_ms3_test" in lines[0] and "bad_3.png" in lines[0]
    assert "avsbench_ms3_val: 1 clips checked, 0 problems" in result.stderr
