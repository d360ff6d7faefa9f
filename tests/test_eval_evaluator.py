"""AVSBenchEvaluator: ground-truth reading, protocol quirks, process/batch independence, outputs."""

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from PIL import Image

from avsegformer.evaluation import AVSBenchEvaluator, metrics

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]


@pytest.fixture
def register(new_dataset_name):
    """Register a throw-away dataset (records + metadata); removed after the test."""

    def _register(records, **metadata):
        name = new_dataset_name("eval")
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(**metadata)
        return name

    return _register


def _write_binary_gt(path, mask):
    Image.fromarray((np.asarray(mask) * 255).astype(np.uint8), mode="L").save(path)
    return str(path)


def _write_frame(path, size=(4, 4)):
    Image.fromarray(np.full((*size, 3), 90, dtype=np.uint8), mode="RGB").save(path)
    return str(path)


# ---------------------------------------------------------------------------------------------
# binary (S4/MS3)
# ---------------------------------------------------------------------------------------------
def test_binary_hand_computed_case(tmp_path, register):
    # Clip A is exact at a high threshold, clip B at a low one (see test_eval_metrics).
    gt_a = _write_binary_gt(tmp_path / "a.png", [[1, 0], [0, 0]])
    gt_b = _write_binary_gt(tmp_path / "b.png", [[1, 1], [0, 0]])
    records = [
        {"video_id": "a", "sem_seg_file_names": [gt_a]},
        {"video_id": "b", "sem_seg_file_names": [gt_b]},
    ]
    name = register(records, task="binary", stuff_classes=["object"])
    outputs = [
        {"sem_seg": torch.tensor([[[[0.8, 0.3], [0.3, 0.0]]]])},
        {"sem_seg": torch.tensor([[[[0.2, 0.2], [0.1, 0.0]]]])},
    ]
    evaluator = AVSBenchEvaluator(
        name, output_dir=str(tmp_path / "out"), distributed=False, fscore_group_size=2
    )
    evaluator.reset()
    evaluator.process(records, outputs)
    avs = evaluator.evaluate()["avs"]
    # J: clip A exact (1), clip B predicts nothing over 0.5 (0).
    assert avs["mIoU"] == pytest.approx(0.5, abs=1e-6)
    assert avs["Fscore"] == pytest.approx(23 / 33, rel=1e-6)
    assert avs["Fscore_group1"] == pytest.approx(1.0, rel=1e-6)
    assert avs["Fscore_group2"] == avs["Fscore"]
    saved = json.loads((tmp_path / "out" / "avs_results.json").read_text())
    assert saved["results"]["mIoU"] == avs["mIoU"]
    assert saved["num_frames"] == 2 and saved["num_clips"] == 2


def _binary_dataset(tmp_path, num_clips=6, frames=3):
    """Clips of 4x4 GT frames; clip 2 is all-empty, frame 1 of clip 4 is not annotated."""
    rng = np.random.default_rng(0)
    records, outputs = [], []
    for c in range(num_clips):
        files, gts = [], []
        for t in range(frames):
            mask = (rng.random((4, 4)) > 0.6).astype(np.uint8)
            if c == 2 or (c == 3 and t == 0):
                mask[:] = 0
            gts.append(mask)
            files.append(_write_binary_gt(tmp_path / f"gt_{c}_{t}.png", mask))
        if c == 4:
            files[1] = None
        frame_files = [_write_frame(tmp_path / f"frame_{c}_{t}.png") for t in range(frames)]
        records.append(
            {
                "video_id": f"clip{c}",
                "file_names": frame_files,
                "sem_seg_file_names": files,
                "gts": gts,
            }
        )
        # 8x8 predictions: the GT is read at 4x4 and upsampled (nearest) to the prediction size.
        noisy = np.repeat(np.repeat(np.stack(gts), 2, 1), 2, 2) * 0.6 + rng.random((frames, 8, 8))
        outputs.append({"sem_seg": torch.from_numpy(noisy / 1.6).float().unsqueeze(1)})
    return records, outputs


