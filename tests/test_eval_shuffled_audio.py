"""The other-audio dataset: each clip keeps its frames and masks and takes another clip's audio."""

from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers import forget_dataset, temporary_dataset, unique_dataset_name

from avsegformer.evaluation.shuffled_audio import register_shuffled_audio, shuffled_audio_records


def clip(index: int, category: str) -> dict:
    return {
        "video_id": f"clip{index}",
        "category": category,
        "file_names": [f"frames/{index}.png"],
        "sem_seg_file_names": [f"masks/{index}.png"],
        "audio_file_name": f"audio/{index}.pkl",
        "audio_wav_file_name": f"audio/{index}.wav",
    }


RECORDS = [clip(0, "dog"), clip(1, "dog"), clip(2, "cat"), clip(3, "cat"), clip(4, "car")]


def test_every_clip_takes_the_audio_of_another_category():
    shuffled = shuffled_audio_records(RECORDS, seed=0)
    by_id = {r["video_id"]: r for r in RECORDS}
    assert [r["video_id"] for r in shuffled] == [r["video_id"] for r in RECORDS]
    for original, record in zip(RECORDS, shuffled):
        donor = by_id[record["audio_donor"]]
        assert donor["category"] != original["category"]
        assert record["audio_category"] == donor["category"]
        # Both audio files move together; frames and masks stay.
        assert record["audio_file_name"] == donor["audio_file_name"]
        assert record["audio_wav_file_name"] == donor["audio_wav_file_name"]
        assert record["file_names"] == original["file_names"]
        assert record["sem_seg_file_names"] == original["sem_seg_file_names"]
    # The source records are not modified.
    assert RECORDS[0]["audio_file_name"] == "audio/0.pkl"


def test_pairing_is_fixed_by_the_seed():
    donors = [r["audio_donor"] for r in shuffled_audio_records(RECORDS, seed=3)]
    assert donors == [r["audio_donor"] for r in shuffled_audio_records(RECORDS, seed=3)]
    other_seeds = {
        tuple(r["audio_donor"] for r in shuffled_audio_records(RECORDS, seed=s)) for s in range(8)
    }
    assert len(other_seeds) > 1


def test_single_category_takes_another_clip():
    records = [clip(i, "dog") for i in range(3)]
    for original, record in zip(records, shuffled_audio_records(records)):
        assert record["audio_donor"] != original["video_id"]


def test_registered_dataset_keeps_the_metadata():
    name = unique_dataset_name("other_audio")
    with temporary_dataset(RECORDS, task="binary", num_frames=5) as source:
        try:
            assert register_shuffled_audio(source, name) == name
            records = DatasetCatalog.get(name)
            assert len(records) == len(RECORDS)
            assert all(r["audio_donor"] != r["video_id"] for r in records)
            assert MetadataCatalog.get(name).task == "binary"
            assert MetadataCatalog.get(name).num_frames == 5
        finally:
            forget_dataset(name)
