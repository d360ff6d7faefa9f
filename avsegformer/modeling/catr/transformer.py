"""CATR's audio-video transformer: audio projection, sine positions, the spatial and temporal
encoders (both from the same input) and the query decoder."""

import torch
from torch import nn

from ..transformer.position_encoding import PositionEmbeddingSine
from .decoder import QueryDecoder
from .spatial_encoder import SpatialEncoder
from .temporal_encoder import TemporalEncoder, frames_to_clips

__all__ = ["AudioProjection", "CATRTransformer", "build_catr_transformer"]


class AudioProjection(nn.Module):
    """``Linear -> LayerNorm(eps 1e-12) -> Dropout``: VGGish embeddings to audio tokens."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.layer_norm = nn.LayerNorm(out_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.fc(x)))


class CATRTransformer(nn.Module):
    """The decoupled audio-video transformer of CATR.

    Every frame's tokens are its ``h*w`` video tokens followed by the ``T_a`` audio tokens of
    its clip (all time steps: each frame sees the whole clip's audio). The spatial encoder runs
    on them per frame and the decoder's queries attend to its output; the temporal encoder
    starts again from the same tokens and its block-gated video memory feeds the mask branch.
    Video tokens get normalised sine positions, audio tokens none.

    Frames are in (t b) order (index ``t * B + b``), audio embeddings in (b t) order.
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        nheads: int = 8,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        audio_dim: int = 128,
        checkpoint_activations: bool = False,
        own_frame_audio: bool = False,
        gate_norm: str = "BN",
        g2_from_layers: bool = False,
        released_unused: tuple[int, int] | None = None,
    ):
        """
        Args:
            d_model, nheads, dim_feedforward, dropout, activation: every layer's sizes.
            num_encoder_layers: of the spatial and of the temporal encoder (3: the block gate).
            num_decoder_layers: L.
            audio_dim: A, the audio embeddings' width.
            checkpoint_activations: in training, every encoder and decoder layer keeps only
                its inputs for the backward pass and recomputes the rest there.
            own_frame_audio: see :class:`TemporalEncoderLayer`.
            gate_norm, g2_from_layers, released_unused: see :class:`TemporalEncoder`.
        """
        super().__init__()
        layer = {
            "nheads": nheads,
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
            "activation": activation,
        }
        ckpt = {"checkpoint_activations": checkpoint_activations}
        self.spatial_encoder = SpatialEncoder(num_encoder_layers, d_model=d_model, **ckpt, **layer)
        self.temporal_encoder = TemporalEncoder(
            num_encoder_layers,
            d_model,
            own_frame_audio=own_frame_audio,
            gate_norm=gate_norm,
            g2_from_layers=g2_from_layers,
            released_unused=released_unused,
            **ckpt,
            **layer,
        )
        self.decoder = QueryDecoder(num_decoder_layers, d_model, **ckpt, **layer)
        # The released initialisation: xavier on every matrix and kernel, the gate included,
        # before the audio projection exists (it keeps PyTorch's defaults).
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.audio_proj = AudioProjection(audio_dim, d_model, dropout)
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=d_model // 2, normalize=True)
        self.d_model = d_model

    def video_positions(self, vid_pad_mask: torch.Tensor | None, n, h, w, device) -> torch.Tensor:
        """``[N, C, h, w]`` float32 sine positions of the video tokens."""
        probe = torch.empty(1, 1, h, w, device=device)  # only its size and device are read
        mask = None if vid_pad_mask is None else vid_pad_mask.flatten(0, 1)
        return self.position_encoding(probe, mask).expand(n, -1, -1, -1)

    def forward(
        self,
        vid_embeds: torch.Tensor,
        vid_pad_mask: torch.Tensor | None,
        audio_feature: torch.Tensor,
        audio_pad: torch.Tensor | None,
        obj_queries: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            vid_embeds: ``[T, B, C, h, w]`` projected video features.
            vid_pad_mask: ``[T, B, h, w]`` bool (True at padding) or None (no padding).
            audio_feature: ``[B*T_a, A]`` audio embeddings in (b t) order.
            audio_pad: ``[B, T_a]`` bool or None.
            obj_queries: ``[Q, C]`` query positional embeddings (the decoder input is zero).

        Returns:
            ``hs`` ``[L, T, B, Q, C]`` (every decoder layer, normalised) and the video memory
            ``[T*B, C, h, w]``.
        """
        t, b, c, h, w = vid_embeds.shape
        n, hw = t * b, h * w
        if audio_feature.shape[0] % b:
            raise ValueError(
                f"{audio_feature.shape[0]} audio embeddings do not split into {b} clips"
            )
        audio = audio_feature.reshape(b, -1, audio_feature.shape[-1]).transpose(0, 1)
        audio = self.audio_proj(audio).repeat(1, t, 1)  # [T_a, T*B, C]: clip b for frame (t, b)
        video = vid_embeds.flatten(0, 1).flatten(2).permute(2, 0, 1)  # [h*w, T*B, C]
        src = torch.cat((video, audio))

        key_padding_mask = video_pad = None
        if vid_pad_mask is not None or audio_pad is not None:
            video_pad = (
                vid_pad_mask.reshape(n, hw)
                if vid_pad_mask is not None
                else vid_embeds.new_zeros(n, hw, dtype=torch.bool)
            )
            audio_pad_frames = (
                audio_pad.repeat(t, 1)
                if audio_pad is not None
                else vid_embeds.new_zeros(n, audio.shape[0], dtype=torch.bool)
            )
            key_padding_mask = torch.cat((video_pad, audio_pad_frames), 1)
        video_pos = self.video_positions(vid_pad_mask, n, h, w, vid_embeds.device)
        video_pos = video_pos.flatten(2).permute(2, 0, 1).to(src.dtype)  # [h*w, T*B, C]
        pos = torch.cat((video_pos, torch.zeros_like(audio)))

        memory = self.spatial_encoder(src, key_padding_mask, pos)
        vid_memory = self.temporal_encoder(
            src,
            key_padding_mask,
            pos,
            height=h,
            width=w,
            num_frames=t,
            num_video_tokens=hw,
            clip_video_pos=frames_to_clips(video_pos, t),
            clip_video_pad=(
                None
                if video_pad is None
                else video_pad.view(t, b, hw).transpose(0, 1).reshape(b, t * hw)
            ),
            audio_pad=audio_pad,
        )
        query_pos = obj_queries.unsqueeze(1).expand(-1, n, -1)
        hs = self.decoder(
            torch.zeros_like(query_pos), memory, key_padding_mask, pos, query_pos
        )  # [L, Q, T*B, C]
        hs = hs.view(hs.shape[0], hs.shape[1], t, b, c).permute(0, 2, 3, 1, 4)
        return hs, vid_memory


def build_catr_transformer(cfg, released_unused: tuple[int, int] | None = None) -> CATRTransformer:
    """:class:`CATRTransformer` from ``MODEL.CATR`` (and the transformer's activation
    checkpointing switch); ``released_unused``: see :class:`TemporalEncoder`."""
    c = cfg.MODEL.CATR
    return CATRTransformer(
        d_model=c.D_MODEL,
        nheads=c.NHEADS,
        num_encoder_layers=c.NUM_ENCODER_LAYERS,
        num_decoder_layers=c.NUM_DECODER_LAYERS,
        dim_feedforward=c.DIM_FEEDFORWARD,
        dropout=c.DROPOUT,
        activation=c.ACTIVATION,
        audio_dim=cfg.MODEL.AUDIO.OUT_DIM,
        checkpoint_activations=cfg.MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER,
        own_frame_audio=c.TEMPORAL_OWN_FRAME_AUDIO,
        gate_norm=c.GATE_NORM,
        g2_from_layers=c.GATE_G2_FROM_LAYERS,
        released_unused=released_unused,
    )
