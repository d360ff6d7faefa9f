"""Initialising a built model: its checkpoint, then pretrained files for what it left empty.

Building a model reads no file. :func:`load_model_weights` is the one place where weights come
in, for every tool: training (start or ``--resume``), ``--eval-only``, the demo and the
benchmark. A converted checkpoint holds every weight, so evaluation needs nothing else;
pretrained files (``MODEL.AUDIO.WEIGHTS``) only fill parts that the checkpoint does not hold,
which happens when training starts from ImageNet backbone weights or from scratch.
"""

import logging
import os

import torch
from torch import nn

from .checkpointer import AtomicDetectionCheckpointer
from .files import load_tensor_file

__all__ = ["load_model_weights", "load_pretrained_audio_backbone", "read_audio_weights"]

logger = logging.getLogger(__name__)

#: Attribute of a meta-architecture that holds its audio backbone.
AUDIO_BACKBONE_ATTRIBUTE = "audio_backbone"
# Parameters of the VGGish PCA post-processor inside an audio-weights file.
_POSTPROCESSOR_PREFIX = "postprocessor."
_CONVERT_HINT = (
    "convert torchvggish's vggish-10086976.pth with `python tools/convert_pretrained_weights.py "
    "vggish vggish-10086976.pth {path}`, or set MODEL.AUDIO.WEIGHTS '' for a randomly "
    "initialised VGGish"
)


def load_model_weights(cfg, model: nn.Module, *, resume: bool = False, checkpointer=None) -> dict:
    """Load a built model's weights as ``cfg`` says; the only weight loading of every tool.

    1. With ``resume`` and a ``last_checkpoint`` in ``cfg.OUTPUT_DIR``: that checkpoint, with the
       checkpointables of ``checkpointer`` (trainer state). Otherwise ``cfg.MODEL.WEIGHTS``, if
       set (a converted checkpoint, or ImageNet backbone weights to start training from).
    2. If the loaded file holds no audio-backbone entries (or nothing was loaded),
       ``cfg.MODEL.AUDIO.WEIGHTS`` fills them; with it empty the audio backbone stays random.

    Args:
        cfg: the model's config.
        model: the built model (or its DistributedDataParallel wrapper).
        resume: continue from the last checkpoint in ``cfg.OUTPUT_DIR`` when there is one.
        checkpointer: the :class:`AtomicDetectionCheckpointer` to load with (a trainer passes its
            own, which carries the trainer state); default: a new one on ``cfg.OUTPUT_DIR``.

    Returns:
        The rest of the loaded checkpoint (e.g. ``"iteration"``), as ``resume_or_load``.

    Raises:
        FileNotFoundError: ``MODEL.WEIGHTS`` or a needed pretrained file does not exist.
    """
    if checkpointer is None:
        checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    weights = cfg.MODEL.WEIGHTS
    resuming = resume and checkpointer.has_checkpoint()
    if not resuming and weights and "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS {weights} does not exist")
    checkpointer.missing_keys = None
    extra = checkpointer.resume_or_load(weights, resume=resume)
    network = checkpointer.model
    missing = checkpointer.missing_keys
    if missing is None:  # nothing was loaded
        missing = list(network.state_dict())
    audio_backbone = getattr(network, AUDIO_BACKBONE_ATTRIBUTE, None)
    if audio_backbone is not None:
        prefix = AUDIO_BACKBONE_ATTRIBUTE + "."
        audio_missing = [k[len(prefix) :] for k in missing if k.startswith(prefix)]
        if audio_missing:
            load_pretrained_audio_backbone(cfg, audio_backbone, keys=audio_missing)
    return extra


def load_pretrained_audio_backbone(cfg, audio_backbone: nn.Module, keys=None) -> None:
    """Fill ``audio_backbone`` from ``cfg.MODEL.AUDIO.WEIGHTS`` (and ``PCA_WEIGHTS``).

    Args:
        cfg: config with ``MODEL.AUDIO``.
        audio_backbone: the built audio backbone.
        keys: the entries to fill (names inside the audio backbone); None = all of them,
            loaded strictly.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_audio_weights`.
        KeyError: the file lacks some of ``keys``.
    """
    state_dict = read_audio_weights(cfg.MODEL.AUDIO)
    if state_dict is None:
        return
    everything = set(audio_backbone.state_dict())
    if keys is None or set(keys) == everything:
        audio_backbone.load_state_dict(state_dict, strict=True)
        return
    absent = sorted(set(keys) - set(state_dict))
    if absent:
        raise KeyError(f"MODEL.AUDIO.WEIGHTS {cfg.MODEL.AUDIO.WEIGHTS} lacks {absent[:10]}")
    audio_backbone.load_state_dict({k: state_dict[k] for k in keys}, strict=False)


def read_audio_weights(audio_cfg) -> dict[str, torch.Tensor] | None:
    """Read ``MODEL.AUDIO.WEIGHTS`` (and ``PCA_WEIGHTS``) into one state dict of the audio
    backbone, or None when ``WEIGHTS`` is empty (random initialisation).

    The PCA parameters (``postprocessor.*``) come from ``PCA_WEIGHTS`` when it is set, else from
    ``WEIGHTS``; they are dropped when ``PCA`` is off.

    Raises:
        FileNotFoundError: a named file does not exist (with how to make it).
        ValueError: a file is not a tensor-only state dict, PCA parameters are needed but absent,
            or ``PCA_WEIGHTS`` is set without ``WEIGHTS``.
    """
    weights, pca, pca_weights = audio_cfg.WEIGHTS, audio_cfg.PCA, audio_cfg.PCA_WEIGHTS
    if not weights:
        if pca and pca_weights:
            raise ValueError(
                "MODEL.AUDIO.PCA_WEIGHTS is set but MODEL.AUDIO.WEIGHTS is empty: PCA parameters "
                "are meaningless on a randomly initialised audio backbone"
            )
        logger.info("MODEL.AUDIO.WEIGHTS is empty: the audio backbone keeps its random init")
        return None
    state_dict = _read_audio_file(weights)
    logger.info("Loaded audio backbone weights from %s", weights)
    network = {k: v for k, v in state_dict.items() if not k.startswith(_POSTPROCESSOR_PREFIX)}
    if not pca:
        return network
    source = pca_weights or weights
    pca_params = _read_audio_file(pca_weights) if pca_weights else state_dict
    pca_params = {k: v for k, v in pca_params.items() if k.startswith(_POSTPROCESSOR_PREFIX)}
    if not pca_params:
        raise ValueError(
            f"MODEL.AUDIO.PCA is on but {source} holds no 'postprocessor.*' PCA parameters; "
            "convert vggish_pca_params-970ea276.pth with tools/convert_pretrained_weights.py "
            "vggish --pca"
        )
    return {**network, **pca_params}


def _read_audio_file(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"audio backbone weights {path} (MODEL.AUDIO.WEIGHTS / PCA_WEIGHTS) do not exist: "
            + _CONVERT_HINT.format(path=path)
        )
    return load_tensor_file(path, "audio backbone weights")
