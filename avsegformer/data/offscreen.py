"""Off-screen audio: the sound of another clip of the same split whose sounding classes are
absent from a clip, so that nothing the clip shows is heard and its right masks are empty.

What a clip shows and what sounds comes from what the dataset says (:func:`clip_classes`):

* records with ``sounding_classes`` and ``visible_classes`` (the synthetic AVSBench writes both:
  it knows every object, silent ones too), where the rule is exact;
* S4 records: the ``category`` is the sounding class; the donor has another category;
* semantic (AVSS) records: the classes of the annotated masks (the sounding objects).

MS3 says nothing about classes: asking for off-screen audio there is an error.
"""

import logging
from collections.abc import Sequence

import numpy as np

from .errors import AVSDataError
from .masks import IGNORE_LABEL, read_avs_mask

__all__ = ["AUDIO_KEYS", "OffscreenDonors", "borrow_audio", "clip_classes", "offscreen_records"]

logger = logging.getLogger(__name__)

#: Record keys that point at a clip's audio (log-mel pickle or wav); all move together.
AUDIO_KEYS = ("audio_file_name", "audio_wav_file_name")


def borrow_audio(record: dict, donor: dict) -> dict:
    """A deep copy of ``record`` hearing ``donor``'s audio files (frames and masks stay), with
    ``audio_donor`` (the donor's ``video_id``) and ``audio_category`` (its category or None)."""
    import copy

    copied = copy.deepcopy(record)
    for key in AUDIO_KEYS:
        if key in donor:
            copied[key] = donor[key]
        else:
            copied.pop(key, None)
    copied["audio_donor"] = donor.get("video_id")
    copied["audio_category"] = donor.get("category")
    return copied


def _mask_classes(record: dict, palette: Sequence | None) -> frozenset:
    """Non-background, non-ignore class ids of the annotated frames of a semantic record."""
    classes: set[int] = set()
    for path in record.get("sem_seg_file_names") or ():
        if path:
            labels = read_avs_mask(
                path, record["mask_format"], palette=palette, num_classes=len(palette)
            )
            classes.update(int(c) for c in np.unique(labels))
    return frozenset(classes - {0, IGNORE_LABEL})


def clip_classes(record: dict, palette: Sequence | None = None):
    """``(sounding, visible)`` class sets of a clip, or None when its dataset does not say.

    Args:
        record: a clip record.
        palette: the class colours of a semantic dataset (its ``stuff_colors``).
    """
    if "sounding_classes" in record:
        sounding = frozenset(record["sounding_classes"])
        return sounding, sounding | frozenset(record.get("visible_classes") or ())
    if record.get("category"):
        category = frozenset([record["category"]])
        return category, category
    if record.get("mask_format") in ("palette", "index") and palette is not None:
        sounding = _mask_classes(record, palette)
        return sounding, sounding
    return None


class OffscreenDonors:
    """The clips of a split as donors of off-screen audio.

    A donor of clip c is another clip that sounds at least one class and none of the classes c
    shows. Args: ``records`` (the split), ``palette`` (semantic datasets), ``dataset`` (its name,
    for errors).
    """

    def __init__(self, records: Sequence[dict], palette: Sequence | None = None, dataset=""):
        self._palette = palette
        self._records = list(records)
        self._classes = []
        for record in self._records:
            classes = clip_classes(record, palette)
            if classes is None:
                raise AVSDataError(
                    f"dataset {dataset or '?'}: clip {record.get('video_id')!r} has no class "
                    "information (category, sounding_classes or semantic masks), so no "
                    "off-screen audio can be chosen; leave 'offscreen' out of the conditions"
                )
            self._classes.append(classes)
        self._by_id = {str(r.get("video_id")): c for r, c in zip(self._records, self._classes)}

    @classmethod
    def from_datasets(cls, names: Sequence[str]) -> "OffscreenDonors":
        """Donors over the registered datasets ``names`` (their records, concatenated)."""
        from detectron2.data import DatasetCatalog, MetadataCatalog

        records, palette = [], None
        for name in names:
            records += DatasetCatalog.get(name)
            if MetadataCatalog.get(name).get("task") == "semantic":
                palette = MetadataCatalog.get(name).get("stuff_colors")
        return cls(records, palette, ",".join(names))

    def classes_of(self, record: dict):
        """``(sounding, visible)`` of ``record`` (looked up by ``video_id``, else read)."""
        known = self._by_id.get(str(record.get("video_id")))
        return known if known is not None else clip_classes(record, self._palette)

    def candidates(self, record: dict) -> list[dict]:
        """The donors of ``record``, in split order."""
        _, visible = self.classes_of(record)
        video_id = record.get("video_id")
        return [
            donor
            for donor, (sounding, _) in zip(self._records, self._classes)
            if sounding and not (sounding & visible) and donor.get("video_id") != video_id
        ]

    def draw(self, record: dict, rng) -> dict | None:
        """One donor of ``record`` drawn with ``rng`` (anything with ``random()``), or None."""
        donors = self.candidates(record)
        if not donors:
            return None
        return donors[min(int(rng.random() * len(donors)), len(donors) - 1)]

    def with_audio_of(self, record: dict, donor: dict) -> dict:
        """``record`` hearing ``donor`` (:func:`borrow_audio`), ``audio_classes`` listing the
        classes it hears and its ``negative_audio`` naming the donor."""
        copied = borrow_audio(record, donor)
        copied["audio_classes"] = sorted(self.classes_of(donor)[0], key=str)
        if copied.get("negative_audio"):
            copied["negative_audio"]["donor"] = donor.get("video_id")
        return copied


def offscreen_records(
    records: Sequence[dict], seed: int = 0, palette: Sequence | None = None, dataset: str = ""
) -> list[dict]:
    """The ``offscreen`` condition of a split: every clip hearing a donor drawn from its own
    stream (:func:`~avsegformer.data.negative_audio.clip_seed`), so the pairing depends on the
    seed and the clip only. Clips without any donor are left out (with a warning)."""
    from .negative_audio import clip_seed, mark_negative

    donors = OffscreenDonors(records, palette, dataset)
    chosen, missing = [], []
    for record in records:
        rng = np.random.default_rng(clip_seed(seed, f"offscreen/{record.get('video_id')}"))
        donor = donors.draw(record, rng)
        if donor is None:
            missing.append(record.get("video_id"))
            continue
        chosen.append(donors.with_audio_of(mark_negative(record, "offscreen", seed=seed), donor))
    if missing:
        logger.warning(
            "%s: %d clips (e.g. %r) have no off-screen donor and are left out",
            dataset or "offscreen audio",
            len(missing),
            missing[0],
        )
    return chosen
