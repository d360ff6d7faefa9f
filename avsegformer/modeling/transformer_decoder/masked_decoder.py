"""Mask2Former's multi-scale masked-attention decoder with audio added to its queries (COMBO)."""

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from ..activation_checkpointing import checkpointed
from ..transformer.position_encoding import PositionEmbeddingSine
from .build import TRANSFORMER_DECODER_REGISTRY
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer

__all__ = ["MultiScaleMaskedTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable queries (plus the frame audio) refined by masked cross-attention, one feature
    level per layer, cycling from the coarsest level to the finest.

    Before the first layer and after every layer the prediction heads run on ``LN(queries)``:
    class logits ``[N, Q, K + 1]`` and mask logits ``einsum(MLP(queries), mask_features)``
    ``[N, Q, H, W]``. The mask logits, resized bilinearly to the next layer's level, give that
    layer's cross-attention mask: a query attends only where its sigmoid is >= 0.5, or everywhere
    if that would leave it nothing. Layers are post-norm (cross-attention, self-attention, FFN).

    Audio reaches the queries by addition. COMBO tiles the audio ``[N, 1, C]`` to ``[N, Q, C]``
    and reads that buffer row-major as its sequence-first ``[Q, N, C]`` query layout, so query
    ``q`` of frame ``n`` receives the audio of frame ``(q * N + n) // Q`` of the *batch*: the
    queries of one frame carry the audio of several frames (of other clips, too, when the
    batch holds more than one). That is reproduced by default; ``per_frame_query_audio=True``
    gives every query of frame ``n`` the audio of frame ``n``, and ``clip_lengths`` passed to
    :meth:`forward` applies COMBO's arrangement within each clip (as COMBO for one clip per
    batch, whatever else the batch holds).

    Parameter names are those of COMBO's ``sem_seg_head.predictor`` (Mask2Former's): one
    ``transformer_{self,cross}_attention_layers.i`` / ``transformer_ffn_layers.i`` per layer,
    ``decoder_norm``, ``query_feat``, ``query_embed``, ``level_embed``, ``class_embed`` and
    ``mask_embed.layers.{0,1,2}``; ``input_proj.i`` only when it is a convolution.

    With ``checkpoint_activations`` each layer (cross-attention, self-attention, FFN) keeps only
    its inputs in training and recomputes its activations in the backward pass; the prediction
    heads, whose mask logits the losses keep anyway, are not recomputed.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 9,
        mask_dim: int = 256,
        num_feature_levels: int = 3,
        enforce_input_project: bool = False,
        per_frame_query_audio: bool = False,
        return_intermediate_mask_logits: bool = True,
        checkpoint_activations: bool = False,
    ):
        """
        Args:
            num_classes: K (2 for S4/MS3, 71 for AVSS); the class head predicts K + 1 logits,
                the last one "no object".
            in_channels: channels of the multi-scale features; a 1x1 projection to
                ``hidden_dim`` is built only when they differ (or ``enforce_input_project``).
            hidden_dim: query width; the audio embedding must have this width too.
            num_queries: Q.
            num_heads: attention heads of every layer.
            dim_feedforward: FFN width.
            num_layers: decoder layers (Mask2Former's ``DEC_LAYERS - 1``; COMBO: 9).
            mask_dim: channels of the mask features (output width of the mask MLP).
            num_feature_levels: multi-scale levels the layers cycle through.
            enforce_input_project: build the 1x1 projections even when the widths agree.
            per_frame_query_audio: give each frame's queries that frame's audio instead of
                COMBO's batch-order arrangement (see the class docstring).
            return_intermediate_mask_logits: also return the earlier mask predictions
                flattened (``intermediate_mask_logits``), which COMBO's cosine loss reads.
            checkpoint_activations: activation checkpointing of every layer in training
                (``MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER``).
        """
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.per_frame_query_audio = per_frame_query_audio
        self.return_intermediate_mask_logits = return_intermediate_mask_logits
        self.checkpoint_activations = checkpoint_activations

        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim=hidden_dim, num_heads=num_heads) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim=hidden_dim, num_heads=num_heads) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim=hidden_dim, dim_feedforward=dim_feedforward) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                projection = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(projection)
                self.input_proj.append(projection)
            else:
                self.input_proj.append(nn.Identity())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def query_audio(
        self, audio_features: torch.Tensor, clip_lengths: list[int] | None = None
    ) -> torch.Tensor:
        """The audio term added to the initial queries.

        Args:
            audio_features: ``[N, 1, C]`` or ``[N, C]``, one embedding per frame.
            clip_lengths: frames per clip (summing to N): COMBO's arrangement is then applied
                within each clip instead of over the whole batch.

        Returns:
            ``[N, Q, C]``: per frame ``n`` and query ``q`` the audio of frame ``n``
            (``per_frame_query_audio``) or of frame ``(q * N + n) // Q`` (COMBO; N and n
            counted within the clip with ``clip_lengths``).
        """
        if clip_lengths is not None and not self.per_frame_query_audio:
            if sum(clip_lengths) != audio_features.shape[0]:
                raise ValueError(
                    f"clip_lengths {list(clip_lengths)} do not add up to the "
                    f"{audio_features.shape[0]} frames of the audio"
                )
            return torch.cat(
                [self.query_audio(clip) for clip in audio_features.split(list(clip_lengths))]
            )
        if audio_features.dim() == 3 and audio_features.shape[1] == 1:
            audio_features = audio_features[:, 0]
        if audio_features.dim() != 2 or audio_features.shape[1] != self.query_feat.embedding_dim:
            raise ValueError(
                "audio_features must be [N, 1, C] or [N, C] with C = "
                f"{self.query_feat.embedding_dim}, got {tuple(audio_features.shape)}"
            )
        num_frames, dim = audio_features.shape
        tiled = audio_features[:, None, :].expand(num_frames, self.num_queries, dim)
        if self.per_frame_query_audio:
            return tiled
        # COMBO reads the [N, Q, C] tiling as its [Q, N, C] query layout without transposing.
        return tiled.reshape(self.num_queries, num_frames, dim).transpose(0, 1)

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        audio_features: torch.Tensor,
        mask_features: torch.Tensor,
        clip_lengths: list[int] | None = None,
    ) -> dict:
        """
        Args:
            multi_scale_features: ``num_feature_levels`` maps ``[N, in_channels, h_l, w_l]``,
                coarsest first (the order the pixel decoder returns them).
            audio_features: ``[N, 1, hidden_dim]`` (or ``[N, hidden_dim]``) per-frame audio.
            mask_features: ``[N, mask_dim, H, W]``.
            clip_lengths: see :meth:`query_audio` (None: COMBO's batch-wide arrangement).

        Returns:
            ``pred_logits`` ``[N, Q, K + 1]`` and ``pred_masks`` ``[N, Q, H, W]`` of the last
            layer; ``aux_outputs``: the ``num_layers`` earlier predictions (before the first
            layer, then after each layer but the last) as ``{"pred_logits", "pred_masks"}``
            dicts; with ``return_intermediate_mask_logits`` also ``intermediate_mask_logits``,
            the same earlier mask logits as ``[N, Q, H * W]``.
        """
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels, "
                f"got {len(multi_scale_features)}"
            )
        num_frames = mask_features.shape[0]
        memories, memory_pos, level_sizes = [], [], []
        for level, feature in enumerate(multi_scale_features):
            level_sizes.append(tuple(feature.shape[-2:]))
            memory_pos.append(self.pe_layer(feature).flatten(2).transpose(1, 2))
            memory = self.input_proj[level](feature).flatten(2).transpose(1, 2)
            memories.append(memory + self.level_embed.weight[level])

        query_pos = self.query_embed.weight.unsqueeze(0).expand(num_frames, -1, -1)
        queries = self.query_feat.weight.unsqueeze(0) + self.query_audio(
            audio_features, clip_lengths
        )

        class_logits, mask_logits = [], []
        logits, masks, attn_mask = self._predict(queries, mask_features, level_sizes[0])
        class_logits.append(logits)
        mask_logits.append(masks)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # A query whose mask covers no pixel of this level attends to all of them.
            attn_mask = attn_mask & ~attn_mask.all(dim=-1, keepdim=True)
            queries = checkpointed(
                self._layer,
                i,
                queries,
                memories[level],
                attn_mask,
                memory_pos[level],
                query_pos,
                enabled=self.checkpoint_activations,
                module=self,
            )
            next_size = level_sizes[(i + 1) % self.num_feature_levels]
            logits, masks, attn_mask = self._predict(queries, mask_features, next_size)
            class_logits.append(logits)
            mask_logits.append(masks)

        out = {
            "pred_logits": class_logits[-1],
            "pred_masks": mask_logits[-1],
            "aux_outputs": [
                {"pred_logits": c, "pred_masks": m}
                for c, m in zip(class_logits[:-1], mask_logits[:-1])
            ],
        }
        if self.return_intermediate_mask_logits:
            out["intermediate_mask_logits"] = [m.flatten(2) for m in mask_logits[:-1]]
        return out

    def _layer(
        self,
        index: int,
        queries: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: torch.Tensor,
        memory_pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """Layer ``index``: masked cross-attention to ``memory`` ``[N, S, C]``, self-attention
        and FFN on ``queries`` ``[N, Q, C]``; returns ``[N, Q, C]``."""
        queries = self.transformer_cross_attention_layers[index](
            queries, memory, memory_mask=attn_mask, memory_pos=memory_pos, query_pos=query_pos
        )
        queries = self.transformer_self_attention_layers[index](queries, query_pos)
        return self.transformer_ffn_layers[index](queries)

    def _predict(
        self, queries: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prediction heads on ``queries`` ``[N, Q, C]``.

        Returns:
            class logits ``[N, Q, K + 1]``, mask logits ``[N, Q, H, W]`` and the next layer's
            attention mask, bool ``[N * num_heads, Q, h * w]`` at ``attn_size = (h, w)``, True
            where the resized mask's sigmoid is below 0.5 (not allowed to attend).
        """
        decoded = self.decoder_norm(queries)
        class_logits = self.class_embed(decoded)
        mask_logits = torch.einsum("nqc,nchw->nqhw", self.mask_embed(decoded), mask_features)
        resized = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        # The comparison is made on the float32 sigmoid, as COMBO does: at |logit| < ~3e-8 it
        # rounds to 0.5, which a `logit < 0` test would decide differently; a bfloat16 sigmoid
        # would round every |logit| < ~4e-3 to 0.5 and let those queries attend.
        attn_mask = resized.detach().float().sigmoid().flatten(2) < 0.5
        attn_mask = attn_mask.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return class_logits, mask_logits, attn_mask
