"""AVSBench and user datasets, the clip mapper and the audio front end."""

from . import datasets  # noqa: F401  (registers the builtin AVSBench datasets)
from .dataset_mapper import AVSDatasetMapper
from .datasets import register_avs_dataset, register_avsbench

__all__ = ["AVSDatasetMapper", "datasets", "register_avs_dataset", "register_avsbench"]
