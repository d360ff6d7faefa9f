"""AVSBench metrics and the Detectron2 evaluator."""

from . import metrics  # noqa: F401
from .avsbench_evaluation import AVSBenchEvaluator  # noqa: F401

__all__ = ["AVSBenchEvaluator", "metrics"]
