#!/usr/bin/env python
"""Segment the sounding objects of your own clip.

    python tools/demo.py --config-file configs/synthetic/avsegformer_tiny_s4.yaml \\
        --input clip.mp4 --output out/ --opts MODEL.WEIGHTS output/synthetic_s4/model_best.pth
    python tools/demo.py --config-file ... --frames frames_dir/ --audio sound.wav --output out/

Any frame size and any audio sample rate or length work. As in AVSBench, the clip is cut into
0.96 s audio windows (one VGGish log-mel example each) and one frame is taken at the middle of
each window; with ``--frames`` every image is one such step and the audio is fitted to them.
Audio comes from ``--audio`` (any format soundfile or librosa reads) or, for a video without
``--audio``, from its own audio track (needs PyAV: ``pip install av``).

Writes ``masks/<i>.png`` (0/255, or the class palette), ``overlays/<i>.jpg`` and, when OpenCV
can encode it, ``overlay.mp4``. Bad input ends with a one-line message and exit code 2.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from avsegformer import add_avsegformer_config  # noqa: E402  (first: Detectron2 v0.6 fixes)
from avsegformer.data import audio as avs_audio  # noqa: E402

logger = logging.getLogger("avsegformer.demo")

#: Seconds of audio per frame step: one VGGish example (96 hops of 10 ms).
STEP_SECONDS = avs_audio.EXAMPLE_FRAMES * 0.01
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
EXIT_BAD_INPUT = 2


class DemoInputError(Exception):
    """The user's input cannot be segmented; the message says why."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="VIDEO", help="a video file OpenCV can read")
    source.add_argument("--frames", metavar="DIR", help="a folder of frames, in name order")
    parser.add_argument("--audio", metavar="FILE", help="audio file (needed with --frames)")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--threshold", type=float, default=0.5, help="binary mask threshold")
    parser.add_argument(
        "--chunk", type=int, default=5, help="frames per forward pass (memory vs. speed)"
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ...")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------
def _decode_audio_track(path: str):
    """Mono float samples and rate of a video's first audio stream (PyAV)."""
    try:
        import av
    except ImportError as err:
        raise DemoInputError(
            f"{path}: reading the audio track of a video needs PyAV (pip install av); "
            "or pass the audio with --audio FILE"
        ) from err
    import numpy as np

    try:
        with av.open(path) as container:
            streams = container.streams.audio
            if not streams:
                raise DemoInputError(f"{path}: the video has no audio track; pass --audio FILE")
            chunks, rate = [], streams[0].rate
            for frame in container.decode(streams[0]):
                raw = frame.to_ndarray()
                data = raw.astype(np.float64)
                if raw.dtype.kind in "iu":
                    data = data / float(np.iinfo(raw.dtype).max + 1)
                # Planar [channels, n] or packed [1, n*channels]: average the channels.
                channels = len(frame.layout.channels)
                if data.shape[0] == channels:
                    data = data.mean(axis=0)
                else:
                    data = data.reshape(-1, channels).mean(axis=1)
                chunks.append(data)
    except av.error.FFmpegError as err:
        raise DemoInputError(f"{path}: cannot decode the audio track ({err})") from err
    if not chunks:
        raise DemoInputError(f"{path}: the audio track is empty; pass --audio FILE")
    return np.concatenate(chunks), int(rate)


def _read_audio_file(path: str):
    if not os.path.isfile(path):
        raise DemoInputError(f"{path}: no such audio file")
    try:
        return avs_audio.read_wav(path)
    except avs_audio.AudioError:
        pass  # not a format soundfile reads (e.g. mp3 on old libsndfile): try librosa
    import librosa

    try:
        data, rate = librosa.load(path, sr=None, mono=True)
    except Exception as err:  # librosa raises many unrelated types for undecodable files
        raise DemoInputError(f"{path}: cannot read audio ({type(err).__name__}: {err})") from err
    return data, int(rate)


def load_log_mel(audio_path: str | None, video_path: str | None):
    """VGGish examples ``[N, 96, 64]`` of the clip's audio, N >= 1."""
    if audio_path:
        samples, rate = _read_audio_file(audio_path)
        source = audio_path
    else:
        samples, rate = _decode_audio_track(video_path)
        source = video_path
    examples = avs_audio.waveform_to_examples(samples, rate)
    if examples.shape[0] == 0:
        raise DemoInputError(
            f"{source}: the audio is too short ({len(samples) / rate:.2f} s); at least "
            f"{STEP_SECONDS + 0.015:.3f} s are needed"
        )
    return examples


def _open_video(path: str):
    """An opened ``cv2.VideoCapture`` and its frame rate, or a clear error."""
    import cv2

    if not os.path.isfile(path):
        raise DemoInputError(f"{path}: no such video file")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DemoInputError(f"{path}: OpenCV cannot open this video (unreadable or not a video)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    if fps <= 0 or capture.get(cv2.CAP_PROP_FRAME_COUNT) == 0:
        capture.release()
        raise DemoInputError(f"{path}: the file has no video frames")
    return capture, fps


def read_video_frames(path: str, num_steps: int):
    """RGB frames (PIL) at the middle of each 0.96 s step, as many as the video covers."""
    import cv2
    from PIL import Image

    capture, fps = _open_video(path)
    wanted = [int((step + 0.5) * STEP_SECONDS * fps) for step in range(num_steps)]
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
        raise DemoInputError(
            f"{path}: no frame could be decoded in the first {STEP_SECONDS:.2f} s "
            "(unreadable or too short video)"
        )
    return frames


def read_frame_folder(folder: str):
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(folder):
        raise DemoInputError(f"{folder}: no such folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DemoInputError(f"{folder}: no image ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    frames = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with Image.open(path) as image:
                frames.append(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DemoInputError(f"{path}: cannot read image ({err})") from err
    return frames


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def setup_cfg(args):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_avsegformer_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def build_predictor(cfg):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cfg)
    model.eval()
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the masks come from a randomly initialised model")
    return model


def _palette(cfg, num_classes: int):
    import numpy as np
    from detectron2.data import MetadataCatalog

    for name in cfg.DATASETS.TEST:
        colors = getattr(MetadataCatalog.get(name), "stuff_colors", None)
        if colors and len(colors) >= num_classes:
            return [tuple(c) for c in colors]
    rng = np.random.default_rng(0)
    return [(0, 0, 0)] + [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(70)]


def segment(cfg, model, frames, log_mel, *, chunk: int):
    """Per-frame probabilities: float32 ``[T, K, H, W]`` at each frame's own size."""
    import numpy as np
    import torch
    from PIL import Image

    height, width = cfg.INPUT.FRAME_SIZE
    outputs = []
    with torch.no_grad():
        for start in range(0, len(frames), chunk):
            part = frames[start : start + chunk]
            resized = [np.asarray(f.resize((width, height), Image.BILINEAR)) for f in part]
            clip = {
                "frames": torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous(),
                "log_mel": log_mel[start : start + len(part)],
                "height": part[0].height,
                "width": part[0].width,
            }
            outputs.append(model([clip])[0]["sem_seg"].float().cpu())
    return torch.cat(outputs)


def write_outputs(cfg, frames, probs, output_dir: str, threshold: float) -> dict:
    from avsegformer.evaluation.visualize import (
        binary_mask_image,
        overlay_image,
        palette_mask_image,
        save_image,
    )

    import cv2
    import numpy as np

    num_classes = probs.shape[1]
    palette = _palette(cfg, num_classes) if num_classes > 1 else None
    overlays = []
    for index, (frame, prob) in enumerate(zip(frames, probs)):
        if num_classes == 1:
            labels = (prob[0] > threshold).numpy().astype(np.int64)
            mask = binary_mask_image(labels)
        else:
            labels = prob.argmax(0).numpy()
            mask = palette_mask_image(labels, palette)
        save_image(mask, os.path.join(output_dir, "masks", f"{index:04d}.png"))
        overlay = overlay_image(frame, labels, palette)
        save_image(overlay, os.path.join(output_dir, "overlays", f"{index:04d}.jpg"))
        overlays.append(np.asarray(overlay))

    video_path = os.path.join(output_dir, "overlay.mp4")
    height, width = overlays[0].shape[:2]
    writer = cv2.VideoWriter(
        video_path, cv2.VideoWriter_fourcc(*"mp4v"), 1.0 / STEP_SECONDS, (width, height)
    )
    if writer.isOpened():
        for overlay in overlays:
            if overlay.shape[:2] != (height, width):
                overlay = cv2.resize(overlay, (width, height))
            writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        logger.warning("OpenCV cannot encode mp4 here: no overlay video written")
        video_path = None
    return {"frames": len(frames), "video": video_path}


def run(args) -> dict:
    if args.frames and not args.audio:
        raise DemoInputError("--frames needs --audio FILE (a folder of images has no sound)")
    if args.chunk < 1:
        raise DemoInputError(f"--chunk must be >= 1, got {args.chunk}")
    if args.input:
        _open_video(args.input)[0].release()  # a bad video is reported before its audio
    log_mel = load_log_mel(args.audio, args.input)
    if args.input:
        frames = read_video_frames(args.input, log_mel.shape[0])
        log_mel = log_mel[: len(frames)]
    else:
        frames = read_frame_folder(args.frames)
        log_mel = avs_audio.fit_examples(log_mel, len(frames), "repeat", args.audio)
    cfg = setup_cfg(args)
    model = build_predictor(cfg)
    probs = segment(cfg, model, frames, log_mel, chunk=args.chunk)
    return write_outputs(cfg, frames, probs, args.output, args.threshold)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except (DemoInputError, avs_audio.AudioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    video = f", overlay video {summary['video']}" if summary["video"] else ""
    print(f"{summary['frames']} frames segmented: masks and overlays in {args.output}{video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
