"""Detectron2 v0.6's DefaultTrainer works on this stack (CPU, current PyTorch and NumPy).

A toy meta-architecture registered here trains a few iterations, writes checkpoints, evaluates
through a DatasetEvaluator, and resumes at the right iteration.
"""

import json

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from torch import nn

DATASET = "avsegformer_toy_regression"


@META_ARCH_REGISTRY.register()
class ToyRegressor(nn.Module):
    """y = w . x + b fitted with an L2 loss; eval returns the prediction."""

    def __init__(self, cfg):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, batched_inputs):
        x = torch.stack([b["x"] for b in batched_inputs])
        prediction = self.linear(x).squeeze(1)
        if self.training:
            y = torch.stack([b["y"] for b in batched_inputs])
            return {"loss_l2": ((prediction - y) ** 2).mean()}
        return [{"y": p} for p in prediction]


class MeanSquaredError(DatasetEvaluator):
    def reset(self):
        self._errors = []

    def process(self, inputs, outputs):
        self._errors += [float((o["y"] - i["y"]) ** 2) for i, o in zip(inputs, outputs)]

    def evaluate(self):
        errors = sum(comm.gather(self._errors), [])
        return {"toy": {"mse": sum(errors) / len(errors)}}


def make_samples():
    generator = torch.Generator().manual_seed(0)
    xs = torch.randn(32, 4, generator=generator)
    ys = xs @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.25
    return [{"x": x, "y": y} for x, y in zip(xs, ys)]


class ToyTrainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=lambda d: d)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        samples = DatasetCatalog.get(dataset_name)
        return [[s] for s in samples]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return MeanSquaredError()


@pytest.fixture(scope="module", autouse=True)
def toy_dataset():
    DatasetCatalog.register(DATASET, make_samples)
    MetadataCatalog.get(DATASET)
    yield
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def toy_cfg(output_dir, max_iter):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ToyRegressor"
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.DATASETS.TEST = (DATASET,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 5
    cfg.TEST.EVAL_PERIOD = 10
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def test_train_checkpoint_evaluate_resume(tmp_path):
    trainer = ToyTrainer(toy_cfg(tmp_path, max_iter=10))
    trainer.resume_or_load(resume=False)
    samples = make_samples()
    with torch.no_grad():
        x = torch.stack([s["x"] for s in samples])
        y = torch.stack([s["y"] for s in samples])
        initial_mse = float(((trainer.model.linear(x).squeeze(1) - y) ** 2).mean())
    trainer.train()

    assert (tmp_path / "model_0000004.pth").exists()
    assert (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    evaluated = [m for m in metrics if "toy/mse" in m]
    assert evaluated and evaluated[-1]["iteration"] in (9, 10)
    assert evaluated[-1]["toy/mse"] < initial_mse / 2

    # A longer schedule resumes from model_final at iteration 10, not from scratch.
    resumed = ToyTrainer(toy_cfg(tmp_path, max_iter=15))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 10
    weights_at_resume = resumed.model.linear.weight.detach().clone()
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    torch.testing.assert_close(weights_at_resume, saved["model"]["linear.weight"])
    resumed.train()
    assert resumed.iter == 15
    assert (tmp_path / "model_0000014.pth").exists()
