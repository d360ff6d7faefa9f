"""VGGish audio embedding network (the torchvggish port used by the original AVSegFormer).

One log-mel example ``[1, 96, 64]`` (96 frames of 10 ms x 64 mel bands) becomes one 128-d
embedding. Parameter names (``features.{0,3,6,8,11,13}``, ``embeddings.{0,2,4}``) are torchvggish's,
so its ``vggish-10086976.pth`` loads after the tensor-only conversion of
``tools/convert_pretrained_weights.py vggish``.
"""

import logging
from pathlib import Path

import torch
from detectron2.config import configurable
from torch import nn

from .build import AUDIO_BACKBONE_REGISTRY

__all__ = ["VGGish", "VGGishPCA", "load_tensor_file"]

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 128
_POSTPROCESSOR_PREFIX = "postprocessor."


def load_tensor_file(path: str) -> dict[str, torch.Tensor]:
    """Load a tensor-only state dict saved with ``torch.save`` (``weights_only=True``, on CPU).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a flat ``{name: tensor}`` dict.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"audio backbone weights {path} (MODEL.AUDIO.WEIGHTS / PCA_WEIGHTS) do not exist: "
            "convert torchvggish's vggish-10086976.pth with `python "
            "tools/convert_pretrained_weights.py vggish vggish-10086976.pth "
            f"{path}`, or set MODEL.AUDIO.WEIGHTS '' for a randomly initialised VGGish"
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()
    ):
        raise ValueError(
            f"{path} is not a tensor-only state dict ({{name: tensor}}); convert the original "
            "file with tools/convert_pretrained_weights.py"
        )
    return state_dict


class VGGishPCA(nn.Module):
    """VGGish's PCA + 8-bit quantisation post-processor (the AudioSet release embedding format).

    ``quantised = round((clamp(E (x - mu), -2, 2) + 2) * 255 / 4)``, returned as float.
    """

    QUANTIZE_MIN = -2.0
    QUANTIZE_MAX = 2.0

    def __init__(self, dim: int = EMBEDDING_DIM):
        super().__init__()
        # Constants of the released model, not trained: buffers, so that optimisers skip them.
        self.register_buffer("pca_eigen_vectors", torch.zeros(dim, dim))
        self.register_buffer("pca_means", torch.zeros(dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embeddings: ``[N, 128]`` raw VGGish embeddings.

        Returns:
            ``[N, 128]`` float values in ``{0, 1, ..., 255}``.
        """
        projected = (embeddings - self.pca_means) @ self.pca_eigen_vectors.t()
        clipped = projected.clamp(self.QUANTIZE_MIN, self.QUANTIZE_MAX)
        scale = 255.0 / (self.QUANTIZE_MAX - self.QUANTIZE_MIN)
        return torch.round((clipped - self.QUANTIZE_MIN) * scale)


@AUDIO_BACKBONE_REGISTRY.register()
class VGGish(nn.Module):
    """VGG-like audio network: 4 conv blocks then 3 fully connected layers, ReLU after each.

    The final ReLU makes the embeddings non-negative, as in torchvggish (and the original model).
    """

    @configurable
    def __init__(
        self,
        *,
        pca: bool = False,
        freeze: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ):
        """
        Args:
            pca: apply the PCA + quantisation post-processor to the embeddings.
            freeze: set ``requires_grad=False`` on every parameter.
            state_dict: weights to load strictly (``postprocessor.*`` entries are required when
                ``pca`` is on), or None to keep the random initialisation.
        """
        super().__init__()

        def conv(in_channels: int, out_channels: int) -> nn.Conv2d:
            return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

        # The layout (and so the Sequential indices 0, 3, 6, 8, 11, 13) is torchvggish's.
        self.features = nn.Sequential(
            conv(1, 64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            conv(64, 128),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            conv(128, 256),
            nn.ReLU(inplace=True),
            conv(256, 256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            conv(256, 512),
            nn.ReLU(inplace=True),
            conv(512, 512),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True),
        )
        self.postprocessor = VGGishPCA() if pca else None
        if state_dict is not None:
            self.load_state_dict(state_dict, strict=True)
        if freeze:
            self.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        audio = cfg.MODEL.AUDIO
        if audio.OUT_DIM != EMBEDDING_DIM:
            raise ValueError(
                f"MODEL.AUDIO.OUT_DIM is {audio.OUT_DIM}, but VGGish embeddings are {EMBEDDING_DIM}-d"
            )
        return {
            "pca": audio.PCA,
            "freeze": audio.FREEZE,
            "state_dict": _load_vggish_state_dict(audio.WEIGHTS, audio.PCA, audio.PCA_WEIGHTS),
        }

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """
        Args:
            log_mel: ``[N, 1, 96, 64]`` log-mel examples.

        Returns:
            ``[N, 128]`` embeddings (non-negative; quantised to 0..255 with PCA on).
        """
        if log_mel.dim() != 4 or tuple(log_mel.shape[1:]) != (1, 96, 64):
            raise ValueError(f"VGGish takes [N, 1, 96, 64] log-mel, got {tuple(log_mel.shape)}")
        x = self.features(log_mel)
        # Channel-last flatten, the order of the TensorFlow weights torchvggish was ported from.
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = self.embeddings(x)
        if self.postprocessor is not None:
            x = self.postprocessor(x)
        return x


def _load_vggish_state_dict(
    weights: str, pca: bool, pca_weights: str
) -> dict[str, torch.Tensor] | None:
    """Read ``MODEL.AUDIO.WEIGHTS`` (and ``PCA_WEIGHTS``) into one state dict for :class:`VGGish`.

    The PCA parameters (``postprocessor.*``) come from ``PCA_WEIGHTS`` when it is set, else from
    ``WEIGHTS``; they are dropped when PCA is off.
    """
    if not weights:
        if pca and pca_weights:
            raise ValueError(
                "MODEL.AUDIO.PCA_WEIGHTS is set but MODEL.AUDIO.WEIGHTS is empty: PCA parameters "
                "are meaningless on a randomly initialised VGGish"
            )
        logger.info("MODEL.AUDIO.WEIGHTS is empty: VGGish keeps its random initialisation")
        return None
    state_dict = load_tensor_file(weights)
    logger.info("Loaded VGGish weights from %s", weights)
    network = {k: v for k, v in state_dict.items() if not k.startswith(_POSTPROCESSOR_PREFIX)}
    if not pca:
        return network
    source = pca_weights or weights
    pca_params = load_tensor_file(pca_weights) if pca_weights else state_dict
    pca_params = {k: v for k, v in pca_params.items() if k.startswith(_POSTPROCESSOR_PREFIX)}
    if not pca_params:
        raise ValueError(
            f"MODEL.AUDIO.PCA is on but {source} holds no 'postprocessor.*' PCA parameters; "
            "convert vggish_pca_params-970ea276.pth with tools/convert_pretrained_weights.py "
            "vggish --pca"
        )
    return {**network, **pca_params}
