"""The clip predictor on small generated clips: frame/audio alignment, what the model is fed,
output shapes, labels and the class palette."""

import cv2
import numpy as np
import pytest
import soundfile
import torch
from helpers import temporary_dataset, tiny_avsegformer_cfg
from PIL import Image

from avsegformer.data.audio import load_log_mel
from avsegformer.data.dataset_mapper import AVSDatasetMapper
from avsegformer.data.maskiges import save_maskige
from avsegformer.data.masks import avss_palette
from avsegformer.data.media import MediaError, write_video
from avsegformer.predictor import (
    STEP_SECONDS,
    ClipPredictor,
    read_clip,
    read_clip_maskiges,
    write_predictions,
)

FPS = 10


def write_counting_video(path, seconds: float, size=(48, 32)):
    """An mp4 whose frame ``i`` is uniformly grey at level ``7 * i`` (``size`` is (w, h))."""
    images = [np.full((size[1], size[0], 3), 7 * i, np.uint8) for i in range(round(seconds * FPS))]
    assert write_video(images, str(path), FPS), "OpenCV in .venv cannot encode mp4v"
    return path


def write_chirp(path, seconds: float, rate: int = 22050):
    """A wav whose pitch rises over time, so every 0.96 s window has its own log-mel."""
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return path


def frame_index(image: Image.Image) -> int:
    return int(round(np.asarray(image).mean() / 7))


def test_video_frames_sit_in_the_middle_of_their_audio_windows(tmp_path):
    video = write_counting_video(tmp_path / "clip.mp4", seconds=3.5)
    audio = write_chirp(tmp_path / "chirp.wav", seconds=3.2)
    frames, log_mel = read_clip(video=str(video), audio=str(audio))
    # 3.2 s of audio = 3 windows; their middles are 0.48, 1.44 and 2.40 s = frames 4, 14, 24.
    assert pytest.approx(0.96) == STEP_SECONDS
    assert [frame_index(f) for f in frames] == [4, 14, 24]
    assert frames[0].size == (48, 32)
    # The same examples as the data loaders read from that file, in window order.
    assert log_mel.shape == (3, 96, 64)
    torch.testing.assert_close(log_mel, load_log_mel(str(audio)))
    assert not torch.allclose(log_mel[0], log_mel[1])


def test_a_short_video_cuts_the_audio(tmp_path):
    video = write_counting_video(tmp_path / "short.mp4", seconds=1.2)  # frames 0..11
    audio = write_chirp(tmp_path / "chirp.wav", seconds=3.2)
    frames, log_mel = read_clip(video=str(video), audio=str(audio))
    assert [frame_index(f) for f in frames] == [4]  # 1.44 s (frame 14) is past the end
    assert log_mel.shape == (1, 96, 64)


def test_a_frame_folder_gets_the_audio_fitted_to_it(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (50, 70), (8 * i, 0, 0)).save(folder / f"{3 - i:02d}.png")
    audio = write_chirp(tmp_path / "short.wav", seconds=2.0)  # 2 examples
    frames, log_mel = read_clip(frames=str(folder), audio=str(audio))
    # Name order, not write order; the last example repeated for frames 3 and 4.
    assert [np.asarray(f)[0, 0, 0] for f in frames] == [24, 16, 8, 0]
    examples = load_log_mel(str(audio))
    assert examples.shape[0] == 2
    torch.testing.assert_close(log_mel, examples[[0, 1, 1, 1]])


def test_frames_of_different_sizes_are_refused_naming_the_file(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (50, 70)).save(folder / "a.png")
    Image.new("RGB", (60, 70)).save(folder / "b.png")
    audio = write_chirp(tmp_path / "a.wav", seconds=2.0)
    with pytest.raises(MediaError, match=r"b\.png: 60x70 but a\.png is 50x70"):
        read_clip(frames=str(folder), audio=str(audio))
    with pytest.raises(MediaError, match="an audio file is needed"):
        read_clip(frames=str(folder))


def tiny_cfg(num_classes: int = 1, image_format: str = "RGB"):
    cfg = tiny_avsegformer_cfg(num_classes)
    cfg.INPUT.FRAME_SIZE = (64, 64)
    cfg.INPUT.FORMAT = image_format
    cfg.DATASETS.TEST = ()
    return cfg


