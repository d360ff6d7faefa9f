"""CATR's temporal encoder: self-attention per frame, then video <-> audio multiplicative
cross-attention over whole clips, then the block gate."""

import functools

import torch
from torch import nn

from ..activation_checkpointing import checkpointed
from .block_gate import BlockGate
from .fusion import MultiplicativeCrossAttention
from .spatial_encoder import EncoderLayer

__all__ = ["TemporalEncoder", "TemporalEncoderLayer"]


def frames_to_clips(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[(h w), (t b), C] -> [(t h w), b, C]``: one sequence per clip, frame-major."""
    hw, n, c = tokens.shape
    clips = n // num_frames
    return tokens.view(hw, num_frames, clips, c).transpose(0, 1).reshape(-1, clips, c)


def clips_to_frames(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[(t h w), b, C] -> [(h w), (t b), C]``, the inverse of :func:`frames_to_clips`."""
    thw, b, c = tokens.shape
    return (
        tokens.view(num_frames, thw // num_frames, b, c)
        .transpose(0, 1)
        .reshape(-1, num_frames * b, c)
    )


class TemporalEncoderLayer(EncoderLayer):
    """:class:`EncoderLayer` per frame, then a clip-level cross-modal update.

    With ``V`` the clip's video tokens ``[(T h w), B, C]`` and ``A`` the audio tokens of the
    clip's **first** frame ``[T_a, B, C]`` (the released layer pairs the list of frames with
    the list of clips, which keeps frame 0 of every clip in (t b) order):

    * ``V <- av_atten(V, A)`` (audio without positional encoding),
    * ``A <- va_atten(A, V + pos)`` on the updated ``V``,

    both :class:`MultiplicativeCrossAttention`. The next layer's input is the updated ``V`` per
    frame followed by the updated ``A``, the same for every frame of a clip. The last layer's
    audio update feeds nothing, so it is only built with ``update_audio=True``.

    With ``own_frame_audio`` (not the released behaviour) every frame keeps its own audio
    tokens ``A_t`` (its copy after its self-attention): ``V_t <- av_atten(V_t, A_t)`` and
    ``A_t <- va_atten(A_t, V + pos)`` over the whole clip's updated video, and the next layer
    gets each frame's own ``A_t``.

    Other keyword arguments: those of :class:`EncoderLayer`; ``unused_conv``: see
    :class:`MultiplicativeCrossAttention`.
    """

    def __init__(
        self,
        d_model: int,
        nheads: int,
        *,
        update_audio: bool = True,
        own_frame_audio: bool = False,
        unused_conv: tuple[int, int] | None = None,
        **kwargs,
    ):
        super().__init__(d_model, nheads, **kwargs)
        cross = {"unused_conv": unused_conv}
        self.av_atten = MultiplicativeCrossAttention(d_model, nheads, **cross)
        self.va_atten = (
            MultiplicativeCrossAttention(d_model, nheads, **cross) if update_audio else None
        )
        self.own_frame_audio = own_frame_audio

    def forward(
        self,
        src: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        pos: torch.Tensor,
        *,
        num_frames: int,
        num_video_tokens: int,
        clip_video_pos: torch.Tensor,
        clip_video_pad: torch.Tensor | None,
        audio_pad: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            src: ``[h*w + T_a, T*B, C]`` tokens of every frame, frames in (t b) order.
            key_padding_mask: ``[T*B, h*w + T_a]`` bool, True at padding.
            pos: ``[h*w + T_a, T*B, C]`` (zero for audio tokens).
            num_frames: T.
            num_video_tokens: h*w.
            clip_video_pos: ``[(T h w), B, C]`` the video positions per clip.
            clip_video_pad: ``[B, T*h*w]`` bool or None.
            audio_pad: ``[B, T_a]`` bool or None.

        Returns:
            ``(video tokens [h*w, T*B, C], next layer's input [h*w + T_a, T*B, C] or None)``.
        """
        memory = super().forward(src, key_padding_mask, pos)
        video, audio = memory[:num_video_tokens], memory[num_video_tokens:]
        if self.own_frame_audio:
            frame_audio_pad = None if audio_pad is None else audio_pad.repeat(num_frames, 1)
            video_tokens = self.av_atten(video, audio, frame_audio_pad)
            clip_video = frames_to_clips(video_tokens, num_frames)
        else:
            audio = audio[:, : memory.shape[1] // num_frames]  # frame 0 of every clip
            clip_video = self.av_atten(frames_to_clips(video, num_frames), audio, audio_pad)
            video_tokens = clips_to_frames(clip_video, num_frames)
        if self.va_atten is None:
            return video_tokens, None
        if self.own_frame_audio:
            # Each frame's audio tokens are queries of their own: all of a clip attend at once.
            queries = frames_to_clips(audio, num_frames)
            audio = self.va_atten(queries, clip_video, clip_video_pad, clip_video_pos)
            audio = clips_to_frames(audio, num_frames)
        else:
            audio = self.va_atten(audio, clip_video, clip_video_pad, clip_video_pos)
            audio = audio.repeat(1, num_frames, 1)
        return video_tokens, torch.cat((video_tokens, audio))


class TemporalEncoder(BlockGate):
    """Three :class:`TemporalEncoderLayer` from the encoder input, combined by the block gate.

    The gate's convolutions are attributes of this module (``attention_feature``,
    ``output1``, ``output2``), beside ``layers``, as in the released checkpoints.

    Shapes: encoder input ``[h*w + T_a, T*B, C]`` -> video memory ``[T*B, C, h, w]``.

    Args:
        num_layers: 3 (the gate's inputs).
        d_model, nheads: C and the attention heads.
        checkpoint_activations: in training, every layer keeps only its inputs for the
            backward pass.
        gate_norm, g2_from_layers: see :class:`BlockGate`.
        released_unused: None: what the release builds or computes without any output
            depending on it is left out. ``(in, out)``: it is built, so that a released
            checkpoint loads with every key (this module's own ``av_atten`` / ``va_atten``, the
            last layer's ``va_atten``, a 1x1 conv with these channels in every cross-attention,
            released ``(5, 15680)``), and what the release runs is computed (the last layer's
            audio update, the gate's discarded convolution).
        layer_kwargs: those of :class:`TemporalEncoderLayer` (e.g. ``own_frame_audio``).
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        nheads: int,
        *,
        checkpoint_activations: bool = False,
        gate_norm: str = "BN",
        g2_from_layers: bool = False,
        released_unused: tuple[int, int] | None = None,
        **layer_kwargs,
    ):
        strict = released_unused is not None
        super().__init__(
            d_model, norm=gate_norm, g2_from_layers=g2_from_layers, compute_discarded=strict
        )
        self.checkpoint_activations = checkpoint_activations
        if num_layers != self.num_inputs:
            raise ValueError(
                f"the CATR block gate combines exactly {self.num_inputs} temporal encoder layers, "
                f"got MODEL.CATR.NUM_ENCODER_LAYERS={num_layers}"
            )
        self.layers = nn.ModuleList(
            TemporalEncoderLayer(
                d_model,
                nheads,
                update_audio=strict or i < num_layers - 1,
                unused_conv=released_unused,
                **layer_kwargs,
            )
            for i in range(num_layers)
        )
        if strict:  # never called in the release
            self.av_atten = MultiplicativeCrossAttention(
                d_model, nheads, unused_conv=released_unused
            )
            self.va_atten = MultiplicativeCrossAttention(
                d_model, nheads, unused_conv=released_unused
            )

    def layer_outputs(self, src, key_padding_mask, pos, **kwargs) -> list[torch.Tensor]:
        """The video tokens ``[h*w, T*B, C]`` after each layer (keyword arguments: those of
        :meth:`TemporalEncoderLayer.forward`)."""
        outputs = []
        for layer in self.layers:
            video_tokens, src = checkpointed(
                functools.partial(layer, **kwargs),
                src,
                key_padding_mask,
                pos,
                enabled=self.checkpoint_activations,
                module=layer,
            )
            outputs.append(video_tokens)
        return outputs

    def forward(self, src, key_padding_mask, pos, *, height: int, width: int, **kwargs):
        """The video memory ``[T*B, C, h, w]`` (keyword arguments: those of
        :meth:`TemporalEncoderLayer.forward`, plus the token grid ``height`` x ``width``)."""
        tokens = self.layer_outputs(src, key_padding_mask, pos, **kwargs)
        n, c = tokens[0].shape[1:]
        maps = [t.permute(1, 2, 0).reshape(n, c, height, width) for t in tokens]
        return self.combine(maps)
