"""CATR's per-query heads: mask kernels (an MLP) and the mask logits; the inference's per-frame
query selection on the referred / not-referred logits."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KernelMLP", "dynamic_masks", "select_referred_masks"]


class KernelMLP(nn.Module):
    """``Linear -> ReLU -> ... -> Linear`` (``num_layers`` linear layers, in ``layers``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def dynamic_masks(kernels: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """Mask logits as the dot product of each query's kernel with each pixel's feature.

    Args:
        kernels: ``[L, T, B, Q, D]``.
        mask_features: ``[T, B, D, H, W]``.

    Returns:
        ``[L, T, B, Q, H, W]``.
    """
    return torch.einsum("ltbqd,tbdhw->ltbqhw", kernels, mask_features)


def select_referred_masks(pred_masks: torch.Tensor, pred_is_referred: torch.Tensor):
    """Per frame, the mask of the query most likely to be the sounding object.

    Args:
        pred_masks: ``[T, B, Q, h, w]`` logits.
        pred_is_referred: ``[T, B, Q, 2]`` logits (class 0 = referred).

    Returns:
        ``(masks [T, B, h, w], query [T, B], scores [T, B, Q])``: the selected mask logits, the
        selected query (the first one on ties) and the softmax "referred" probabilities.
    """
    scores = pred_is_referred.float().softmax(-1)[..., 0]
    query = scores.argmax(-1)
    index = query[..., None, None, None].expand(-1, -1, 1, *pred_masks.shape[-2:])
    return pred_masks.gather(2, index).squeeze(2), query, scores