def _expected_binary(records, outputs, group_size):
    ious, curves = [], []
    for record, output in zip(records, outputs):
        frames = [t for t, f in enumerate(record["sem_seg_file_names"]) if f]
        gt = torch.from_numpy(
            np.repeat(np.repeat(np.stack([record["gts"][t] for t in frames]), 2, 1), 2, 2)
        )
        probs = output["sem_seg"][frames, 0]
        ious.extend(metrics.binary_frame_iou(probs, gt).tolist())
        curves.append(metrics.binary_frame_fscore_curves(probs, gt)[0])
    return metrics.binary_miou(ious), metrics.grouped_fscore(curves, group_size), len(ious)


def _run(evaluator, records, outputs, batch_size):
    evaluator.reset()
    for start in range(0, len(records), batch_size):
        evaluator.process(records[start : start + batch_size], outputs[start : start + batch_size])


def test_binary_reads_resizes_and_skips_unannotated_frames(tmp_path, register):
    records, outputs = _binary_dataset(tmp_path)
    name = register(records, task="binary", stuff_classes=["object"])
    evaluator = AVSBenchEvaluator(
        name, output_dir=str(tmp_path / "out"), distributed=False, fscore_group_size=4
    )
    _run(evaluator, records, outputs, batch_size=1)
    avs = evaluator.evaluate()["avs"]
    miou, fscore, num_frames = _expected_binary(records, outputs, group_size=4)
    assert num_frames == 6 * 3 - 1
    assert avs["mIoU"] == pytest.approx(miou, abs=1e-12)
    assert avs["Fscore"] == pytest.approx(fscore, abs=1e-12)
    details = json.loads((tmp_path / "out" / "avs_results.json").read_text())
    assert details["num_frames"] == num_frames
    assert details["num_empty_gt_frames"] == 3 + 1


def test_binary_same_numbers_for_any_batch_size_order_and_process_count(
    tmp_path, register, monkeypatch
):
    records, outputs = _binary_dataset(tmp_path, num_clips=7)
    name = register(records, task="binary", stuff_classes=["object"])

    def make():
        return AVSBenchEvaluator(name, distributed=True, fscore_group_size=2)

    single = make()
    _run(single, records, outputs, batch_size=1)
    reference = single.evaluate()["avs"]

    batched = make()
    _run(batched, records, outputs, batch_size=3)
    assert batched.evaluate()["avs"] == reference

    # Arrival order does not matter: groups follow the dataset order.
    shuffled = make()
    _run(shuffled, records[::-1], outputs[::-1], batch_size=2)
    assert shuffled.evaluate()["avs"] == reference

    # Two simulated processes, each with a contiguous shard, gathered on the main one.
    rank0, rank1 = make(), make()
    _run(rank0, records[:4], outputs[:4], batch_size=2)
    _run(rank1, records[4:], outputs[4:], batch_size=1)
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [rank0._clips, rank1._clips])
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    assert rank0.evaluate()["avs"] == reference
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [])
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert rank1.evaluate() is None

    # The group size is the one thing that changes F.
    other_group = AVSBenchEvaluator(name, distributed=False, fscore_group_size=1)
    _run(other_group, records, outputs, batch_size=1)
    avs = other_group.evaluate()["avs"]
    assert avs["mIoU"] == reference["mIoU"]
    assert avs["Fscore"] == reference["Fscore_group1"]


def test_binary_writes_prediction_pngs_and_overlays(tmp_path, register):
    records, outputs = _binary_dataset(tmp_path, num_clips=2, frames=2)
    name = register(records, task="binary", stuff_classes=["object"])
    out = tmp_path / "out"
    evaluator = AVSBenchEvaluator(
        name, output_dir=str(out), distributed=False, save_predictions=True
    )
    _run(evaluator, records, outputs, batch_size=2)
    mask_path = out / "predictions" / "clip1" / "frame_1_1.png"
    mask = np.asarray(Image.open(mask_path))
    assert mask.shape == (8, 8)
    assert set(np.unique(mask)) <= {0, 255}
    expected = (outputs[1]["sem_seg"][1, 0] > 0.5).numpy()
    assert np.array_equal(mask == 255, expected)
    overlay = Image.open(out / "predictions" / "clip1" / "frame_1_1_overlay.jpg")
    assert overlay.size == (8, 8) and overlay.mode == "RGB"


