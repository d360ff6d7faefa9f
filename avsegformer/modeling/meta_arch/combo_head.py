"""COMBO's head: pixel decoder -> audio-visual fusion of the mask features -> audio MLP ->
masked-attention transformer decoder (the original ``MaskFormerHead`` with "late" fusion)."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..fusion import AudioMLP, AudioVisualFusion
from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder

__all__ = ["COMBOHead"]

#: Key under which the fusion receives the mask features (the original fuses "res2").
MASK_FEATURE_KEY = "res2"
#: Values of MODEL.COMBO.QUERY_AUDIO: which frame's audio each decoder query gets.
QUERY_AUDIO_MODES = ("batch", "clip", "frame")


@SEM_SEG_HEADS_REGISTRY.register()
class COMBOHead(nn.Module):
    """Everything after the (fused) backbone features, under the original's module names:
    ``pixel_decoder``, ``fusion_module``, ``audio_transformation`` and ``predictor``.

    The pixel decoder runs in float32, also under autocast (its ``forward_multi_scale``).
    """

    @configurable
    def __init__(
        self,
        *,
        pixel_decoder: nn.Module,
        fusion_module: nn.Module,
        audio_transformation: nn.Module,
        predictor: nn.Module,
        query_audio_per_clip: bool = False,
    ):
        """
        Args:
            pixel_decoder: with ``forward_multi_scale(features)`` -> ``(mask_features, _,
                multi_scale_features)``.
            fusion_module: ``({"res2": mask_features}, audio [N, 1, A]) -> (fused, audio')``.
            audio_transformation: ``[N, 1, A] -> [N, 1, C]``, the audio added to the queries.
            predictor: ``(multi_scale_features, audio [N, 1, C], mask_features,
                clip_lengths=None) -> outputs``.
            query_audio_per_clip: pass the clip lengths to the predictor, which then arranges
                the queries' audio within each clip instead of over the batch.
        """
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.fusion_module = fusion_module
        self.audio_transformation = audio_transformation
        self.predictor = predictor
        self.query_audio_per_clip = query_audio_per_clip

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        m, c, h = cfg.MODEL.MASK_FORMER, cfg.MODEL.COMBO, cfg.MODEL.SEM_SEG_HEAD
        if c.QUERY_AUDIO not in QUERY_AUDIO_MODES:
            raise ValueError(
                f"MODEL.COMBO.QUERY_AUDIO must be one of {QUERY_AUDIO_MODES}, got {c.QUERY_AUDIO!r}"
            )
        mask_dim = h.MASK_DIM or h.CONVS_DIM
        return {
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "fusion_module": AudioVisualFusion(
                fusion_type=c.FUSION_TYPE,
                feature_names=(MASK_FEATURE_KEY,),
                visual_dim=mask_dim,
                audio_dim=cfg.MODEL.AUDIO.OUT_DIM,
                num_heads=c.FUSION_NHEADS,
                dropout=c.FUSION_DROPOUT,
                init_values=c.FUSION_INIT_VALUES,
            ),
            "audio_transformation": AudioMLP(
                in_dim=cfg.MODEL.AUDIO.OUT_DIM, hidden_dim=c.AUDIO_MLP_DIM, out_dim=m.HIDDEN_DIM
            ),
            "predictor": build_transformer_decoder(
                m.TRANSFORMER_DECODER_NAME,
                num_classes=h.NUM_CLASSES,
                in_channels=h.CONVS_DIM,
                hidden_dim=m.HIDDEN_DIM,
                num_queries=m.NUM_OBJECT_QUERIES,
                num_heads=m.NHEADS,
                dim_feedforward=m.DIM_FEEDFORWARD,
                num_layers=m.DEC_LAYERS - 1,
                mask_dim=mask_dim,
                num_feature_levels=len(h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
                enforce_input_project=m.ENFORCE_INPUT_PROJ,
                per_frame_query_audio=c.QUERY_AUDIO == "frame",
                checkpoint_activations=cfg.MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER,
            ),
            "query_audio_per_clip": c.QUERY_AUDIO == "clip",
        }

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        audio: torch.Tensor,
        clip_lengths: List[int] | None = None,
    ) -> dict:
        """
        Args:
            features: backbone features ``{name: [N, C_i, H_i, W_i]}``.
            audio: ``[N, 1, A]``, one audio embedding per frame.
            clip_lengths: frames per clip, in batch order (used with ``query_audio_per_clip``).

        Returns:
            The predictor's outputs: ``pred_logits`` ``[N, Q, K + 1]``, ``pred_masks``
            ``[N, Q, H/4, W/4]``, ``aux_outputs``, ``intermediate_mask_logits``.
        """
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_multi_scale(features)
        fused, audio = self.fusion_module({MASK_FEATURE_KEY: mask_features}, audio)
        query_audio = self.audio_transformation(audio)
        if not self.query_audio_per_clip:
            clip_lengths = None
        elif clip_lengths is None:
            raise ValueError("COMBOHead: MODEL.COMBO.QUERY_AUDIO 'clip' needs the clip lengths")
        return self.predictor(
            multi_scale_features, query_audio, fused[MASK_FEATURE_KEY], clip_lengths=clip_lengths
        )
