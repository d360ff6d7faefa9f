"""The CATR meta-architecture (ACM MM 2023, aspirinone/CATR.github.io) as a Detectron2 model."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import nn

from ..activation_checkpointing import build_visual_backbone, checkpointed
from ..audio_backbone import DEFAULT_CACHE_SIZE, FrozenAudioEmbeddings, build_audio_backbone
from ..catr import (
    FPN_LEVELS,
    RELEASED_UNUSED_CONV,
    SUPERVISED_FRAME_MODES,
    CATRTransformer,
    DilatedConvSum,
    FPNSpatialDecoder,
    KernelMLP,
    build_catr_criterion,
    build_catr_transformer,
    class_trajectory_targets,
    dynamic_masks,
    released_unused_modules,
    select_referred_masks,
    semantic_clip_probabilities,
    supervised_times,
)
from ..clip_io import check_clip, stack_log_mel
from ..precision import outside_autocast

__all__ = ["CATR"]


@META_ARCH_REGISTRY.register()
class CATR(nn.Module):
    """CATR: a clip-level audio-queried transformer.

    Stages: frames normalised and resized to the model's input size -> visual backbone on the
    B*T frames in (t b) order -> dilated-conv projections of its stride-8/16/32 levels (the
    released stride-4 one is never read: built only with ``MODEL.CATR.STRICT_COMPAT``) -> the
    audio backbone (frozen, its embeddings cached) on the log-mels in (b t) order ->
    :class:`~avsegformer.modeling.catr.CATRTransformer` (every frame attends to all its clip's
    audio; the temporal encoder attends across the clip's frames) -> the FPN mask features from
    the video memory -> per-query kernels and "referred" logits.

    Input: a list of clip dicts (:mod:`avsegformer.modeling.clip_io`), every clip with
    ``num_frames`` frames. Output: in training the weighted :class:`ReferredSetCriterion`
    losses on the supervised frames (frame 0 of every clip, as released, or the annotated
    ones); in inference one ``{"sem_seg": [T, 1, height, width]}`` per clip: per frame the mask
    of the query with the highest "referred" probability, bilinearly resized, through a
    sigmoid.

    Attribute names are the released checkpoint's (``conv2``..``conv4``, ``vid_embed_proj``,
    ``obj_queries``, ``transformer``, ``spatial_decoder``, ``is_referred_head``,
    ``instance_kernels_head``), with the project's backbone under ``backbone`` and VGGish
    under ``audio_backbone``.
    """

    #: Parameter-name prefixes of the visual backbone (learning-rate multiplier).
    visual_backbone_prefixes = ("backbone.",)
    #: Sub-modules that stay float32 in low-precision inference: the audio backbone, and the
    #: class head, whose per-frame argmax picks the query (bfloat16 would flip close scores).
    float32_modules = ("audio_backbone", "is_referred_head")

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_features: List[str],
        audio_backbone: nn.Module,
        conv2: nn.Module,
        conv3: nn.Module,
        conv4: nn.Module,
        transformer: CATRTransformer,
        spatial_decoder: FPNSpatialDecoder,
        num_queries: int,
        mask_kernels_dim: int,
        criterion: nn.Module,
        num_frames: int,
        input_size: tuple,
        supervised_frames: str,
        aux_loss: bool,
        freeze_audio_backbone: bool,
        audio_embedding_cache_size: int = DEFAULT_CACHE_SIZE,
        pixel_mean: List[float],
        pixel_std: List[float],
        ignore_label: int = 255,
        num_classes: int = 1,
        checkpoint_mask_head: bool = False,
        conv1: nn.Module | None = None,
        unused_modules: Dict[str, nn.Module] | None = None,
    ):
        """
        Args:
            backbone: visual backbone; ``in_features`` names its stride-8, -16 and -32 outputs.
            audio_backbone: ``[N, 1, 96, 64] -> [N, A]``.
            conv2, conv3, conv4: projections of the three levels to the transformer width.
            transformer: the audio-video transformer.
            spatial_decoder: ``(video memory, [stride-32, stride-16 maps(, video memory)]) ->
                mask features`` at the stride of its last level.
            num_queries, mask_kernels_dim: Q and the mask-feature width.
            criterion: the training loss.
            num_frames: T, the frames of every clip.
            input_size: (H, W) the frames are resized to; (0, 0) = unchanged.
            supervised_frames: "first" or "annotated" (see ``MODEL.CATR.SUPERVISED_FRAMES``).
            aux_loss: losses on the earlier decoder layers too.
            freeze_audio_backbone: no gradient to the audio backbone (run under ``no_grad``).
            audio_embedding_cache_size: frozen-backbone embeddings kept (LRU); 0 = none.
            pixel_mean, pixel_std: per-channel normalisation on the 0-255 scale.
            ignore_label: target value of unannotated pixels.
            num_classes: K. 1 = the released sounding-object head ("referred" or not);
                more = a (K + 1)-way class head with semantic training and inference
                (:mod:`avsegformer.modeling.catr.semantic`, not from the released code).
            checkpoint_mask_head: in training, the FPN mask decoder keeps only its inputs for
                the backward pass and recomputes the rest there.
            conv1, unused_modules: ``MODEL.CATR.STRICT_COMPAT``: the released stride-4
                projection (run on ``in_features[0]``, never read) and never-called modules.
        """
        super().__init__()
        if supervised_frames not in SUPERVISED_FRAME_MODES:
            raise ValueError(
                f"MODEL.CATR.SUPERVISED_FRAMES must be one of {SUPERVISED_FRAME_MODES}, got "
                f"{supervised_frames!r}"
            )
        self.backbone = backbone
        self.in_features = list(in_features)
        self.audio_backbone = audio_backbone
        self.conv1, self.conv2, self.conv3, self.conv4 = conv1, conv2, conv3, conv4
        for name, module in (unused_modules or {}).items():
            self.add_module(name, module)
        d_model = transformer.d_model
        self.vid_embed_proj = nn.Conv2d(d_model, d_model, 1)
        self.obj_queries = nn.Embedding(num_queries, d_model)
        self.transformer = transformer
        self.spatial_decoder = spatial_decoder
        # K + 1 logits, the last one "no object" (K = 1: the released referred / not head).
        self.num_classes = num_classes
        self.is_referred_head = nn.Linear(d_model, num_classes + 1)
        self.instance_kernels_head = KernelMLP(d_model, d_model, mask_kernels_dim, 2)
        self.criterion = criterion
        self.num_frames = num_frames
        self.input_size = tuple(int(s) for s in input_size)
        self.supervised_frames = supervised_frames
        self.aux_loss = aux_loss
        self.freeze_audio_backbone = freeze_audio_backbone
        if freeze_audio_backbone:
            self.audio_backbone.requires_grad_(False)
        # A frozen audio backbone's embeddings are computed once per log-mel example.
        self.audio_embeddings = FrozenAudioEmbeddings(audio_embedding_cache_size)
        self.checkpoint_mask_head = checkpoint_mask_head
        self.ignore_label = ignore_label
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CATR
        if c.MASK_STRIDE not in FPN_LEVELS:
            raise ValueError(
                f"MODEL.CATR.MASK_STRIDE must be one of {sorted(FPN_LEVELS)}, got {c.MASK_STRIDE}"
            )
        if c.NORMALIZE_BEFORE:
            raise ValueError(
                "MODEL.CATR.NORMALIZE_BEFORE=True: CATR's temporal encoder is post-norm only"
            )
        backbone = build_visual_backbone(cfg)
        shapes = backbone.output_shape()
        names = sorted(shapes, key=lambda name: shapes[name].stride)
        levels = 4 if c.STRICT_COMPAT else 3
        if len(names) < levels:
            strides = "4, 8, 16, 32" if c.STRICT_COMPAT else "8, 16, 32"
            raise ValueError(f"CATR needs backbone levels of strides {strides}, got {names}")
        in_features = names[-levels:]
        dilations = list(c.PROJECTION_DILATIONS)
        convs = [
            DilatedConvSum(shapes[name].channels, c.D_MODEL, dilations) for name in in_features
        ]
        unused_conv = RELEASED_UNUSED_CONV if c.STRICT_COMPAT else None
        return {
            "backbone": backbone,
            "in_features": in_features,
            "audio_backbone": build_audio_backbone(cfg),
            "conv1": convs[0] if c.STRICT_COMPAT else None,
            "conv2": convs[-3],
            "conv3": convs[-2],
            "conv4": convs[-1],
            "unused_modules": (
                released_unused_modules(c.D_MODEL, c.NHEADS, unused_conv) if unused_conv else None
            ),
            "transformer": build_catr_transformer(cfg, released_unused=unused_conv),
            "spatial_decoder": FPNSpatialDecoder(
                c.D_MODEL, (c.D_MODEL,) * FPN_LEVELS[c.MASK_STRIDE], c.MASK_KERNELS_DIM
            ),
            "num_queries": c.NUM_QUERIES,
            "mask_kernels_dim": c.MASK_KERNELS_DIM,
            "criterion": build_catr_criterion(cfg),
            "num_frames": c.NUM_FRAMES,
            "input_size": c.INPUT_SIZE,
            "supervised_frames": c.SUPERVISED_FRAMES,
            "aux_loss": c.AUX_LOSS,
            "freeze_audio_backbone": cfg.MODEL.AUDIO.FREEZE,
            "audio_embedding_cache_size": cfg.MODEL.AUDIO.EMBEDDING_CACHE_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": c.NUM_CLASSES,
            "checkpoint_mask_head": cfg.MODEL.ACTIVATION_CHECKPOINTING.MASK_HEAD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        """Frames and log-mels of B clips -> losses (training) or per-clip probabilities.

        Args:
            batched_inputs: clip dicts, see :mod:`avsegformer.modeling.clip_io`.

        Returns:
            The weighted loss dict in training, else one ``{"sem_seg": [T, 1, H, W]}`` per clip.
        """
        for clip in batched_inputs:
            length = check_clip(clip)
            if length != self.num_frames:
                raise ValueError(
                    f"clip {clip.get('video_id', '<clip without video_id>')} has {length} "
                    f"frames; this CATR model takes clips of MODEL.CATR.NUM_FRAMES="
                    f"{self.num_frames}"
                )
        frames = self.preprocess_frames(batched_inputs)
        log_mel = stack_log_mel(batched_inputs, self.device)
        audio = outside_autocast(
            self.audio_embeddings, self.audio_backbone, log_mel, frozen=self.freeze_audio_backbone
        )  # [B*T, A], (b t) order
        outputs = self.predict(frames, audio, with_aux=self.training and self.aux_loss)
        if self.training:
            return self.losses(outputs, batched_inputs)
        return self.clip_probabilities(outputs, batched_inputs)

    def preprocess_frames(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """``[B*T, 3, H, W]`` frames in (t b) order: normalised, then bilinearly resized to
        ``input_size`` (align_corners False), as the released data pipeline does."""
        clips = []
        for clip in batched_inputs:
            frames = clip["frames"].to(self.device, non_blocking=True).float()
            frames = (frames - self.pixel_mean) / self.pixel_std
            if self.input_size != (0, 0) and tuple(frames.shape[-2:]) != self.input_size:
                frames = F.interpolate(
                    frames, size=self.input_size, mode="bilinear", align_corners=False
                )
            clips.append(frames)
        sizes = {tuple(frames.shape[-2:]) for frames in clips}
        if len(sizes) > 1:
            raise ValueError(
                f"CATR batches whole clips: frames of sizes {sorted(sizes)} need a common "
                "MODEL.CATR.INPUT_SIZE"
            )
        return torch.stack(clips, 1).flatten(0, 1)  # [T, B, ...] -> (t b)

    def predict(self, frames: torch.Tensor, audio: torch.Tensor, *, with_aux: bool) -> dict:
        """The network after preprocessing.

        Args:
            frames: ``[T*B, 3, H, W]`` normalised frames in (t b) order.
            audio: ``[B*T, A]`` audio embeddings in (b t) order.
            with_aux: also return the earlier decoder layers' outputs.

        Returns:
            See :meth:`forward_features`.
        """
        features = self.backbone(frames)
        features = [features[name] for name in self.in_features]
        if self.conv1 is not None:
            self.conv1(features[0])  # computed and never read, as released
        return self.forward_features(features[-3:], audio, with_aux)

    def forward_features(
        self, features: List[torch.Tensor], audio: torch.Tensor, with_aux: bool = True
    ) -> dict:
        """Everything after the backbones.

        Args:
            features: the stride-8, -16, -32 backbone maps ``[T*B, C_l, h_l, w_l]``, (t b).
            audio: ``[B*T, A]`` audio embeddings, (b t).
            with_aux: also return the earlier decoder layers' outputs.

        Returns:
            ``{"pred_masks": [T, B, Q, hm, wm], "pred_is_referred": [T, B, Q, 2]}`` of the last
            decoder layer (masks at the stride ``MODEL.CATR.MASK_STRIDE``), plus ``"aux_outputs"`` (a list of such dicts, first layer
            first) with ``with_aux``. With K > 1 classes the class logits are
            ``"pred_logits": [T, B, Q, K + 1]`` instead of ``"pred_is_referred"``.
        """
        t = self.num_frames
        stride8, stride16, stride32 = (
            conv(f) for conv, f in zip((self.conv2, self.conv3, self.conv4), features)
        )
        n, c, h, w = stride8.shape
        if n % t:
            raise ValueError(f"{n} frames do not make clips of {t} frames")
        b = n // t
        vid_embeds = self.vid_embed_proj(stride8).view(t, b, c, h, w)
        hs, vid_memory = self.transformer(vid_embeds, None, audio, None, self.obj_queries.weight)
        mask_features = checkpointed(
            self.spatial_decoder,
            vid_memory,
            # The finer level (MASK_STRIDE 8) is the stride-8 level as encoded: the video memory,
            # where the audio has gated the video tokens.
            [stride32, stride16, vid_memory][: self.spatial_decoder.num_levels],
            enabled=self.checkpoint_mask_head,
        )
        mask_features = mask_features.view(t, b, *mask_features.shape[1:])
        layers = hs if with_aux else hs[-1:]
        masks = dynamic_masks(self.instance_kernels_head(layers), mask_features)
        # float32, also under autocast or in a bfloat16 model: the argmax over these selects
        # each frame's query.
        is_referred = outside_autocast(self.is_referred_head, layers)
        key = self.logits_key
        outputs = {"pred_masks": masks[-1], key: is_referred[-1]}
        if with_aux:
            outputs["aux_outputs"] = [
                {"pred_masks": m, key: r} for m, r in zip(masks[:-1], is_referred[:-1])
            ]
        return outputs

    @property
    def logits_key(self) -> str:
        """Output name of the class logits: the released ``pred_is_referred`` for one class."""
        return "pred_is_referred" if self.num_classes == 1 else "pred_logits"

    def losses(self, outputs: dict, batched_inputs: List[Dict]) -> dict:
        """Weighted criterion losses on the supervised frames."""
        labels = torch.stack([clip["sem_seg"].to(self.device) for clip in batched_inputs], 1)
        if labels.shape[0] != self.num_frames:
            raise ValueError(f"'sem_seg' must be [T={self.num_frames}, H, W] per clip")
        if self.num_classes > 1:
            return self.semantic_losses(outputs, labels)
        times = self.supervised_times(labels)
        targets = ((labels > 0) & (labels != self.ignore_label)).float()[times]  # [T', B, H, W]

        def frames(out):
            return {k: out[k][times] for k in ("pred_masks", "pred_is_referred")}

        selected = frames(outputs)
        if "aux_outputs" in outputs:
            selected["aux_outputs"] = [frames(aux) for aux in outputs["aux_outputs"]]
        return self.criterion.weighted(outside_autocast(self.criterion, selected, targets))

    def supervised_times(self, labels: torch.Tensor) -> torch.Tensor:
        """``[T']`` int64 frame indices the loss sees; ``labels``: ``[T, B, H, W]``."""
        return supervised_times(labels, self.supervised_frames, self.ignore_label)

    def semantic_losses(self, outputs: dict, labels: torch.Tensor) -> dict:
        """Weighted :class:`SemanticSetCriterion` losses (K > 1 classes): one target per class
        of a clip, over each clip's own annotated frames (only frame 0 with
        ``supervised_frames="first"``), so padded frames of short clips get no loss."""
        supervised = (labels != self.ignore_label).flatten(2).any(-1)  # [T, B]
        if self.supervised_frames == "first":
            supervised[1:] = False
        if not bool(supervised.any(0).all()):
            raise ValueError("every training clip needs an annotated frame the loss can see")
        targets = class_trajectory_targets(labels, supervised, self.ignore_label)
        return self.criterion.weighted(outside_autocast(self.criterion, outputs, targets))

    def clip_probabilities(self, outputs: dict, batched_inputs: List[Dict]) -> List[Dict]:
        """Per frame the selected query's mask, resized to the clip's output size, sigmoid;
        with K > 1 classes the semantic inference's ``[T, K, height, width]`` probabilities."""
        if self.num_classes == 1:
            masks, _, _ = select_referred_masks(outputs["pred_masks"], outputs["pred_is_referred"])
        results = []
        for b, clip in enumerate(batched_inputs):
            height, width = clip["frames"].shape[-2:]
            size = (int(clip.get("height", height)), int(clip.get("width", width)))
            if self.num_classes > 1:
                probs = semantic_clip_probabilities(
                    outputs["pred_masks"][:, b], outputs["pred_logits"][:, b], size
                )
                results.append({"sem_seg": probs})
                continue
            logits = F.interpolate(
                masks[:, b, None].float(), size=size, mode="bilinear", align_corners=False
            )
            results.append({"sem_seg": logits.sigmoid()})
        return results
