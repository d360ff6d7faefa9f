"""The evaluation defaults that decide the published numbers, pinned.

AVSegFormer's S4/MS3 F-score takes the max over thresholds per test batch of 2 videos (10
frames), so the project's default F-score group is 2 clips (the official ``test.sh`` uses 4,
COMBO 1; both are reported beside it). The official AVSS code and AVSegFormer pad 5-frame v1
clips to 10 frames and score the padded frames as perfect background; COMBO scores real frames
only. AVSegFormer scores S4/MS3 at 512x512 (ground truth nearest-upsampled) and AVSS at 224x224;
MoDAT, whose loaders do not up-sample, scores every task at 224x224.
Every shipped AVSegFormer and MoDAT task config must keep these, and the evaluator must apply
them, built by the trainer from a config or constructed directly with its own defaults. The COMBO
task configs keep COMBO's protocol instead: 224x224, F-score per clip, real AVSS frames only. The
CATR S4 config keeps its released test script's: 224x224, F-score per clip (a batch of one clip).
"""

import json
import os

import numpy as np
import pytest
import torch
from helpers import CONFIG_DIR, load_config, temporary_dataset
from PIL import Image

from avsegformer.engine.trainer import Trainer
from avsegformer.evaluation import AVSBenchEvaluator

TASK_CONFIGS = sorted(
    os.path.relpath(os.path.join(folder, name), CONFIG_DIR)
    for subset in ("s4", "ms3", "avss")
    for folder, _, names in os.walk(CONFIG_DIR / subset)
    for name in names
    if name.endswith(".yaml")
)
COMBO_CONFIGS = [c for c in TASK_CONFIGS if "combo" in os.path.basename(c)]
CATR_CONFIGS = [c for c in TASK_CONFIGS if "catr" in os.path.basename(c)]
NON_COMBO_CONFIGS = [c for c in TASK_CONFIGS if c not in COMBO_CONFIGS + CATR_CONFIGS]
BINARY_CONFIGS = [c for c in NON_COMBO_CONFIGS if not c.startswith("avss")]
AVSS_CONFIGS = [c for c in NON_COMBO_CONFIGS if c.startswith("avss")]


def test_every_subset_has_its_shipped_configs():
    assert len(BINARY_CONFIGS) >= 4 and len(AVSS_CONFIGS) >= 2, TASK_CONFIGS
    assert len(COMBO_CONFIGS) == 6, TASK_CONFIGS


def test_defaults_of_the_project_config():
    cfg = load_config("Base-AVSegFormer.yaml")
    assert cfg.TEST.AVS.FSCORE_GROUP_SIZE == 2
    assert cfg.TEST.AVS.AVSS_PADDED_FRAMES == "official"


@pytest.mark.parametrize("config", COMBO_CONFIGS)
def test_combo_configs_keep_combos_protocol(config):
    cfg = load_config(config)
    assert cfg.TEST.AVS.FSCORE_GROUP_SIZE == 1
    assert cfg.TEST.AVS.AVSS_PADDED_FRAMES == "real"
    assert tuple(cfg.TEST.AVS.EVAL_SIZE) == (224, 224) == tuple(cfg.INPUT.FRAME_SIZE)


@pytest.mark.parametrize("config", CATR_CONFIGS)
def test_catr_configs_keep_the_released_test_protocol(config):
    cfg = load_config(config)
    assert tuple(cfg.TEST.AVS.EVAL_SIZE) == (224, 224)
    if config.startswith("avss"):
        # The F-score grouping only applies to S4/MS3; AVSS is scored like the other AVSS configs.
        assert cfg.TEST.AVS.AVSS_PADDED_FRAMES == "official"
    else:
        assert cfg.TEST.AVS.FSCORE_GROUP_SIZE == 1


@pytest.mark.parametrize("config", NON_COMBO_CONFIGS)
def test_task_configs_keep_the_protocol(config):
    cfg = load_config(config)
    assert cfg.TEST.AVS.FSCORE_GROUP_SIZE == 2
    assert cfg.TEST.AVS.AVSS_PADDED_FRAMES == "official"
    at_224 = config.startswith("avss") or "modat" in config
    expected_size = (224, 224) if at_224 else (512, 512)
    assert tuple(cfg.TEST.AVS.EVAL_SIZE) == expected_size


def _binary_gt(path, mask):
    Image.fromarray((np.asarray(mask) * 255).astype(np.uint8), mode="L").save(path)
    return os.fspath(path)


