"""VGGish audio embedding network (the torchvggish port used by the original AVSegFormer).

One log-mel example ``[1, 96, 64]`` (96 frames of 10 ms x 64 mel bands) becomes one 128-d
embedding. Parameter names (``features.{0,3,6,8,11,13}``, ``embeddings.{0,2,4}``) are torchvggish's,
so its ``vggish-10086976.pth`` loads after the tensor-only conversion of
``tools/convert_pretrained_weights.py vggish``. Building reads no file: pretrained weights are
loaded afterwards, by :func:`avsegformer.checkpoint.load_model_weights`, where the model's
checkpoint does not hold them.
"""

import logging

import torch
from detectron2.config import configurable
from torch import nn

from .build import AUDIO_BACKBONE_REGISTRY

__all__ = ["VGGish", "VGGishPCA"]

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 128


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
    def __init__(self, *, pca: bool = False, freeze: bool = False):
        """
        Args:
            pca: apply the PCA + quantisation post-processor to the embeddings (its parameters,
                ``postprocessor.*``, start at zero and must be loaded).
            freeze: set ``requires_grad=False`` on every parameter.
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
        if freeze:
            self.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        audio = cfg.MODEL.AUDIO
        if audio.OUT_DIM != EMBEDDING_DIM:
            raise ValueError(
                f"MODEL.AUDIO.OUT_DIM is {audio.OUT_DIM}, but VGGish embeddings are {EMBEDDING_DIM}-d"
            )
        return {"pca": audio.PCA, "freeze": audio.FREEZE}

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