def test_binary_rejects_wrong_channel_count_and_logits(tmp_path, register):
    records, outputs = _binary_dataset(tmp_path, num_clips=1)
    name = register(records, task="binary", stuff_classes=["object"])
    evaluator = AVSBenchEvaluator(name, distributed=False)
    bad = [{"sem_seg": outputs[0]["sem_seg"].repeat(1, 2, 1, 1)}]
    with pytest.raises(ValueError, match="K = 1"):
        evaluator.process(records, bad)
    logits = [{"sem_seg": outputs[0]["sem_seg"] * 4 - 2}]
    with pytest.raises(ValueError, match="probabilities"):
        evaluator.process(records, logits)


def test_prediction_must_have_the_requested_output_size(tmp_path, register):
    records, outputs = _binary_dataset(tmp_path, num_clips=1)
    name = register(records, task="binary", stuff_classes=["object"])
    evaluator = AVSBenchEvaluator(name, distributed=False)
    clip = {**records[0], "height": 8, "width": 8}
    evaluator.process([clip], outputs)  # 8x8: fine
    with pytest.raises(ValueError, match=r"prediction is \(8, 8\).*\(16, 16\)"):
        evaluator.process([{**clip, "height": 16, "width": 16}], outputs)


def test_configurable_construction_reads_the_test_keys(tmp_path, register):
    from detectron2.config import get_cfg

    from avsegformer import add_avsegformer_config

    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.TEST.AVS.FSCORE_GROUP_SIZE = 3
    cfg.TEST.AVS.AVSS_PADDED_FRAMES = "real"
    name = register([], task="binary", stuff_classes=["object"])
    evaluator = AVSBenchEvaluator(cfg, name, output_dir=str(tmp_path))
    assert evaluator._fscore_group_size == 3 and evaluator._padded_frames == "real"
    with pytest.raises(ValueError, match="avss_padded_frames"):
        AVSBenchEvaluator(name, avss_padded_frames="all")


# ---------------------------------------------------------------------------------------------
# semantic (AVSS)
# ---------------------------------------------------------------------------------------------
def _write_palette_gt(path, labels):
    colors = np.asarray(PALETTE, dtype=np.uint8)
    Image.fromarray(colors[np.asarray(labels)], mode="RGB").save(path)
    return str(path)


def _one_hot(labels, num_classes=5):
    labels = torch.as_tensor(labels)
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def _semantic_setup(tmp_path, register, padded_in_output):
    gt = [[[0, 0, 1], [0, 2, 2]], [[0, 0, 0], [0, 0, 0]]]
    pred = [[[0, 1, 1], [0, 2, 0]], [[3, 0, 0], [0, 0, 0]]]
    files = [_write_palette_gt(tmp_path / f"{i}.png", gt[i]) for i in range(2)]
    if padded_in_output:
        # The mapper padded the clip to 4 frames; the padded frames' scores are ignored.
        record = {
            "video_id": "v1",
            "sem_seg_file_names": files + [None, None],
            "frame_valid": [True, True, False, False],
        }
        probs = _one_hot(pred + [[[4, 4, 4], [4, 4, 4]]] * 2)
    else:
        record = {"video_id": "v1", "sem_seg_file_names": files}
        probs = _one_hot(pred)
    name = register(
        [record],
        task="semantic",
        stuff_classes=[f"c{i}" for i in range(5)],
        stuff_colors=PALETTE,
        num_frames=4,
    )
    return name, record, {"sem_seg": probs}