class RecordingModel(torch.nn.Module):
    """Stands in for the model: records its inputs, returns the frame's mean as probability."""

    def __init__(self, num_classes: int, uses_maskiges: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.uses_maskiges = uses_maskiges
        self.inputs = []

    def forward(self, clips):
        self.inputs.extend(clips)
        out = []
        for clip in clips:
            level = clip["frames"].float().mean(dim=(1, 2, 3)) / 255
            shape = (len(level), self.num_classes, clip["height"], clip["width"])
            out.append({"sem_seg": level[:, None, None, None].expand(shape).clone()})
        return out


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_the_model_is_fed_what_the_eval_mapper_gives(tmp_path, image_format):
    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 40, 3), np.uint8)) for i in range(3)]  # fmt: skip
    for i, frame in enumerate(frames):
        frame.save(tmp_path / f"{i}.png")
    audio = write_chirp(tmp_path / "a.wav", seconds=3.0)
    cfg = tiny_cfg(image_format=image_format)
    mapped = AVSDatasetMapper(cfg, is_train=False)(
        {
            "file_names": [str(tmp_path / f"{i}.png") for i in range(3)],
            "audio_file_name": str(audio),
            "video_id": "clip",
        }
    )
    predictor = ClipPredictor(cfg, chunk=2)
    predictor.model = RecordingModel(num_classes=1)
    probs = predictor(frames, mapped["log_mel"])
    fed = predictor.model.inputs
    assert [len(clip["frames"]) for clip in fed] == [2, 1]  # chunks of at most 2
    torch.testing.assert_close(torch.cat([c["frames"] for c in fed]), mapped["frames"])
    torch.testing.assert_close(torch.cat([c["log_mel"] for c in fed]), mapped["log_mel"])
    assert all((c["height"], c["width"]) == (30, 40) for c in fed)
    assert probs.shape == (3, 1, 30, 40) and probs.dtype == torch.float32


def test_a_model_with_a_fixed_clip_length_gets_whole_clips(tmp_path):
    """CATR takes clips of exactly T frames: 7 frames become two 5-frame clips, the second
    completed with its last frame (flagged as padding), and only the 7 real outputs return."""
    frames = [Image.new("RGB", (40, 30), (20 * i, 20 * i, 20 * i)) for i in range(7)]
    log_mel = torch.randn(7, 96, 64)
    predictor = ClipPredictor(tiny_cfg(), chunk=2)
    predictor.model = RecordingModel(num_classes=1)
    predictor.model.num_frames = 5
    probs = predictor(frames, log_mel)
    fed = predictor.model.inputs
    assert [len(clip["frames"]) for clip in fed] == [5, 5]
    assert fed[1]["frame_valid"].tolist() == [True, True, False, False, False]
    torch.testing.assert_close(fed[1]["frames"][2:], fed[1]["frames"][1:2].expand(3, -1, -1, -1))
    torch.testing.assert_close(fed[1]["log_mel"][:2], log_mel[5:])
    torch.testing.assert_close(fed[1]["log_mel"][2:], log_mel[6:].expand(3, -1, -1))
    assert probs.shape == (7, 1, 30, 40)
    torch.testing.assert_close(probs[:, 0, 0, 0], torch.arange(7) * 20 / 255)


