"""The evaluation under negative audio: numbers on hand-made predictions, invariance to the batch
size and the number of processes, the derived datasets and the summary in Trainer.test."""

import json

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from helpers import tiny_avsegformer_cfg

from avsegformer.evaluation.negative_audio import (
    NegativeAudioEvaluator,
    add_negative_audio_results,
    format_negative_audio_table,
    listening_score,
    negative_audio_summary,
    negative_dataset_name,
    predicted_foreground,
    register_negative_audio,
)


def _records(num_clips=5, frames=3):
    records = []
    for i in range(num_clips):
        records.append(
            {
                "video_id": f"clip{i}",
                "category": "dog" if i % 2 else "cat",
                "file_names": [f"f{i}_{t}.png" for t in range(frames)],
                "sem_seg_file_names": [f"m{i}_{t}.png" for t in range(frames)],
                "audio_file_name": f"a{i}.pkl",
                "frame_valid": [True] * frames,
            }
        )
    return records


def _binary_outputs(num_clips=5, frames=3, size=(4, 4)):
    """Clip i: frame t has ``(i + t) % 3`` pixels above 0.5 (and one pixel at exactly 0.5)."""
    outputs = []
    for i in range(num_clips):
        probs = torch.full((frames, 1, *size), 0.2)
        for t in range(frames):
            flat = probs[t, 0].view(-1)
            flat[: (i + t) % 3] = 0.9
            flat[-1] = 0.5  # not foreground: the threshold is strict
        outputs.append({"sem_seg": probs})
    return outputs


def _run(evaluator, records, outputs, batch_size):
    evaluator.reset()
    for start in range(0, len(records), batch_size):
        evaluator.process(records[start : start + batch_size], outputs[start : start + batch_size])


def test_binary_hand_made_predictions(tmp_path, new_dataset_name):
    records, outputs = _records(), _binary_outputs()
    name = new_dataset_name("neg")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(task="binary", stuff_classes=["object"])
    evaluator = NegativeAudioEvaluator(
        name, condition="silence", output_dir=str(tmp_path), distributed=False
    )
    _run(evaluator, records, outputs, batch_size=2)
    result = evaluator.evaluate()["negative_audio"]
    # (i + t) % 3 over 5 clips x 3 frames: every clip has exactly one frame with 0 pixels.
    assert result["num_frames"] == 15 and result["num_clips"] == 5
    assert result["fg_frame_share"] == pytest.approx(10 / 15)
    # Foreground pixels: each clip has frames with 0, 1 and 2 pixels of 16.
    assert result["fg_area"] == pytest.approx((5 * 3 / 16) / 15)
    written = json.loads((tmp_path / "negative_audio_results.json").read_text())
    assert written["condition"] == "silence" and written["fg_frame_share"] == pytest.approx(10 / 15)


def test_padded_frames_are_not_counted(new_dataset_name):
    records = _records(num_clips=1, frames=4)
    records[0]["frame_valid"] = [True, True, False, False]
    probs = torch.zeros(4, 1, 2, 2)
    probs[0, 0, 0, 0] = 1.0
    probs[2:] = 1.0  # padded frames, whatever they hold
    name = new_dataset_name("neg")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(task="binary")
    evaluator = NegativeAudioEvaluator(name, condition="noise", distributed=False)
    _run(evaluator, records, [{"sem_seg": probs}], 1)
    result = evaluator.evaluate()["negative_audio"]
    assert (result["num_frames"], result["fg_frame_share"]) == (2, 0.5)
    assert result["fg_area"] == pytest.approx(0.25 / 2)


def test_semantic_foreground_is_any_non_background_argmax(new_dataset_name):
    probs = torch.zeros(2, 3, 2, 2)
    probs[:, 0] = 0.6  # background wins everywhere ...
    probs[1, 2, 1, 1] = 0.9  # ... but one pixel of frame 1
    assert predicted_foreground(probs, binary=False).flatten(1).any(1).tolist() == [False, True]
    records = _records(num_clips=1, frames=2)
    name = new_dataset_name("neg")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        task="semantic", stuff_colors=[(0, 0, 0), (1, 1, 1), (2, 2, 2)], num_frames=2
    )
    evaluator = NegativeAudioEvaluator(name, condition="offscreen", distributed=False)
    _run(evaluator, records, [{"sem_seg": probs}], 1)
    result = evaluator.evaluate()["negative_audio"]
    assert result["fg_frame_share"] == 0.5 and result["fg_area"] == pytest.approx(0.25 / 2)


def test_same_numbers_for_any_batch_size_order_and_process_count(monkeypatch, new_dataset_name):
    records, outputs = _records(num_clips=7), _binary_outputs(num_clips=7)
    # Areas that are not exact in binary, so the summation order would show.
    for output in outputs:
        output["sem_seg"] = torch.nn.functional.interpolate(output["sem_seg"], size=(7, 7))
    name = new_dataset_name("neg")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(task="binary")

    def make():
        return NegativeAudioEvaluator(name, condition="silence", distributed=True)

    single = make()
    _run(single, records, outputs, batch_size=1)
    reference = single.evaluate()["negative_audio"]
    batched = make()
    _run(batched, records, outputs, batch_size=3)
    assert batched.evaluate()["negative_audio"] == reference
    shuffled = make()
    _run(shuffled, records[::-1], outputs[::-1], batch_size=2)
    assert shuffled.evaluate()["negative_audio"] == reference
    rank0, rank1 = make(), make()
    _run(rank0, records[:4], outputs[:4], batch_size=2)
    _run(rank1, records[4:], outputs[4:], batch_size=1)
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [rank1._clips, rank0._clips])
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    assert rank0.evaluate()["negative_audio"] == reference
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert rank1.evaluate() is None


