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
    """

    def __init__(self, d_model: int, nheads: int, *, update_audio: bool = True, **kwargs):
        super().__init__(d_model, nheads, **kwargs)
        self.av_atten = MultiplicativeCrossAttention(d_model, nheads)
        self.va_atten = MultiplicativeCrossAttention(d_model, nheads) if update_audio else None

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
        clips = memory.shape[1] // num_frames
        video = frames_to_clips(memory[:num_video_tokens], num_frames)
        audio = memory[num_video_tokens:, :clips]  # frame 0 of every clip
        video = self.av_atten(video, audio, audio_pad)
        video_tokens = clips_to_frames(video, num_frames)
        if self.va_atten is None:
            return video_tokens, None
        audio = self.va_atten(audio, video, clip_video_pad, clip_video_pos)
        return video_tokens, torch.cat((video_tokens, audio.repeat(1, num_frames, 1)))


class TemporalEncoder(BlockGate):
    """Three :class:`TemporalEncoderLayer` from the encoder input, combined by the block gate.

    The gate's convolutions are attributes of this module (``attention_feature``,
    ``output1``, ``output2``), beside ``layers``, as in the released checkpoints.

    With ``checkpoint_activations`` every layer keeps only its inputs for the backward pass in
    training.

    Shapes: encoder input ``[h*w + T_a, T*B, C]`` -> video memory ``[T*B, C, h, w]``.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        nheads: int,
        *,
        checkpoint_activations: bool = False,
        **layer_kwargs,
    ):
        super().__init__(d_model)
        self.checkpoint_activations = checkpoint_activations
        if num_layers != self.num_inputs:
            raise ValueError(
                f"the CATR block gate combines exactly {self.num_inputs} temporal encoder layers, "
                f"got MODEL.CATR.NUM_ENCODER_LAYERS={num_layers}"
            )
        self.layers = nn.ModuleList(
            TemporalEncoderLayer(d_model, nheads, update_audio=i < num_layers - 1, **layer_kwargs)
            for i in range(num_layers)
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