@pytest.mark.parametrize("padded_in_output", [True, False])
def test_semantic_padded_frames_official_and_real(tmp_path, register, padded_in_output):
    name, record, output = _semantic_setup(tmp_path, register, padded_in_output)
    results = {}
    for mode in ("official", "real"):
        evaluator = AVSBenchEvaluator(
            name, output_dir=str(tmp_path / mode), distributed=False, avss_padded_frames=mode
        )
        evaluator.reset()
        evaluator.process([record], [output])
        results[mode] = evaluator.evaluate()["avs"]
    # Real frames: class 0 (0.5 + 5/6) / 2, classes 1 and 2 0.5, class 3 a stray 0, class 4 absent.
    real = [(0.5 + 5 / 6) / 2, 0.5, 0.5, 0.0, 0.0]
    assert results["real"]["mIoU"] == pytest.approx(sum(real) / 5, abs=1e-6)
    assert results["real"]["mIoU_no_background"] == pytest.approx(sum(real[1:]) / 4, abs=1e-6)
    assert results["real"]["mIoU_noBg_official"] == pytest.approx(sum(real[:-1]) / 4, abs=1e-6)
    # Official: the 2 padded frames are perfect background frames (IoU_0 = F_0 = 1, n_0 += 2).
    official = [(0.5 + 5 / 6 + 2) / 4, 0.5, 0.5, 0.0, 0.0]
    assert results["official"]["mIoU"] == pytest.approx(sum(official) / 5, abs=1e-6)
    f0_real = (2 / 3 + 1.3 * (5 / 6) / (0.3 + 5 / 6)) / 2
    f0_official = (2 * f0_real + 2) / 4
    f_rest = [1.3 * 0.5 / 1.15, 1.3 * 0.5 / 0.8, 0.0, 0.0]
    assert results["official"]["Fscore"] == pytest.approx((f0_official + sum(f_rest)) / 5, 1e-6)
    assert results["real"]["Fscore"] == pytest.approx((f0_real + sum(f_rest)) / 5, 1e-6)
    saved = json.loads((tmp_path / "official" / "avs_results.json").read_text())
    assert saved["num_padded_frames"] == 2
    assert saved["per_class_iou"][0] == pytest.approx(official[0], abs=1e-6)


def test_semantic_unknown_colour_names_the_file(tmp_path, register):
    name, record, output = _semantic_setup(tmp_path, register, padded_in_output=False)
    image = np.asarray(Image.open(record["sem_seg_file_names"][1])).copy()
    image[0, 0] = (1, 2, 3)
    Image.fromarray(image).save(record["sem_seg_file_names"][1])
    evaluator = AVSBenchEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match=r"1\.png.*outside the 5-colour palette.*\(1, 2, 3\)"):
        evaluator.process([record], [output])


def test_semantic_gt_is_resized_nearest_to_the_prediction(tmp_path, register):
    name, record, _ = _semantic_setup(tmp_path, register, padded_in_output=False)
    gt = torch.tensor([[[0, 0, 1], [0, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    upsampled = gt.repeat_interleave(2, 1).repeat_interleave(2, 2)
    output = {"sem_seg": _one_hot(upsampled)}  # an exact prediction at twice the GT size
    evaluator = AVSBenchEvaluator(
        name, output_dir=str(tmp_path / "out"), distributed=False, save_predictions=True
    )
    evaluator.process([record], [output])
    avs = evaluator.evaluate()["avs"]
    # Classes 0, 1, 2 perfect (IoU 1 wherever they occur); 3 and 4 never occur.
    assert avs["mIoU"] == pytest.approx(3 / 5, abs=1e-6)
    assert avs["mIoU_no_background"] == pytest.approx(2 / 4, abs=1e-6)
    saved = np.asarray(Image.open(tmp_path / "out" / "predictions" / "v1" / "0.png"))
    assert saved.shape == (4, 6, 3)
    assert tuple(saved[0, 5]) == PALETTE[1] and tuple(saved[3, 3]) == PALETTE[2]
