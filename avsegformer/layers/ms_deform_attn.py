# Multi-scale deformable attention, after Deformable DETR (SenseTime, Apache-2.0) and its copy in
# Mask2Former; rewritten for this project.
"""The multi-scale deformable attention layer (Deformable DETR), on the sampling function of
:mod:`avsegformer.layers.ms_deform_attn_function`."""

import math

import torch
from torch import nn

from .ms_deform_attn_function import _check_impl, ms_deform_attn

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR), as the AVSegFormer encoder uses it.

    Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``) match the original checkpoints.

    Args:
        d_model: channels of queries, values and output.
        n_levels: feature levels sampled.
        n_heads: attention heads; ``d_model`` must be divisible by it.
        n_points: sampling points per head and level.
        impl: sampling backend, ``"auto"``, ``"pytorch"`` or ``"compiled"`` (see
            :func:`select_backend`).
    """

    def __init__(self, d_model=256, n_levels=4, n_heads=8, n_points=4, *, impl: str = "auto"):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        _check_impl(impl)
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.impl = impl
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias = nn.Parameter(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}, impl={self.impl!r}"
        )

    def forward(
        self,
        query,
        reference_points,
        input_flatten,
        input_spatial_shapes,
        input_level_start_index,
        input_padding_mask=None,
    ):
        """
        Args:
            query: ``[N, Lq, C]``.
            reference_points: ``[N, Lq, L, 2]``, (x, y) in [0, 1]; float32 or wider (used in
                float32 at least, whatever the dtype of the query).
            input_flatten: ``[N, S, C]``, the levels flattened row-major and concatenated.
            input_spatial_shapes: ``[L, 2]`` int64, (H_l, W_l).
            input_level_start_index: ``[L]`` int64, first token of each level (the compiled
                op's indexing; None computes it).
            input_padding_mask: optional ``[N, S]`` bool, True where padded.

        Returns:
            ``[N, Lq, C]``.
        """
        n, num_queries, _ = query.shape
        _, num_tokens, _ = input_flatten.shape
        expected = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
        if expected != num_tokens:
            raise ValueError(
                f"spatial shapes {input_spatial_shapes.tolist()} give {expected} tokens, "
                f"input has {num_tokens}"
            )
        if reference_points.shape[-1] != 2:
            raise ValueError("reference_points must be (x, y) points, last dimension 2")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, num_tokens, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(
            n, num_queries, self.n_heads, self.n_levels * self.n_points
        )
        # A half-precision model keeps the softmax and the locations in float32: a bfloat16
        # location is only good to 1/256 of a map. The op takes them next to a half value.
        coord_dtype = torch.promote_types(query.dtype, torch.float32)
        weights = weights.softmax(-1, dtype=coord_dtype).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points
        )
        normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
        locations = (
            reference_points.to(coord_dtype)[:, :, None, :, None, :]
            + offsets.to(coord_dtype) / normalizer[None, None, None, :, None, :]
        )
        output = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations,
            weights,
            impl=self.impl,
        )
        return self.output_proj(output)
