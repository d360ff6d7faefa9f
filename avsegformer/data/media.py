"""Read and write the media of a user's own clip: video frames, audio tracks, audio files,
folders of images, and an mp4 of images.

AVSBench clips come as extracted frames and precomputed audio (see :mod:`.datasets`); this
module is for everything else a user may hand to :mod:`avsegformer.predictor`. Every failure is a
:class:`MediaError` whose message names the file and what is wrong.
"""

import logging
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .audio import AudioError, read_wav
from .errors import AVSDataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MediaError",
    "check_video",
    "image_folder_names",
    "read_audio_file",
    "read_audio_track",
    "read_image_folder",
    "read_video_frames",
    "write_video",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class MediaError(AVSDataError):
    """A user's media file cannot be read or written; the message names the file."""


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------
def read_audio_file(path: str) -> tuple[np.ndarray, int]:
    """Mono samples and sample rate of an audio file: anything soundfile reads, else librosa."""
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such audio file")
    try:
        return read_wav(path)
    except AudioError:
        pass  # not a format soundfile reads (e.g. mp3 on old libsndfile): try librosa
    import librosa

    try:
        data, rate = librosa.load(path, sr=None, mono=True)
    except Exception as err:  # librosa raises many unrelated types for undecodable files
        raise MediaError(f"{path}: cannot read audio ({type(err).__name__}: {err})") from err
    return data, int(rate)


def _mono(frame, raw: np.ndarray) -> np.ndarray:
    """One decoded PyAV audio frame as float64 mono samples in [-1, 1]."""
    data = raw.astype(np.float64)
    if raw.dtype.kind in "iu":
        data = data / float(np.iinfo(raw.dtype).max + 1)
    # Planar [channels, n] or packed [1, n * channels]: average the channels.
    channels = len(frame.layout.channels)
    if data.shape[0] == channels:
        return data.mean(axis=0)
    return data.reshape(-1, channels).mean(axis=1)


def read_audio_track(path: str) -> tuple[np.ndarray, int]:
    """Mono samples and sample rate of a video's first audio stream (decoded with PyAV)."""
    try:
        import av
    except ImportError as err:
        raise MediaError(
            f"{path}: reading the audio track of a video needs PyAV (pip install av); "
            "or pass the audio as a separate file"
        ) from err
    try:
        with av.open(path) as container:
            streams = container.streams.audio
            if not streams:
                raise MediaError(f"{path}: the video has no audio track; pass an audio file")
            rate = streams[0].rate
            chunks = [_mono(frame, frame.to_ndarray()) for frame in container.decode(streams[0])]
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot decode the audio track ({err})") from err
    if not chunks:
        raise MediaError(f"{path}: the audio track is empty; pass an audio file")
    return np.concatenate(chunks), int(rate)


# ---------------------------------------------------------------------------------------------
# images and video
# ---------------------------------------------------------------------------------------------
def _open_video(path: str):
    """An opened ``cv2.VideoCapture`` and its frame rate."""
    import cv2

    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such video file")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise MediaError(f"{path}: OpenCV cannot open this video (unreadable or not a video)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if fps <= 0 or capture.get(cv2.CAP_PROP_FRAME_COUNT) == 0:
        capture.release()
        raise MediaError(f"{path}: the file has no video frames")
    return capture, fps


def check_video(path: str) -> None:
    """Raise :class:`MediaError` unless OpenCV can open ``path`` as a video with frames."""
    _open_video(path)[0].release()


def read_video_frames(path: str, times: Sequence[float]) -> list[Image.Image]:
    """RGB frames shown at ``times`` (seconds, increasing), as many as the video covers.

    Frame ``i`` is the one whose index is ``int(times[i] * fps)``; decoding stops at the end of
    the video, so fewer frames than ``times`` come back from a short video (at least one).
    """
    import cv2

    capture, fps = _open_video(path)
    wanted = [int(t * fps) for t in times]
    frames, index = [], 0
    try:
        while len(frames) < len(wanted):
            ok, bgr = capture.read()
            if not ok:
                break
            while len(frames) < len(wanted) and wanted[len(frames)] == index:
                frames.append(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            index += 1
    finally:
        capture.release()
    if not frames:
        first = f" at {times[0]:.2f} s" if len(times) else ""
        raise MediaError(f"{path}: no frame could be decoded{first} (unreadable or too short)")
    return frames


def image_folder_names(folder: str) -> list[str]:
    """The file names of the images (:data:`IMAGE_EXTENSIONS`) in ``folder``, in name order:
    the frames :func:`read_image_folder` reads."""
    if not os.path.isdir(folder):
        raise MediaError(f"{folder}: no such folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise MediaError(f"{folder}: no image ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    return names


def read_image_folder(folder: str) -> list[Image.Image]:
    """The images of ``folder`` (:data:`IMAGE_EXTENSIONS`) in name order, as RGB; all of one
    size."""
    names = image_folder_names(folder)
    frames = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with Image.open(path) as image:
                frames.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise MediaError(f"{path}: cannot read image ({err})") from err
        if frames[-1].size != frames[0].size:
            raise MediaError(
                f"{path}: {_size(frames[-1])} but {names[0]} is {_size(frames[0])}; "
                "the frames of a clip must share one size"
            )
    return frames


def _size(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"


def write_video(images: Sequence[np.ndarray], path: str, fps: float) -> bool:
    """Write RGB uint8 ``[H, W, 3]`` images as an mp4 (mp4v) at the first image's size.

    Returns False, writing nothing, where OpenCV cannot encode mp4 (a build without the codec).
    """
    import cv2

    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        logger.warning("OpenCV cannot encode mp4 here: %s not written", path)
        return False
    try:
        for image in images:
            if image.shape[:2] != (height, width):
                image = cv2.resize(image, (width, height))
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return True