def _evaluators(config, name, tmp_path):
    """(output folder, evaluator): the trainer's from ``config``, and one with the constructor's
    own defaults."""
    from_config = tmp_path / "from_config"
    yield from_config, Trainer.build_evaluator(load_config(config), name, os.fspath(from_config))
    plain = tmp_path / "plain"
    yield plain, AVSBenchEvaluator(name, output_dir=os.fspath(plain), distributed=False)


@pytest.mark.parametrize("config", BINARY_CONFIGS)
def test_trainer_evaluator_groups_f_score_by_two_clips(tmp_path, config):
    # Clip A is exact at a high threshold (F = 1 alone), clip B at a low one; A and B in one
    # group score 23/33 (see test_eval_evaluator). Clips A, B, A, A: groups of 2 give
    # (23/33 + 1) / 2, groups of 1 give 1, one group of 4 gives yet another value.
    gt_a = _binary_gt(tmp_path / "a.png", [[1, 0], [0, 0]])
    gt_b = _binary_gt(tmp_path / "b.png", [[1, 1], [0, 0]])
    probs_a = torch.tensor([[[[0.8, 0.3], [0.3, 0.0]]]])
    probs_b = torch.tensor([[[[0.2, 0.2], [0.1, 0.0]]]])
    clips = [
        ("a0", gt_a, probs_a),
        ("b", gt_b, probs_b),
        ("a1", gt_a, probs_a),
        ("a2", gt_a, probs_a),
    ]
    records = [{"video_id": v, "sem_seg_file_names": [gt]} for v, gt, _ in clips]
    with temporary_dataset(records, task="binary", stuff_classes=["background", "object"]) as name:
        _check_binary(config, name, records, clips, tmp_path)


def _check_binary(config, name, records, clips, tmp_path):
    for out, evaluator in _evaluators(config, name, tmp_path):
        evaluator.reset()
        evaluator.process(records, [{"sem_seg": probs} for _, _, probs in clips])
        avs = evaluator.evaluate()["avs"]
        assert avs["Fscore"] == pytest.approx((23 / 33 + 1) / 2, rel=1e-6)
        assert avs["Fscore_group1"] == pytest.approx(1.0, rel=1e-6)
        assert abs(avs["Fscore_group4"] - avs["Fscore"]) > 1e-3
        saved = json.loads((out / "avs_results.json").read_text())
        assert saved["fscore_group_size"] == 2


@pytest.mark.parametrize("config", AVSS_CONFIGS)
def test_trainer_evaluator_scores_padded_frames_as_background(tmp_path, config):
    # One v1 clip padded to 10 frames, one real annotated 2x2 frame of class 1 predicted
    # exactly. Real frames only: class 0 never occurs (IoU 0), class 1 has IoU 1 -> mIoU 0.5.
    # Official: 9 padded frames add a perfect background each -> class 0 IoU 1 -> mIoU 1.
    palette = [(0, 0, 0), (128, 0, 0)]
    gt = tmp_path / "0.png"
    Image.fromarray(np.full((2, 2, 3), palette[1], np.uint8)).save(gt)
    record = {
        "video_id": "v1clip",
        "sem_seg_file_names": [os.fspath(gt)] + [None] * 9,
        "frame_valid": [True] + [False] * 9,
        "mask_format": "palette",
    }
    probs = torch.zeros(10, 2, 2, 2)
    probs[0, 1] = 1.0
    probs[1:, 0] = 0.5
    probs[1:, 1] = 0.5
    metadata = {"stuff_classes": ["background", "thing"], "stuff_colors": palette}
    with temporary_dataset([record], task="semantic", num_frames=10, **metadata) as name:
        _check_semantic(config, name, record, probs, tmp_path)


def _check_semantic(config, name, record, probs, tmp_path):
    for out, evaluator in _evaluators(config, name, tmp_path):
        evaluator.reset()
        evaluator.process([record], [{"sem_seg": probs}])
        avs = evaluator.evaluate()["avs"]
        assert avs["mIoU"] == pytest.approx(1.0, abs=1e-9)
        saved = json.loads((out / "avs_results.json").read_text())
        assert saved["padded_frames"] == "official" and saved["num_padded_frames"] == 9
        assert saved["real_frames_only"]["mIoU"] == pytest.approx(0.5, abs=1e-9)