def write_region_maskige(path, size, split: int) -> None:
    """A maskige of two regions split at column ``split`` (``size`` is (H, W))."""
    masks = np.zeros((2, *size), bool)
    masks[0, :, :split] = True
    masks[1, : size[0] // 2] = True
    save_maskige(masks, str(path))


def test_maskiges_are_fed_as_the_eval_mapper_gives_them(tmp_path):
    frames_dir, maskige_dir = tmp_path / "frames", tmp_path / "maskiges"
    names = ["f1", "f10", "f2"]  # name order differs between "f1.png" and "f1_mask_color.png"
    frames = []
    for i, name in enumerate(names):
        frames_dir.mkdir(exist_ok=True)
        frame = np.random.default_rng(i).integers(0, 256, (30, 40, 3), np.uint8)
        Image.fromarray(frame).save(frames_dir / f"{name}.png")
        write_region_maskige(maskige_dir / f"{name}_mask_color.png", (30, 40), split=5 + 10 * i)
    audio = write_chirp(tmp_path / "a.wav", seconds=3.0)
    frames, log_mel = read_clip(frames=str(frames_dir), audio=str(audio))
    maskiges = read_clip_maskiges(str(maskige_dir), len(frames), frames=str(frames_dir))

    cfg = tiny_cfg()
    cfg.INPUT.MASKIGE_FOLDER = "pre_SAM_mask"  # the mapper reads maskiges
    mapped = AVSDatasetMapper(cfg, is_train=False)(
        {
            "file_names": [str(frames_dir / f"{n}.png") for n in names],
            "maskige_file_names": [str(maskige_dir / f"{n}_mask_color.png") for n in names],
            "audio_file_name": str(audio),
            "video_id": "clip",
        }
    )
    predictor = ClipPredictor(cfg, chunk=2)
    predictor.model = RecordingModel(num_classes=1, uses_maskiges=True)
    predictor(frames, log_mel, maskiges)
    fed = predictor.model.inputs
    assert [c["maskiges"].shape for c in fed] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    torch.testing.assert_close(torch.cat([c["maskiges"] for c in fed]), mapped["maskiges"])
    torch.testing.assert_close(torch.cat([c["frames"] for c in fed]), mapped["frames"])

    with pytest.raises(MediaError, match="RecordingModel model of this config reads a maskige"):
        predictor(frames, log_mel)
    with pytest.raises(MediaError, match="3 frames but 2 maskiges"):
        predictor(frames, log_mel, maskiges[:2])
    (maskige_dir / "f2_mask_color.png").unlink()
    with pytest.raises(ValueError, match="f2_mask_color.png: missing maskige"):
        read_clip_maskiges(str(maskige_dir), len(frames), frames=str(frames_dir))

    # A model that reads no maskiges is not given any.
    predictor.model.uses_maskiges = False
    predictor.model.inputs.clear()
    predictor(frames, log_mel, maskiges)
    assert not any("maskiges" in clip for clip in predictor.model.inputs)


def test_the_maskiges_of_a_video_are_named_by_step(tmp_path):
    for step in range(3):
        write_region_maskige(tmp_path / f"{step:04d}_mask_color.png", (8, 12), split=2 + 3 * step)
    maskiges = read_clip_maskiges(str(tmp_path), 2)
    assert [m.size for m in maskiges] == [(12, 8)] * 2
    assert not np.array_equal(np.asarray(maskiges[0]), np.asarray(maskiges[1]))
    with pytest.raises(ValueError, match="0003_mask_color.png: missing maskige"):
        read_clip_maskiges(str(tmp_path), 4)
    with pytest.raises(MediaError, match="nowhere: no such maskige folder"):
        read_clip_maskiges(str(tmp_path / "nowhere"), 2)


def test_real_model_output_shapes_do_not_depend_on_the_chunk():
    torch.manual_seed(0)
    frames = [Image.new("RGB", (50, 70), (30 * i, 90, 200 - 30 * i)) for i in range(3)]
    log_mel = torch.randn(3, 96, 64)
    predictor = ClipPredictor(tiny_cfg(), chunk=5)
    whole = predictor(frames, log_mel)
    predictor.chunk = 1
    one_by_one = predictor(frames, log_mel)
    assert whole.shape == (3, 1, 70, 50)  # each frame's own (H, W)
    assert float(whole.min()) >= 0 and float(whole.max()) <= 1
    torch.testing.assert_close(whole, one_by_one, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="3 frames but 2 log-mel examples"):
        predictor(frames, log_mel[:2])


def test_labels_threshold_binary_maps_and_take_the_argmax_of_classes():
    binary = torch.tensor([0.2, 0.6, 0.8]).reshape(3, 1, 1, 1)
    assert ClipPredictor.labels(binary, threshold=0.7).ravel().tolist() == [0, 0, 1]
    classes = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]]).reshape(2, 3, 1, 1)
    assert ClipPredictor.labels(classes).ravel().tolist() == [1, 0]


def test_palette_is_the_datasets_colours_else_the_avss_palette():
    predictor = ClipPredictor(tiny_cfg(num_classes=3))
    assert predictor.palette(1) is None
    assert predictor.palette(3) == avss_palette()
    assert predictor.palette(3)[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    assert len(predictor.palette(80)) == 80 and predictor.palette(80)[:71] == avss_palette()
    colors = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    with temporary_dataset([], stuff_colors=colors) as name:
        predictor.cfg.DATASETS.TEST = (name,)
        assert predictor.palette(3) == colors
        assert predictor.palette(4) == avss_palette()  # too few colours for 4 classes


def test_write_predictions_paints_masks_in_the_palette(tmp_path):
    frames = [Image.new("RGB", (20, 10), (50, 50, 50)) for _ in range(2)]
    labels = np.zeros((2, 10, 20), np.int64)
    labels[0, :, :5] = 2
    labels[1, 5:] = 1
    palette = avss_palette()
    video = write_predictions(str(tmp_path), frames, labels, palette)
    for index in range(2):
        with Image.open(tmp_path / "masks" / f"{index:04d}.png") as mask:
            rgb = np.asarray(mask.convert("RGB"))
        expected = np.asarray(palette, np.uint8)[labels[index]]
        np.testing.assert_array_equal(rgb, expected)
        assert (tmp_path / "overlays" / f"{index:04d}.jpg").is_file()
    if video is not None:
        capture = cv2.VideoCapture(video)
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2
        capture.release()
    binary = write_predictions(str(tmp_path / "binary"), frames, labels.clip(0, 1), None)
    with Image.open(tmp_path / "binary" / "masks" / "0000.png") as mask:
        assert set(np.unique(np.asarray(mask))) == {0, 255}
    assert binary is None or binary.endswith("overlay.mp4")
