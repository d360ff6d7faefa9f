"""INPUT.NEGATIVE_AUDIO.START_ITER: no negative clip before it, negatives from it on (also right
after resuming past it), through Detectron2's real training data loader."""

import pytest
import torch
from detectron2.data import build_detection_train_loader
from engine_toy import ToyModel, ToyTrainer, toy_cfg
from helpers import temporary_dataset

from avsegformer.config.negative_audio import negative_audio_start_iter, without_negative_audio
from avsegformer.data.negative_audio import NegativeAudioSampler, is_negative
from avsegformer.engine import NegativeAudioStartHook

RECORDS = [{"video_id": f"v{i}", "height": 4, "width": 4} for i in range(6)]


class _ToyNegativeMapper:
    """The real negative-audio sampler of the config, then a toy clip saying whether it is one."""

    def __init__(self, cfg):
        self.sampler = NegativeAudioSampler.from_config(cfg)

    def __call__(self, record):
        if self.sampler is not None:
            record = self.sampler(record)
        return {
            "frames": torch.zeros(2, 3, 4, 4),
            "target": torch.zeros(2),
            "height": 4,
            "width": 4,
            "negative": is_negative(record),
        }


class _RecordingModel(ToyModel):
    def __init__(self):
        super().__init__()
        self.negatives = []  # per iteration: which clips of the batch were negative

    def forward(self, batched_inputs):
        self.negatives.append([x["negative"] for x in batched_inputs])
        return super().forward(batched_inputs)


class _CurriculumTrainer(ToyTrainer):
    @classmethod
    def build_model(cls, cfg):
        return _RecordingModel()

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=_ToyNegativeMapper(cfg))


def _cfg(tmp_path, dataset, *, prob, start_iter, max_iter, workers=0):
    cfg = toy_cfg(tmp_path, MAX_ITER=max_iter, IMS_PER_BATCH=2, CHECKPOINT_PERIOD=100)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.INPUT.NEGATIVE_AUDIO.PROB = prob
    cfg.INPUT.NEGATIVE_AUDIO.CONDITIONS = ["silence", "noise"]
    cfg.INPUT.NEGATIVE_AUDIO.START_ITER = start_iter
    return cfg


@pytest.mark.parametrize("workers", [0, 1])
def test_negatives_only_from_start_iter(tmp_path, workers):
    with temporary_dataset(RECORDS) as dataset:
        cfg = _cfg(tmp_path, dataset, prob=1.0, start_iter=3, max_iter=6, workers=workers)
        trainer = _CurriculumTrainer(cfg)
        hook = next(h for h in trainer._hooks if isinstance(h, NegativeAudioStartHook))
        trainer.train()
    negatives = trainer.model.negatives
    assert negatives == [[False, False]] * 3 + [[True, True]] * 3
    assert hook.negatives_on


def test_start_iter_zero_draws_negatives_from_the_first_iteration(tmp_path):
    with temporary_dataset(RECORDS) as dataset:
        trainer = _CurriculumTrainer(_cfg(tmp_path, dataset, prob=1.0, start_iter=0, max_iter=2))
        assert not any(isinstance(h, NegativeAudioStartHook) for h in trainer._hooks)
        trainer.train()
    assert trainer.model.negatives == [[True, True]] * 2


def test_resume_past_start_iter_draws_negatives_at_once(tmp_path):
    with temporary_dataset(RECORDS) as dataset:
        first = _CurriculumTrainer(_cfg(tmp_path, dataset, prob=0.0, start_iter=0, max_iter=4))
        first.train()
        assert first.model.negatives == [[False, False]] * 4

        resumed = _CurriculumTrainer(
            _cfg(tmp_path, dataset, prob=1.0, start_iter=2, max_iter=7, workers=1)
        )
        resumed.resume_or_load(resume=True)
        assert resumed.start_iter == 4
        resumed.train()
    assert resumed.model.negatives == [[True, True]] * 3


@pytest.mark.parametrize(
    "start_iter, prob, message",
    [
        (-1, 0.5, r"START_ITER must be an integer >= 0.*got -1"),
        (2.5, 0.5, r"START_ITER must be an integer >= 0.*got 2.5"),
        (3, 0.0, r"START_ITER is 3 but INPUT.NEGATIVE_AUDIO.PROB is 0.0"),
    ],
)
def test_bad_start_iter_is_a_clear_error(tmp_path, start_iter, prob, message):
    cfg = toy_cfg(tmp_path)
    cfg.INPUT.NEGATIVE_AUDIO.PROB = prob
    cfg.INPUT.NEGATIVE_AUDIO.START_ITER = start_iter
    with pytest.raises(ValueError, match=message):
        negative_audio_start_iter(cfg)
    with pytest.raises(ValueError, match=message):
        ToyTrainer(cfg)


def test_config_without_negatives_keeps_everything_else(tmp_path):
    cfg = toy_cfg(tmp_path)
    cfg.INPUT.NEGATIVE_AUDIO.PROB = 0.4
    cfg.INPUT.NEGATIVE_AUDIO.START_ITER = 5
    cfg.freeze()
    off = without_negative_audio(cfg)
    assert off.INPUT.NEGATIVE_AUDIO.PROB == 0.0 and off.is_frozen()
    assert cfg.INPUT.NEGATIVE_AUDIO.PROB == 0.4  # the original is untouched
    thawed = off.clone()
    thawed.defrost()
    thawed.INPUT.NEGATIVE_AUDIO.PROB = 0.4
    assert thawed == cfg
    assert negative_audio_start_iter(cfg) == 5
