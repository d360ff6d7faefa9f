"""The AVSegFormer meta-architecture (arXiv 2307.01146) as a Detectron2 model."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import nn

from ..activation_checkpointing import build_visual_backbone
from ..audio_backbone import DEFAULT_CACHE_SIZE, FrozenAudioEmbeddings, build_audio_backbone
from ..clip_io import (
    check_clip,
    frame_probabilities_per_clip,
    normalize_and_pad_frames,
    register_pixel_normalization,
    stack_frame_valid,
    stack_log_mel,
    stack_targets,
    supervised_frames,
)
from ..criterion import AVSegFormerCriterion
from ..mask_head import AVSegMaskHead
from ..pixel_decoder import build_pixel_decoder
from ..precision import outside_autocast
from ..transformer import AudioQueryGenerator, AVSTransformerDecoder, CrossModalMixer
from .head_init import init_head_parameters

__all__ = ["AVSegFormer"]


@META_ARCH_REGISTRY.register()
class AVSegFormer(nn.Module):
    """AVSegFormer: audio-conditioned queries decode a deformable-attention pixel decoder.

    Input: a list of clip dicts (the contract of :mod:`avsegformer.modeling.clip_io`:
    ``"frames"`` uint8 ``[T, 3, H, W]``, ``"log_mel"`` float32 ``[T, 96, 64]``, optional
    ``"height"``, ``"width"``, ``"frame_valid"`` bool ``[T]``, and ``"sem_seg"`` int64
    ``[T, H, W]`` for training). B clips run as B*T independent frames.

    Output: in training ``{"loss_mask", "loss_mix"}``; in inference one
    ``{"sem_seg": float32 [T, K, height, width]}`` per clip, the foreground probability (K = 1,
    sigmoid) or class probabilities (softmax). Padded frames (``frame_valid`` False) get zero
    backbone features, logits and mask feature, as in the original.

    Every frame is independent after the visual backbone, so the rest of the network only runs
    where its output matters: on annotated frames in training (1 of 5 on S4; the others have no
    loss, hence no gradient, in the original too) and on non-padded frames in inference. The
    backbone sees every frame in training, where its BatchNorm uses batch statistics.

    Attribute names follow the original checkpoints (see :mod:`avsegformer.checkpoint`).
    Subclasses swap the query generator and the mixer through :meth:`build_query_generator`,
    :meth:`build_mixer`, :meth:`generate_queries` and :meth:`mix`.

    :func:`~avsegformer.modeling.precision.apply_inference_precision` converts the model for
    bfloat16 inference (``TEST.PRECISION``); the sub-modules in :attr:`float32_modules` stay
    float32 and the probabilities are always computed from float32 logits.
    """

    #: Run the head on padded frames in inference too (on zero features, outputs zeroed).
    runs_padded_frames = False
    #: Sub-modules that stay float32 in low-precision inference: VGGish is cheap next to the
    #: visual path, and its embedding feeds every query.
    float32_modules = ("audio_backbone",)

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        audio_backbone: nn.Module,
        audio_proj: nn.Module,
        pixel_decoder: nn.Module,
        query_generator: nn.Module,
        learnable_query: nn.Embedding | None,
        transformer_decoder: nn.Module,
        mixer: nn.Module,
        mask_head: nn.Module,
        criterion: nn.Module,
        num_classes: int,
        freeze_audio_backbone: bool,
        audio_embedding_cache_size: int = DEFAULT_CACHE_SIZE,
        pixel_mean: List[float],
        pixel_std: List[float],
        size_divisibility: int,
        ignore_label: int = 255,
    ):
        """
        Args:
            backbone: visual backbone; its outputs feed ``pixel_decoder``.
            audio_backbone: ``[N, 1, 96, 64] -> [N, D_audio]``.
            audio_proj: ``[N, 1, D_audio] -> [N, 1, C]``, the audio token.
            pixel_decoder: module with ``forward_features(features)`` returning
                ``(mask_feature, memory, spatial_shapes, level_start_index)``.
            query_generator: audio token ``[N, 1, C]`` -> queries ``[N, Q, C]``.
            learnable_query: optional ``Q x C`` embedding added once to the generated queries.
            transformer_decoder: ``(queries, memory) -> [N, Q, C]``.
            mixer: ``(mask_feature, audio token) -> mixed mask feature``.
            mask_head: ``(queries, mixed mask feature) -> [N, K, H, W]`` logits.
            criterion: ``(logits, mixed mask feature, targets) -> loss dict``.
            num_classes: K; 1 = binary (sigmoid), otherwise softmax over K classes.
            freeze_audio_backbone: no gradient to the audio backbone (run under ``no_grad``).
            audio_embedding_cache_size: a frozen audio backbone's embeddings kept, least
                recently used dropped first (:class:`FrozenAudioEmbeddings`); 0 = none.
            pixel_mean, pixel_std: per-channel normalisation on the 0-255 scale.
            size_divisibility: frames are zero-padded (after normalisation) to a multiple of
                this, and the predictions cropped back.
            ignore_label: target value of unannotated pixels; padding of targets.
        """
        super().__init__()
        self.backbone = backbone
        self.audio_backbone = audio_backbone
        self.audio_proj = audio_proj
        self.pixel_decoder = pixel_decoder
        self.query_generator = query_generator
        self.learnable_query = learnable_query
        self.transformer_decoder = transformer_decoder
        self.mixer = mixer
        self.mask_head = mask_head
        self.criterion = criterion
        self.num_classes = num_classes
        self.freeze_audio_backbone = freeze_audio_backbone
        if freeze_audio_backbone:
            self.audio_backbone.requires_grad_(False)
        # A frozen audio backbone's embeddings are computed once per log-mel example.
        self.audio_embeddings = FrozenAudioEmbeddings(audio_embedding_cache_size)
        self.size_divisibility = max(size_divisibility, getattr(backbone, "size_divisibility", 0))
        self.ignore_label = ignore_label
        register_pixel_normalization(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MODEL.AVSEGFORMER
        hidden_dim = m.HIDDEN_DIM
        if hidden_dim != cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.CONVS_DIM ({cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM}) must equal "
                f"MODEL.AVSEGFORMER.HIDDEN_DIM ({hidden_dim}): the mask feature meets the queries"
            )
        if (m.NUM_CLASSES == 1) == (m.MASK_LOSS == "ce"):
            raise ValueError(
                f"MODEL.AVSEGFORMER.MASK_LOSS={m.MASK_LOSS!r} does not fit NUM_CLASSES="
                f"{m.NUM_CLASSES}: use 'dice' or 'bce' for 1 class and 'ce' for more"
            )
        backbone = build_visual_backbone(cfg)
        modules = cls.build_head(cfg, backbone.output_shape())
        return {
            "backbone": backbone,
            "audio_backbone": build_audio_backbone(cfg),
            # Outside the head in the original, so it keeps PyTorch's default init.
            "audio_proj": nn.Linear(cfg.MODEL.AUDIO.OUT_DIM, hidden_dim),
            **modules,
            "criterion": AVSegFormerCriterion(
                mask_loss=m.MASK_LOSS,
                mask_loss_weight=m.MASK_LOSS_WEIGHT,
                mix_loss_weight=m.MIX_LOSS_WEIGHT,
                empty_frame_weight=m.EMPTY_FRAME_LOSS_WEIGHT,
            ),
            "num_classes": m.NUM_CLASSES,
            "freeze_audio_backbone": cfg.MODEL.AUDIO.FREEZE,
            "audio_embedding_cache_size": cfg.MODEL.AUDIO.EMBEDDING_CACHE_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": m.SIZE_DIVISIBILITY,
        }

    @classmethod
    def build_head(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict[str, nn.Module | None]:
        """The modules after the backbones (the original ``AVSegHead``), initialised like it.

        Args:
            cfg: the model's config.
            input_shape: the visual backbone's ``output_shape()``.

        Returns:
            ``{"pixel_decoder", "query_generator", "learnable_query", "transformer_decoder",
            "mixer", "mask_head"}`` (``learnable_query`` may be None).
        """
        m = cfg.MODEL.AVSEGFORMER
        hidden_dim = m.HIDDEN_DIM
        modules = {
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "query_generator": cls.build_query_generator(cfg),
            "learnable_query": (
                nn.Embedding(m.NUM_QUERIES, hidden_dim) if m.USE_LEARNABLE_QUERIES else None
            ),
            "transformer_decoder": AVSTransformerDecoder(
                num_layers=m.DEC_LAYERS,
                dim=hidden_dim,
                num_heads=m.NHEADS,
                dim_feedforward=m.DIM_FEEDFORWARD,
                dropout=m.DROPOUT,
                checkpoint_activations=cfg.MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER,
            ),
            "mixer": cls.build_mixer(cfg),
            "mask_head": AVSegMaskHead(
                num_queries=m.NUM_QUERIES,
                hidden_dim=hidden_dim,
                mlp_dim=m.QUERY_MLP_DIM,
                num_classes=m.NUM_CLASSES,
                upsample_factor=input_shape[cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES[0]].stride,
                checkpoint_activations=cfg.MODEL.ACTIVATION_CHECKPOINTING.MASK_HEAD,
            ),
        }
        init_head_parameters(modules.values(), level_embed=modules["pixel_decoder"].level_embed)
        return modules

    @classmethod
    def build_query_generator(cls, cfg) -> nn.Module:
        """The query generator: audio-conditioned queries (see :meth:`generate_queries`)."""
        m = cfg.MODEL.AVSEGFORMER
        return AudioQueryGenerator(
            num_queries=m.NUM_QUERIES,
            embed_dim=m.HIDDEN_DIM,
            num_layers=m.QUERY_GENERATOR_LAYERS,
            num_heads=m.QUERY_GENERATOR_NHEADS,
            hidden_dim=m.QUERY_GENERATOR_DIM_FEEDFORWARD,
        )

    @classmethod
    def build_mixer(cls, cfg) -> nn.Module:
        """The audio-visual mixer of the mask feature (see :meth:`mix`)."""
        m = cfg.MODEL.AVSEGFORMER
        return CrossModalMixer(dim=m.HIDDEN_DIM, num_heads=m.MIXER_NHEADS)

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        """Normalise -> backbones -> head -> losses (training) or per-clip probabilities.

        Args:
            batched_inputs: clip dicts, see :mod:`avsegformer.modeling.clip_io`.

        Returns:
            A loss dict in training, else a list with one ``{"sem_seg": ...}`` per clip.
        """
        lengths = [check_clip(clip) for clip in batched_inputs]
        images = normalize_and_pad_frames(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
        log_mel = stack_log_mel(batched_inputs, self.device)
        frame_valid = stack_frame_valid(batched_inputs, lengths, self.device)

        if self.training:
            targets = stack_targets(
                batched_inputs,
                images.tensor.shape[-2:],
                self.size_divisibility,
                self.ignore_label,
                self.device,
            )
            run = self.training_frames(targets)
            outputs = self.predict(images.tensor, log_mel, frame_valid, frame_indices=run)
            # Further outputs (auxiliary losses) go to the criterion by name.
            logits, mask_feature = outputs.pop("pred_logits"), outputs.pop("mask_feature")
            targets = targets.index_select(0, run)
            return outside_autocast(self.criterion, logits, mask_feature, targets, **outputs)

        outputs = self.predict(images.tensor, log_mel, frame_valid)
        # float32 probabilities whatever the model's dtype (a no-op for a float32 model).
        logits = outputs["pred_logits"].float()
        probs = logits.sigmoid() if self.num_classes == 1 else logits.softmax(dim=1)
        return frame_probabilities_per_clip(probs, batched_inputs, lengths, images.image_sizes)

    def training_frames(self, targets: torch.Tensor) -> torch.Tensor:
        """Frames the head runs on in training, ``[n]`` int64: the supervised ones (the others
        have no loss, hence no gradient). ``targets``: ``[N, H, W]``."""
        supervised = supervised_frames(targets, self.ignore_label)
        if supervised.numel() == 0:
            # Nothing to learn from, but every parameter must still join the graph (the
            # criterion returns zero losses).
            supervised = supervised.new_zeros(1)
        return supervised

    def predict(
        self,
        frames: torch.Tensor,
        log_mel: torch.Tensor,
        frame_valid: torch.Tensor | None = None,
        *,
        frame_indices: torch.Tensor | None = None,
    ) -> Dict[str, torch.Tensor]:
        """Run the network on normalised, padded frames.

        Frames are independent after the visual backbone, so only the frames asked for go
        through the rest of the network; in inference, padded frames are not run at all
        (unless :attr:`runs_padded_frames`).

        Args:
            frames: ``[N, 3, H, W]`` normalised frames, H and W multiples of the network stride.
            log_mel: ``[N, 1, 96, 64]`` one log-mel example per frame.
            frame_valid: optional ``[N]`` bool. False frames (padding) are zeroed after
                normalisation like the original's, and get zero features, logits and mask
                feature.
            frame_indices: optional ``[n]`` int64, the frames whose outputs are wanted
                (default: all); training passes the supervised ones, the only ones with a loss.

        Returns:
            ``{"pred_logits": [n, K, H, W], "mask_feature": [n, C, H/4, W/4]}`` (mixed mask
            feature) for ``frame_indices``.
        """
        wanted = (
            torch.arange(frames.shape[0], device=frames.device)
            if frame_indices is None
            else frame_indices.to(frames.device)
        )
        if frame_valid is not None and bool(frame_valid.all()):
            frame_valid = None
        if frame_valid is not None:
            frame_valid = frame_valid.to(frames.device)
            frames = frames * frame_valid.to(frames.dtype)[:, None, None, None]
        if self.training or self.runs_padded_frames:
            return self._predict_training(frames, log_mel, frame_valid, wanted)
        return self._predict_inference(frames, log_mel, frame_valid, wanted)

    def _predict_training(self, frames, log_mel, frame_valid, wanted):
        # The backbone sees every frame, padded ones included, as in the original: its
        # BatchNorm uses the statistics of the whole batch.
        features = self.backbone(frames)
        if wanted.numel() < frames.shape[0]:
            features = {name: f.index_select(0, wanted) for name, f in features.items()}
        if frame_valid is None:
            return self._forward_from_features(features, log_mel, wanted)
        scale = frame_valid.index_select(0, wanted).to(frames.dtype)[:, None, None, None]
        features = {name: f * scale for name, f in features.items()}
        outputs = self._forward_from_features(features, log_mel, wanted)
        # Per-frame outputs of padded frames are zeroed; scalars (auxiliary losses) are not.
        return {name: out * scale if out.dim() else out for name, out in outputs.items()}

    def _predict_inference(self, frames, log_mel, frame_valid, wanted):
        # Eval-mode frames are fully independent: only the valid wanted frames are run, and the
        # padded ones get zero outputs.
        run = wanted if frame_valid is None else wanted[frame_valid[wanted]]
        if run.numel() == 0:
            return self._zero_outputs(frames, len(wanted))
        subset = frames if run.numel() == frames.shape[0] else frames.index_select(0, run)
        outputs = self._forward_from_features(self.backbone(subset), log_mel, run)
        if run.numel() == wanted.numel():
            return outputs
        positions = frame_valid[wanted].nonzero().squeeze(1)
        return {
            name: out.new_zeros(len(wanted), *out.shape[1:]).index_copy(0, positions, out)
            for name, out in outputs.items()
        }

    def _forward_from_features(self, features, log_mel, frame_indices):
        """Audio backbone on the frames ``frame_indices`` of ``log_mel``, then the head."""
        log_mel = log_mel.index_select(0, frame_indices.to(log_mel.device))
        audio = outside_autocast(
            self.audio_embeddings, self.audio_backbone, log_mel, frozen=self.freeze_audio_backbone
        )
        return self.forward_head(features, self.audio_proj(audio.unsqueeze(1)))

    def _zero_outputs(self, frames: torch.Tensor, count: int) -> Dict[str, torch.Tensor]:
        height, width = frames.shape[-2:]
        stride = self.pixel_decoder.mask_stride
        return {
            "pred_logits": frames.new_zeros(count, self.num_classes, height, width),
            "mask_feature": frames.new_zeros(
                count, self.pixel_decoder.conv_dim, height // stride, width // stride
            ),
        }

    def forward_head(
        self, features: Dict[str, torch.Tensor], audio_token: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """Everything after the backbones (the original ``AVSegHead``).

        Args:
            features: backbone outputs ``{name: [N, C_i, H_i, W_i]}``.
            audio_token: ``[N, 1, C]``.

        Returns:
            ``{"pred_logits": [N, K, H, W], "mask_feature": [N, C, H/4, W/4]}`` plus the
            mixer's auxiliary outputs (see :meth:`mix`).
        """
        mask_feature, memory, _, _, levels = self.pixel_decoder.forward_features_and_levels(
            features
        )
        queries, audio_context = self.generate_queries(audio_token, levels)
        if self.learnable_query is not None:
            queries = queries + self.learnable_query.weight
        queries = self.transformer_decoder(queries, memory)
        mask_feature, auxiliary = self.mix(mask_feature, audio_context)
        pred_logits = self.mask_head(queries, mask_feature)
        return {"pred_logits": pred_logits, "mask_feature": mask_feature, **auxiliary}

    def generate_queries(self, audio_token: torch.Tensor, levels: List[torch.Tensor]):
        """Queries ``[N, Q, C]`` and the audio context the mixer gets: here the generator's
        queries from the audio token, and the token itself.

        Args:
            audio_token: ``[N, 1, C]``.
            levels: the projected encoder levels ``[N, C, H_l, W_l]`` (unused here).
        """
        return self.query_generator(audio_token), audio_token

    def mix(self, mask_feature: torch.Tensor, audio_context: torch.Tensor):
        """``(mixed mask feature [N, C, H, W], {name: auxiliary output})``; here no auxiliary
        outputs. A 0-dim auxiliary output is a loss term passed to the criterion by name."""
        return self.mixer(mask_feature, audio_context), {}
