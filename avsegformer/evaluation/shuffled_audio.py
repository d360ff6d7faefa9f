"""A dataset's clips with the audio of other clips: the test of whether a model listens.

Every clip keeps its frames and ground truth but takes the audio of a clip of another category.
A model that uses the sound then segments the object that the borrowed sound names (or nothing),
and its mIoU drops; a model that looks only at the picture scores the same as with its own audio.
"""

import copy

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["AUDIO_KEYS", "shuffled_audio_records", "register_shuffled_audio"]

#: Record keys that point at a clip's audio (log-mel pickle or wav); all move together.
AUDIO_KEYS = ("audio_file_name", "audio_wav_file_name")


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
        copied = copy.deepcopy(record)
        for key in AUDIO_KEYS:
            if key in donor:
                copied[key] = donor[key]
            else:
                copied.pop(key, None)
        copied["audio_donor"] = donor.get("video_id")
        copied["audio_category"] = donor.get("category")
        shuffled.append(copied)
    return shuffled


def register_shuffled_audio(source: str, name: str, seed: int = 0) -> str:
    """Register ``name`` as :func:`shuffled_audio_records` of dataset ``source``, with the same
    metadata (replacing an earlier registration of ``name``). Returns ``name``."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: shuffled_audio_records(DatasetCatalog.get(source), seed))
    metadata = MetadataCatalog.get(source).as_dict()
    metadata.pop("name", None)
    MetadataCatalog.get(name).set(**metadata)
    return name
