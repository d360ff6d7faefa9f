"""tools/demo.py on generated clips (OpenCV mp4 + soundfile wav) and on bad inputs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
from helpers import load_tool, tiny_combo_cfg

from avsegformer.data.maskiges import save_maskige
from avsegformer.data.media import write_video

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "synthetic" / "avsegformer_tiny_s4.yaml"
# A random-weight tiny model at 64x64 keeps each run to seconds.
TINY_OPTS = ["--opts", "INPUT.FRAME_SIZE", "(64, 64)", "MODEL.WEIGHTS", ""]


demo = load_tool("demo")


def write_square_video(path: Path, seconds: float, fps: int = 10, size=(80, 60)) -> Path:
    """An mp4 (no audio track) of a moving square; ``size`` is (width, height)."""
    frames = []
    for i in range(int(seconds * fps)):
        frame = np.full((size[1], size[0], 3), 40, np.uint8)
        x = 5 + i % (size[0] - 25)
        frame[20:40, x : x + 20] = (230, 0, 0)
        frames.append(frame)
    assert write_video(frames, str(path), fps), "OpenCV in .venv cannot encode mp4v"
    return path


def write_wav(path: Path, seconds: float, rate: int, channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(str(path), np.stack([tone] * channels, axis=1), rate, subtype="PCM_16")
    return path


def _run(argv, capsys):
    code = demo.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_video_and_wav(tmp_path, capsys):
    video = write_square_video(tmp_path / "clip.mp4", seconds=3.2)
    audio = write_wav(tmp_path / "sound.wav", seconds=3.2, rate=22050, channels=2)
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        ["--config-file", CONFIG, "--input", video, "--audio", audio, "--output", out, *TINY_OPTS],
        capsys,
    )
    assert code == 0, stderr
    # 3.2 s of audio -> 3 VGGish examples -> 3 frames at 0.48, 1.44 and 2.40 s.
    masks = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in masks] == ["0000.png", "0001.png", "0002.png"]
    assert len(list((out / "overlays").glob("*.jpg"))) == 3
    from PIL import Image

    with Image.open(masks[0]) as mask:
        assert mask.size == (80, 60)  # the frame's own size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    capture = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    assert "3 frames segmented" in stdout


def test_frame_folder_and_audio_of_other_length(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (50, 70), (10 * i, 80, 120)).save(frames / f"{i:02d}.jpg")
    audio = write_wav(tmp_path / "short.wav", seconds=1.5, rate=44100)  # 1 example for 4 frames
    out = tmp_path / "out"
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--frames", frames, "--audio", audio, "--output", out,
         *TINY_OPTS],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    assert len(list((out / "masks").glob("*.png"))) == 4


def _assert_clean_failure(code, stderr, *fragments):
    assert code == demo.EXIT_BAD_INPUT
    assert stderr.startswith("error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_unreadable_video(tmp_path, capsys):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x01 this is not a video" * 50)
    audio = write_wav(tmp_path / "a.wav", 2.0, 16000)
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", video, "--audio", audio, "--output", tmp_path],
        capsys,
    )
    _assert_clean_failure(code, stderr, "broken.mp4", "cannot open")


def test_video_without_audio_track(tmp_path, capsys):
    video = write_square_video(tmp_path / "silent.mp4", seconds=2.0)
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", video, "--output", tmp_path / "o"], capsys
    )
    expected = "no audio track" if importlib.util.find_spec("av") else "PyAV"
    _assert_clean_failure(code, stderr, "silent.mp4", expected)


def test_too_short_audio(tmp_path, capsys):
    video = write_square_video(tmp_path / "clip.mp4", seconds=2.0)
    audio = write_wav(tmp_path / "blip.wav", seconds=0.5, rate=16000)
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", video, "--audio", audio, "--output", tmp_path / "o"],
        capsys,
    )
    _assert_clean_failure(code, stderr, "blip.wav", "too short")


def test_frames_need_audio_and_missing_files(tmp_path, capsys):
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--frames", tmp_path, "--output", tmp_path / "o"], capsys
    )
    _assert_clean_failure(code, stderr, "--audio")
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", tmp_path / "nope.mp4", "--audio",
         tmp_path / "nope.wav", "--output", tmp_path / "o"],
        capsys,
    )  # fmt: skip
    _assert_clean_failure(code, stderr, "nope.mp4")
    video = write_square_video(tmp_path / "clip.mp4", seconds=2.0)
    audio = write_wav(tmp_path / "a.wav", seconds=2.0, rate=16000)
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", video, "--audio", audio, "--output", tmp_path / "o",
         "--opts", "MODEL.WEIGHTS", tmp_path / "missing.pth"],
        capsys,
    )  # fmt: skip
    _assert_clean_failure(code, stderr, "MODEL.WEIGHTS", "missing.pth")


def test_video_with_audio_track(tmp_path, capsys):
    """With PyAV installed, the audio comes from the video's own track."""
    av = pytest.importorskip("av")
    path = tmp_path / "talking.mp4"
    rate = 16000
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        for i in range(22):
            image = np.full((48, 64, 3), 30 + 5 * i, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(2.2 * rate)) / rate)).astype(
            np.float32
        )
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    code, _, stderr = _run(
        ["--config-file", CONFIG, "--input", path, "--output", tmp_path / "o", *TINY_OPTS],
        capsys,
    )
    assert code == 0, stderr
    assert len(list((tmp_path / "o" / "masks").glob("*.png"))) == 2


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--config-file", str(CONFIG),
         "--input", str(video), "--audio", str(video), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == demo.EXIT_BAD_INPUT
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "broken.mp4" in proc.stderr


def test_combo_with_siam_encoder_reads_the_maskiges_of_the_steps(tmp_path, capsys):
    """A video's steps are 0000, 0001, ...: their maskiges ``0000_mask_color.png``, ...; without
    maskiges (or with one missing) the demo names what is missing."""
    config = tmp_path / "combo_tiny.yaml"
    cfg = tiny_combo_cfg()
    cfg.INPUT.FRAME_SIZE = (32, 32)
    config.write_text(cfg.dump())
    video = write_square_video(tmp_path / "clip.mp4", seconds=2.2)
    audio = write_wav(tmp_path / "sound.wav", seconds=2.2, rate=16000)
    maskiges = tmp_path / "maskiges"
    for step in range(2):
        masks = np.zeros((2, 60, 80), bool)
        masks[0, :, : 20 + 20 * step] = True
        masks[1, 30:] = True
        save_maskige(masks, str(maskiges / f"{step:04d}_mask_color.png"))
    clip = ["--config-file", config, "--input", video, "--audio", audio]
    weights = ["--opts", "MODEL.WEIGHTS", ""]

    code, stdout, stderr = _run(
        [*clip, "--maskiges", maskiges, "--output", tmp_path / "out", *weights], capsys
    )
    assert code == 0, stderr
    assert "2 frames segmented" in stdout
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 2

    code, _, stderr = _run([*clip, "--output", tmp_path / "o", *weights], capsys)
    _assert_clean_failure(code, stderr, "COMBO model of this config reads a maskige", "--maskiges")
    (maskiges / "0001_mask_color.png").unlink()
    code, _, stderr = _run(
        [*clip, "--maskiges", maskiges, "--output", tmp_path / "o", *weights], capsys
    )
    _assert_clean_failure(code, stderr, "0001_mask_color.png", "missing maskige")
