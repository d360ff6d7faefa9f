"""Post-norm layers of the masked-attention decoder and the small MLP of its mask head.

All layers are batch-first: queries ``[N, Q, C]``, memory ``[N, S, C]``. Their parameter names
(``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm``, ``layers.i``) are
Mask2Former's, so Mask2Former-family checkpoints map onto them by prefix only.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "CrossAttentionLayer", "FFNLayer", "SelfAttentionLayer"]


def _xavier_init_matrices(module: nn.Module) -> None:
    """Xavier-uniform for every parameter with two or more dims (Mask2Former's layer init);
    biases keep their defaults (zero for attention, PyTorch's for linear layers), LayerNorm (1, 0)."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class SelfAttentionLayer(nn.Module):
    """``x = LN(x + MHA(q = k = x + query_pos, v = x))`` over the queries of each frame."""

    def __init__(self, *, dim: int = 256, num_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        _xavier_init_matrices(self)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]``.
            query_pos: ``[N or 1, Q, C]`` positional embedding of the queries.

        Returns:
            ``[N, Q, C]``.
        """
        query_key = queries + query_pos
        attended = self.self_attn(query_key, query_key, queries, need_weights=False)[0]
        return self.norm(queries + self.dropout(attended))


class CrossAttentionLayer(nn.Module):
    """``x = LN(x + MHA(q = x + query_pos, k = memory + memory_pos, v = memory, mask))``."""

    def __init__(self, *, dim: int = 256, num_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(
            dim, num_heads, dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        _xavier_init_matrices(self)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        *,
        memory_mask: torch.Tensor | None,
        memory_pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            queries: ``[N, Q, C]``.
            memory: ``[N, S, C]`` tokens of one feature level.
            memory_mask: bool ``[N * num_heads, Q, S]``, True where a query may NOT attend
                (no row may be all True), or None.
            memory_pos: ``[N or 1, S, C]`` positional embedding of the memory.
            query_pos: ``[N or 1, Q, C]``.

        Returns:
            ``[N, Q, C]``.
        """
        attended = self.multihead_attn(
            queries + query_pos,
            memory + memory_pos,
            memory,
            attn_mask=memory_mask,
            need_weights=False,
        )[0]
        return self.norm(queries + self.dropout(attended))


class FFNLayer(nn.Module):
    """``x = LN(x + W2 ReLU(W1 x))``."""

    def __init__(self, *, dim: int = 256, dim_feedforward: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm = nn.LayerNorm(dim)
        _xavier_init_matrices(self)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """``[N, Q, C]`` -> ``[N, Q, C]``."""
        hidden = self.linear2(self.dropout(F.relu(self.linear1(queries))))
        return self.norm(queries + self.dropout(hidden))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