def test_rejects_logits(new_dataset_name):
    records = _records(num_clips=1)
    name = new_dataset_name("neg")
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(task="binary")
    evaluator = NegativeAudioEvaluator(name, condition="silence", distributed=False)
    with pytest.raises(ValueError, match="probabilities"):
        evaluator.process(records, [{"sem_seg": torch.full((3, 1, 2, 2), 3.0)}])
    with pytest.raises(ValueError, match="conditions"):
        NegativeAudioEvaluator(name, condition="thunder", distributed=False)


def test_listening_score_and_summary():
    assert listening_score(0.8, [0.0, 0.0]) == pytest.approx(2 * 0.8 / 1.8)
    assert listening_score(0.8, [1.0, 1.0]) == 0.0
    assert listening_score(0.0, [0.0]) == 0.0
    assert listening_score(1.0, [0.0]) == 1.0
    # Harmonic mean of 0.6 and 1 - mean(0.2, 0.4) = 0.7.
    assert listening_score(0.6, [0.2, 0.4]) == pytest.approx(2 * 0.6 * 0.7 / 1.3)
    avs = {"mIoU": 0.6, "Fscore": 0.7}
    per_condition = {
        "silence": {"fg_frame_share": 0.2, "fg_area": 0.01},
        "noise": {"fg_frame_share": 0.4, "fg_area": 0.03},
    }
    summary = negative_audio_summary(avs, per_condition)
    assert summary == {
        "negative/silence/fg_frame_share": 0.2,
        "negative/silence/fg_area": 0.01,
        "negative/noise/fg_frame_share": 0.4,
        "negative/noise/fg_area": 0.03,
        "negative/fg_frame_share": pytest.approx(0.3),
        "listening_score": pytest.approx(listening_score(0.6, [0.2, 0.4])),
    }
    table = format_negative_audio_table({**avs, **summary})
    lines = table.splitlines()
    assert lines[1].split()[:3] == ["own", "0.6000", "0.7000"]
    assert lines[2].split() == ["silence", "0.2000", "0.0100"]
    assert lines[3].split() == ["noise", "0.4000", "0.0300"]
    assert "listening score" in lines[-1]


def test_registered_conditions_feed_what_they_say(new_dataset_name):
    records = _records(num_clips=4)
    source = new_dataset_name("neg_src")
    DatasetCatalog.register(source, lambda: records)
    MetadataCatalog.get(source).set(task="binary", num_frames=3)
    names = {
        c: register_negative_audio(source, c, seed=5) for c in ("silence", "noise", "offscreen")
    }
    try:
        for condition, name in names.items():
            assert name == negative_dataset_name(source, condition)
            assert MetadataCatalog.get(name).task == "binary"
            derived = DatasetCatalog.get(name)
            assert all(r["negative_audio"]["condition"] == condition for r in derived)
        noise = DatasetCatalog.get(names["noise"])
        assert len({r["negative_audio"]["seed"] for r in noise}) == 4
        for record in DatasetCatalog.get(names["offscreen"]):
            donor = next(r for r in records if r["video_id"] == record["audio_donor"])
            assert donor["category"] != record["category"]
            assert record["audio_file_name"] == donor["audio_file_name"]
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


class _ConstantModel(torch.nn.Module):
    """Predicts one foreground pixel in every frame, whatever the audio (it does not listen)."""

    def forward(self, batch):
        outputs = []
        for clip in batch:
            probs = torch.zeros(len(clip["file_names"]), 1, 2, 2)
            probs[:, 0, 0, 0] = 1.0
            outputs.append({"sem_seg": probs})
        return outputs


def test_results_gain_the_negative_keys_for_every_test_dataset(tmp_path, new_dataset_name):
    records = _records(num_clips=3)
    sources = [new_dataset_name("neg_a"), new_dataset_name("neg_b")]
    for source in sources:
        DatasetCatalog.register(source, lambda: records)
        MetadataCatalog.get(source).set(task="binary", num_frames=3)
    cfg = tiny_avsegformer_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.NEGATIVE_AUDIO.ENABLED = True
    cfg.TEST.NEGATIVE_AUDIO.CONDITIONS = ["silence", "offscreen"]

    def loader(cfg, name):  # the model needs no audio: the records themselves, one per batch
        return [[r] for r in DatasetCatalog.get(name)]

    for names in (sources[:1], sources):
        cfg.DATASETS.TEST = tuple(names)
        own = {"avs": {"mIoU": 0.5, "Fscore": 0.5}}
        results = own if len(names) == 1 else {n: {"avs": dict(own["avs"])} for n in names}
        add_negative_audio_results(cfg, _ConstantModel(), results, loader)
        for name in names:
            avs = results["avs"] if len(names) == 1 else results[name]["avs"]
            assert avs["negative/silence/fg_frame_share"] == 1.0
            assert avs["negative/offscreen/fg_area"] == 0.25
            assert avs["listening_score"] == 0.0
            assert "negative/noise/fg_frame_share" not in avs
    for source in sources:
        for condition in ("silence", "offscreen"):
            name = negative_dataset_name(source, condition)
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
