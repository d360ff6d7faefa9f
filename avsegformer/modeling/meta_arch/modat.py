"""The MoDAT meta-architecture (mixture of dual-attention transformer, jnjz/MoDAT) as a
Detectron2 model: AVSegFormer with another query generator and audio-visual mixer."""

from typing import List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ..modat_criterion import MoDATCriterion
from ..moe import DualAttentionMixer
from ..transformer import EncoderDecoderQueryGenerator
from .avsegformer import AVSegFormer

__all__ = ["MoDAT"]


@META_ARCH_REGISTRY.register()
class MoDAT(AVSegFormer):
    """MoDAT: AVSegFormer's backbones, pixel decoder, transformer decoder and prediction head,
    with

    * the query generator :class:`EncoderDecoderQueryGenerator`: the audio token first attends
      over each projected encoder level (three audio components), then generator layers over the
      components produce the queries;
    * the mixer :class:`DualAttentionMixer`: channel-expert and spatial-expert
      mixture-of-experts layers over the mask feature, driven by the mean audio component. Its
      balance loss is a training loss (``loss_balance``, see :class:`MoDATCriterion`).

    Input and output as :class:`AVSegFormer`. With the "random" second-expert policy (the
    original's, ``MODEL.MODAT.SECOND_POLICY_EVAL``) inference draws two ``[N, H/4 * W/4]``
    uniform tensors from the global torch generator per forward (channel layer first), N the
    frames of the batch. Padded frames therefore run too (on zero features, outputs zeroed), as
    in the original, so the draws cover the same frames.
    """

    runs_padded_frames = True
    #: Float32 in low-precision inference: the audio backbone (as AVSegFormer) and the routers
    #: of both mixture-of-experts layers (their weights exact; a bfloat16 router can flip
    #: expert choices).
    float32_modules = ("audio_backbone", "mixer.channel_attn.gate", "mixer.spatial_attn.gate")

    @configurable
    def __init__(self, *, balance_loss_all_frames: bool = True, **kwargs):
        """
        Args:
            balance_loss_all_frames: run the head on every frame in training, as the original
                (its balance loss averages over all frames), not only on the supervised ones.
            kwargs: :class:`AVSegFormer`'s arguments.
        """
        super().__init__(**kwargs)
        self.balance_loss_all_frames = balance_loss_all_frames

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        m, modat = cfg.MODEL.AVSEGFORMER, cfg.MODEL.MODAT
        args["criterion"] = MoDATCriterion(
            mask_loss=m.MASK_LOSS,
            mask_loss_weight=m.MASK_LOSS_WEIGHT,
            mix_loss_weight=m.MIX_LOSS_WEIGHT,
            empty_frame_weight=m.EMPTY_FRAME_LOSS_WEIGHT,
            double_main_loss=m.NUM_CLASSES > 1 and modat.AVSS_LOSS_AS_RELEASED,
        )
        args["balance_loss_all_frames"] = modat.BALANCE_LOSS_ALL_FRAMES
        return args

    @classmethod
    def build_query_generator(cls, cfg) -> nn.Module:
        m, modat = cfg.MODEL.AVSEGFORMER, cfg.MODEL.MODAT
        return EncoderDecoderQueryGenerator(
            num_queries=m.NUM_QUERIES,
            embed_dim=m.HIDDEN_DIM,
            num_layers=modat.GENERATOR_LAYERS,
            num_heads=m.QUERY_GENERATOR_NHEADS,
            hidden_dim=m.QUERY_GENERATOR_DIM_FEEDFORWARD,
            num_levels=len(cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
        )

    @classmethod
    def build_mixer(cls, cfg) -> nn.Module:
        modat = cfg.MODEL.MODAT
        return DualAttentionMixer(
            dim=cfg.MODEL.AVSEGFORMER.HIDDEN_DIM,
            num_experts=modat.NUM_EXPERTS,
            num_heads=modat.EXPERT_NHEADS,
            expert_dropout=modat.EXPERT_DROPOUT,
            loss_weight=modat.BALANCE_LOSS_WEIGHT,
            second_policy_train=modat.SECOND_POLICY_TRAIN,
            second_policy_eval=modat.SECOND_POLICY_EVAL,
            second_threshold_train=modat.SECOND_THRESHOLD,
            second_threshold_eval=modat.SECOND_THRESHOLD,
            capacity_factor_train=modat.CAPACITY_FACTOR_TRAIN,
            capacity_factor_eval=modat.CAPACITY_FACTOR_EVAL,
            min_capacity=modat.MIN_CAPACITY,
        )

    def training_frames(self, targets: torch.Tensor) -> torch.Tensor:
        if self.balance_loss_all_frames:
            return torch.arange(targets.shape[0], device=targets.device)
        return super().training_frames(targets)

    def generate_queries(self, audio_token: torch.Tensor, levels: List[torch.Tensor]):
        """Queries and the audio components ``[N, L, C]`` from the audio token and the levels."""
        return self.query_generator(audio_token, levels)

    def mix(self, mask_feature: torch.Tensor, audio_context: torch.Tensor):
        """The dual-attention mixer; its weighted balance loss is the auxiliary output."""
        mixed, balance_loss = self.mixer(mask_feature, audio_context)
        return mixed, {"balance_loss": balance_loss}
