"""A dataset's clips with the audio of other clips: the test of whether a model listens.

Every clip keeps its frames and ground truth but takes the audio of a clip of another category.
A model that uses the sound then segments the object that the borrowed sound names (or nothing),
and its mIoU drops; a model that looks only at the picture scores the same as with its own audio.
"""

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data.offscreen import AUDIO_KEYS, borrow_audio

__all__ = [
    "AUDIO_KEYS",
    "register_derived_dataset",
    "register_shuffled_audio",
    "shuffled_audio_records",
]


def shuffled_audio_records(records: list[dict], seed: int = 0) -> list[dict]:
    """Copies of ``records`` in which each clip's audio comes from another clip.

    The donor is drawn (fixed by ``seed``) among the clips of a different ``category``; with a
    single category, among the other clips. Each copy gets ``audio_donor`` (the donor's
    ``video_id``) and ``audio_category`` (the donor's category, or None).

    Args:
        records: Detectron2 dataset dicts with ``audio_file_name``.
        seed: seed of the pairing.
    """
    rng = np.random.default_rng(seed)
    shuffled = []
    for index, record in enumerate(records):
        donors = [r for r in records if r.get("category") != record.get("category")]
        if not donors:
            donors = [r for i, r in enumerate(records) if i != index] or [record]
        donor = donors[int(rng.integers(len(donors)))]
        shuffled.append(borrow_audio(record, donor))
    return shuffled


def register_derived_dataset(source: str, name: str, derive) -> str:
    """Register ``name`` as ``derive(records of source)`` with ``source``'s metadata, replacing
    an earlier registration of ``name``. The derived records are computed once, on first use.
    Returns ``name``."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    cache = []

    def load():
        if not cache:
            cache.append(derive(DatasetCatalog.get(source)))
        return list(cache[0])

    DatasetCatalog.register(name, load)
    metadata = MetadataCatalog.get(source).as_dict()
    metadata.pop("name", None)
    MetadataCatalog.get(name).set(**metadata)
    return name


def register_shuffled_audio(source: str, name: str, seed: int = 0) -> str:
    """Register ``name`` as :func:`shuffled_audio_records` of dataset ``source``, with the same
    metadata (replacing an earlier registration of ``name``). Returns ``name``."""
    return register_derived_dataset(source, name, lambda r: shuffled_audio_records(r, seed))
