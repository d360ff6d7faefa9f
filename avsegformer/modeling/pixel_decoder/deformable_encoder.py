"""The pixel decoder's post-norm deformable-attention encoder: layers sharing one set of
reference points over every level."""

from typing import List, Tuple

import torch
from torch import nn

from avsegformer.layers import MSDeformAttn

from ..activation_checkpointing import checkpointed
from ..transformer.activation import activation_fn

__all__ = ["MSDeformAttnEncoder", "MSDeformAttnEncoderLayer"]


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention then an FFN, dropout on both."""

    def __init__(
        self,
        *,
        dim: int = 256,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "gelu",
        n_levels: int = 3,
        n_heads: int = 8,
        n_points: int = 4,
        msda_impl: str = "auto",
    ):
        """
        Args:
            dim: token width.
            dim_feedforward: hidden width of the FFN.
            dropout: after the attention, inside and after the FFN.
            activation: of the FFN, "gelu" or "relu".
            n_levels, n_heads, n_points: of the deformable attention.
            msda_impl: deformable-attention backend ("auto", "pytorch", "compiled").
        """
        super().__init__()
        self.activation = activation_fn(activation)
        self.self_attn = MSDeformAttn(dim, n_levels, n_heads, n_points, impl=msda_impl)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index):
        """
        Args:
            src: ``[N, S, C]`` tokens of every level.
            pos: ``[N or 1, S, C]`` positional + level embeddings.
            reference_points: ``[N, S, L, 2]``.
            spatial_shapes: ``[L, 2]`` int64 (H, W).
            level_start_index: ``[L]`` int64.

        Returns:
            ``[N, S, C]``.
        """
        attended = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, None
        )
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnEncoder(nn.Module):
    """A stack of :class:`MSDeformAttnEncoderLayer` sharing one set of reference points.

    With ``checkpoint_activations`` every layer keeps only its input for the backward pass in
    training (:func:`~avsegformer.modeling.activation_checkpointing.checkpointed`).
    """

    def __init__(
        self, *, num_layers: int = 6, checkpoint_activations: bool = False, **layer_kwargs
    ):
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.layers = nn.ModuleList(
            MSDeformAttnEncoderLayer(**layer_kwargs) for _ in range(num_layers)
        )

    @staticmethod
    def reference_points(spatial_shapes: List[Tuple[int, int]], device) -> torch.Tensor:
        """Normalised pixel centres of every level, repeated for every level (valid ratio 1).

        Returns:
            ``[1, S, L, 2]`` as (x, y) in [0, 1].
        """
        points = []
        for height, width in spatial_shapes:
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
                torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
        points = torch.cat(points, 0)
        return points[None, :, None, :].expand(-1, -1, len(spatial_shapes), -1)

    def forward(self, src, pos, spatial_shapes, level_start_index):
        """
        Args:
            src: ``[N, S, C]``.
            pos: ``[N or 1, S, C]``.
            spatial_shapes: ``[L, 2]`` int64 (H, W).
            level_start_index: ``[L]`` int64.

        Returns:
            ``[N, S, C]`` memory.
        """
        shapes = [tuple(s) for s in spatial_shapes.tolist()]
        # At least float32: half-precision models keep the sampling locations in float32.
        reference_points = self.reference_points(shapes, src.device).to(
            torch.promote_types(src.dtype, torch.float32)
        )
        reference_points = reference_points.expand(src.shape[0], -1, -1, -1)
        for layer in self.layers:
            src = checkpointed(
                layer,
                src,
                pos,
                reference_points,
                spatial_shapes,
                level_start_index,
                enabled=self.checkpoint_activations,
            )
        return src
