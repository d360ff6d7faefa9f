"""The synthetic demo beyond S4: the layout follows the config's training set, the every-object
baseline is the evaluator's score of all objects' masks, and the tiny CATR MS3 / AVSS configs
train and are scored on their layout."""

import numpy as np
import pytest
import torch
from helpers import CONFIG_DIR, forget_dataset, unique_dataset_name

from avsegformer.config import setup_cfg
from avsegformer.data.datasets import register_avsbench
from avsegformer.data.synthetic import dataset_clip, generate
from avsegformer.engine import Trainer
from avsegformer.evaluation import metrics
from avsegformer.synthetic_demo import demo_subset
from avsegformer.synthetic_demo_baseline import (
    DATA_SEED,
    NUM_SYNTHETIC_CLASSES,
    every_object_probs,
    every_object_scores,
)
from avsegformer.synthetic_demo_report import format_report, target_checks

SIZE = 64
FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
CATR_CONFIGS = {s: CONFIG_DIR / "synthetic" / f"catr_tiny_{s}.yaml" for s in ("ms3", "avss")}


def _generate(root, seed=DATA_SEED):
    generate(
        str(root),
        split_sizes={"train": 2, "val": 0, "test": 3},
        num_classes=NUM_SYNTHETIC_CLASSES,
        seed=seed,
        size=SIZE,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """All three layouts, 2 train and 3 test clips each, 64x64, written as the demo writes."""
    return _generate(tmp_path_factory.mktemp("synthetic_avsbench"))


@pytest.fixture
def registered(request):
    """``register(root, subset, split)`` -> a fresh dataset name, forgotten afterwards."""
    names = []

    def register(root, subset, split):
        names.append(unique_dataset_name(subset))
        register_avsbench(names[-1], subset, str(root / FOLDERS[subset]), split)
        return names[-1]

    yield register
    for name in names:
        forget_dataset(name)


def _eval_cfg(subset):
    config = CATR_CONFIGS.get(subset, CONFIG_DIR / "synthetic" / "catr_tiny_s4.yaml")
    return setup_cfg(config, ["TEST.AVS.EVAL_SIZE", f"({SIZE}, {SIZE})"])


def test_the_training_set_picks_the_layout():
    assert demo_subset(_eval_cfg("s4")) == "s4"
    assert demo_subset(setup_cfg(CATR_CONFIGS["ms3"])) == "ms3"
    assert demo_subset(setup_cfg(CATR_CONFIGS["avss"])) == "avss"
    with pytest.raises(ValueError, match="avsbench_s4_train"):
        demo_subset(setup_cfg(CONFIG_DIR / "s4" / "catr_pvtv2_b5.yaml"))


@pytest.mark.parametrize("subset", ["s4", "ms3"])
def test_binary_baseline_is_the_iou_of_all_objects_against_the_sounding_ones(
    synthetic_root, registered, subset
):
    scores = every_object_scores(_eval_cfg(subset), registered(synthetic_root, subset, "test"))
    ious = []
    for index in range(3):
        clip = dataset_clip(
            DATA_SEED, subset, "test", index, num_classes=NUM_SYNTHETIC_CLASSES, size=SIZE
        )
        everything = torch.from_numpy(clip.object_masks.any(axis=1)).float()
        ious += metrics.binary_frame_iou(everything, torch.from_numpy(clip.sounding_mask)).tolist()
    assert scores["mIoU"] == pytest.approx(np.mean(ious), abs=1e-6)
    # Every clip has a silent object: predicting every object is not the answer.
    assert 0.1 < scores["mIoU"] < 0.9 and 0.0 < scores["Fscore"] < 1.0


def test_semantic_baseline_labels_every_object_with_its_class(synthetic_root, registered):
    scores = every_object_scores(_eval_cfg("avss"), registered(synthetic_root, "avss", "test"))
    occurring = set()
    for index in range(3):
        clip = dataset_clip(
            DATA_SEED, "avss", "test", index, num_classes=NUM_SYNTHETIC_CLASSES, size=SIZE
        )
        truth = clip.semantic_labels
        occurring |= set(np.unique(truth).tolist())
        labels = every_object_probs(clip, 10, 71).argmax(1)[: truth.shape[0]].numpy()
        # The sounding objects keep their class; silent objects are labelled too.
        assert np.array_equal(labels[truth > 0], truth[truth > 0])
        assert (labels[truth == 0] > 0).any()
    # Exact masks would score 1 on each occurring class and 0 on the 71 - n others.
    assert scores["mIoU_no_background"] > 0.0 and scores["mIoU"] < len(occurring) / 71
    assert 0.0 < scores["Fscore"] < len(occurring) / 71


def test_a_dataset_the_generator_did_not_write_is_refused(tmp_path, registered):
    root = _generate(tmp_path, seed=DATA_SEED + 1)
    name = registered(root, "ms3", "test")
    with pytest.raises(ValueError, match=r"gt_masks.*not the mask the synthetic generator"):
        every_object_scores(_eval_cfg("ms3"), name)


@pytest.mark.parametrize("subset", ["ms3", "avss"])
def test_tiny_catr_config_trains_and_is_scored_on_its_layout(
    synthetic_root, registered, subset, tmp_path
):
    train, test = (registered(synthetic_root, subset, s) for s in ("train", "test"))
    cfg = setup_cfg(
        CATR_CONFIGS[subset],
        [
            "MODEL.AUDIO.NAME", "TinyAudioBackbone",
            # The model at 32x32 (res5 1x1), scored at the data's 64x64: a quarter of the work.
            "MODEL.CATR.INPUT_SIZE", "(32, 32)",
            "INPUT.FRAME_SIZE", "(32, 32)",
            "TEST.AVS.EVAL_SIZE", f"({SIZE}, {SIZE})",
            "DATASETS.TRAIN", f"('{train}',)",
            "DATASETS.TEST", f"('{test}',)",
            "SOLVER.MAX_ITER", "2",
            "SOLVER.IMS_PER_BATCH", "2",
            "TEST.EVAL_PERIOD", "0",
            "DATALOADER.NUM_WORKERS", "0",
            "OUTPUT_DIR", str(tmp_path),
        ],
    )  # fmt: skip
    semantic = subset == "avss"
    assert ((10, 71) if semantic else (5, 1)) == (
        cfg.MODEL.CATR.NUM_FRAMES,
        cfg.MODEL.CATR.NUM_CLASSES,
    )
    assert cfg.MODEL.CATR.SUPERVISED_FRAMES == "annotated"
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    results = Trainer.test(cfg, trainer.model)["avs"]
    # The semantic evaluator reports the no-background figures; the binary one the F groups.
    assert ("mIoU_no_background" in results) == semantic
    assert 0.0 <= results["mIoU"] <= 1.0 and 0.0 <= results["Fscore"] <= 1.0


def test_report_checks_each_layout_against_its_targets():
    scores = {"mIoU": 0.06, "Fscore": 0.07}
    results = {
        "model": "CATR", "subset": "avss", "precision": "fp32", "seed": 1, "trained": True,
        "test": scores, "shuffled_audio": {"mIoU": 0.05, "Fscore": 0.05}, "miou_drop": 0.01,
        "every_object": {"mIoU": 0.04, "Fscore": 0.05}, "seconds": 600.0, "train_seconds": 500.0,
        "predictions": "p", "comparison_picture": "c",
    }  # fmt: skip
    report = format_report(results, quick=False)
    assert "synthetic AVSS test split" in report
    assert "  every object (no audio)    0.0400   0.0500" in report
    # MS3 / AVSS: above the every-object baseline; the S4 demo's mIoU and drop targets are S4's.
    assert "[ok] test mIoU > every object's 0.0400" in report
    assert "0.7" not in report and "drop >=" not in report and "wall time <" not in report
    scores["mIoU"] = 0.03
    assert "[MISSED] test mIoU > every object's" in format_report(results, quick=False)
    s4 = {**results, "subset": "s4", "test": {"mIoU": 0.75, "Fscore": 0.8}, "miou_drop": 0.5}
    assert [ok for _, ok in target_checks(s4)] == [True, True, True, True]
    slow = target_checks({**s4, "seconds": 16 * 60.0})
    assert [name for name, ok in slow if not ok] == ["wall time < 15 min"]
