"""Prediction head of AVSegFormer: query maps, their 1x1-conv MLP, and the up-sampling conv head."""

import torch
import torch.nn.functional as F
from torch import nn

from .activation_checkpointing import checkpointed

__all__ = ["AVSegMaskHead", "QueryMapMLP"]


class QueryMapMLP(nn.Module):
    """1x1-conv MLP over the query maps ``S = einsum("nqc,nchw->nqhw", queries, mask_feature)``.

    The query axis is the MLP's input-channel axis (``num_queries -> hidden -> hidden -> out``,
    ReLU between layers), so the weights are tied to the number of queries. The first layer is
    applied to the queries before the product (``W1 S = (W1 Q) F``), which never materialises
    the ``[N, num_queries, H, W]`` maps and costs less than the 1x1 conv over them.

    The layers run as matrix products over pixel tokens ``[N, H*W, channels]`` and the result
    is returned as a channels-last ``[N, out_dim, H, W]`` view: with a channels-last mask feature
    (a model converted for low-precision inference) no layer reorders its input.
    """

    def __init__(self, *, num_queries: int = 300, hidden_dim: int = 2048, out_dim: int = 256):
        super().__init__()
        dims = [num_queries, hidden_dim, hidden_dim, out_dim]
        self.layers = nn.ModuleList(
            nn.Conv2d(dims[i], dims[i + 1], kernel_size=1) for i in range(len(dims) - 1)
        )

    def forward(self, queries: torch.Tensor, mask_feature: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]``.
            mask_feature: ``[N, C, H, W]``.

        Returns:
            ``[N, out_dim, H, W]`` (channels-last strides).
        """
        n, _, height, width = mask_feature.shape
        first = self.layers[0]
        if queries.shape[1] != first.in_channels:
            raise ValueError(
                f"the query-map MLP expects {first.in_channels} queries, got {queries.shape[1]}"
            )
        folded = torch.matmul(first.weight.flatten(1), queries)  # [N, hidden, C]
        pixels = mask_feature.flatten(2).transpose(1, 2)  # [N, HW, C]
        hidden = torch.baddbmm(first.bias, pixels, folded.transpose(1, 2))  # [N, HW, hidden]
        hidden = F.relu(hidden)
        for i, layer in enumerate(self.layers[1:], start=1):
            hidden = F.linear(hidden, layer.weight.flatten(1), layer.bias)
            if i < len(self.layers) - 1:
                hidden = F.relu(hidden)
        return hidden.view(n, height, width, -1).permute(0, 3, 1, 2)


class AVSegMaskHead(nn.Module):
    """``logits = fc(mask_feature + mlp(query maps))`` at 4x the mask-feature resolution.

    ``fc`` is conv3x3 -> bilinear x4 (no activation before it) -> conv3x3 -> ReLU -> conv1x1
    without bias, as in the original (``head.mlp`` -> ``mlp``, ``head.fc`` -> ``fc``).

    With ``checkpoint_activations`` the head runs frame by frame in training, each frame keeping
    only its inputs for the backward pass: the ``[HW, mlp_dim]`` hidden layers of the MLP and
    the full-resolution maps of ``fc`` are then recomputed there one frame at a time.
    """

    def __init__(
        self,
        *,
        num_queries: int = 300,
        hidden_dim: int = 256,
        mlp_dim: int = 2048,
        num_classes: int = 1,
        upsample_factor: int = 4,
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.mlp = QueryMapMLP(num_queries=num_queries, hidden_dim=mlp_dim, out_dim=hidden_dim)
        self.fc = nn.Sequential(
            nn.Conv2d(hidden_dim, 128, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=upsample_factor, mode="bilinear", align_corners=False),
            nn.Conv2d(128, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, num_classes, kernel_size=1, bias=False),
        )

    def forward(self, queries: torch.Tensor, mask_feature: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]`` last decoder output.
            mask_feature: ``[N, C, H/4, W/4]`` mixed mask feature.

        Returns:
            ``[N, K, H, W]`` logits.
        """
        if not (self.checkpoint_activations and self.training and torch.is_grad_enabled()):
            return self._logits(queries, mask_feature)
        frames = [
            checkpointed(self._logits, q, f, module=self)
            for q, f in zip(queries.split(1), mask_feature.split(1))
        ]
        return torch.cat(frames)

    def _logits(self, queries: torch.Tensor, mask_feature: torch.Tensor) -> torch.Tensor:
        return self.fc(mask_feature + self.mlp(queries, mask_feature))
