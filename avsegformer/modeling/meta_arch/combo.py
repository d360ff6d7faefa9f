"""The COMBO meta-architecture (COMBO-AVS, CVPR 2024) as a Detectron2 model."""

import math
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_sem_seg_head
from torch import nn

from ..activation_checkpointing import build_visual_backbone
from ..audio_backbone import DEFAULT_CACHE_SIZE, FrozenAudioEmbeddings, build_audio_backbone
from ..clip_io import (
    check_aligned_images,
    check_clip,
    normalize_and_pad_frames,
    register_pixel_normalization,
    stack_frame_valid,
    stack_log_mel,
    stack_targets,
    supervised_frames,
)
from ..fusion import SiamEncoderFusion
from ..mask_classification import (
    class_probabilities,
    foreground_probability,
    semantic_segmentation,
)
from ..mask_targets import semantic_to_mask_targets
from ..precision import outside_autocast
from ..set_criterion import SetCriterion

__all__ = ["COMBO"]


@META_ARCH_REGISTRY.register()
class COMBO(nn.Module):
    """COMBO: Siam-Encoder, Bilateral-Fusion and a Mask2Former head with audio-added queries.

    Stages: frames (and maskiges) padded with a raw value, normalised -> visual backbone; with
    the Siam-Encoder, a second backbone on the maskiges whose channel-weighted features are
    added to the frame features -> frozen audio backbone on the log-mels -> ``sem_seg_head``
    (:class:`~.combo_head.COMBOHead`: pixel decoder, fusion, audio MLP, masked decoder).

    Input: a list of clip dicts (the contract of :mod:`avsegformer.modeling.clip_io`), plus
    ``"maskiges"`` uint8 ``[T, 3, H, W]`` when the Siam-Encoder is on.

    Output: in training the weighted losses of :class:`SetCriterion` (39 terms with 9 decoder
    layers); in inference one ``{"sem_seg": ...}`` per clip at its ``height`` x ``width``: the
    foreground probability ``[T, 1, H, W]`` = ``softmax(S)[1] = sigmoid(S_1 - S_0)`` of the
    2-class semantic scores S (S4, MS3), or the class probabilities ``softmax(S)``
    ``[T, K, H, W]`` (AVSS), which is what the original's evaluators compute from S.

    Padded frames (``frame_valid`` False: 5-frame clips inside AVSS) never enter the network:
    the original's AVSS clips of 5 frames hold 5 images and its audio keeps only the real
    frames' log-mels, so the network sees exactly the real frames, in batch order (which also
    sets the batch-dependent audio of the queries and the temporal loss's groups of 5). In
    inference the original multiplies each frame's scores by its "real frame" flag, indexed by
    the frame's position in the batch; with one clip per test batch (Detectron2's test loader)
    that flag is 1 for every frame it decodes, so scores are left as they are here. A padded
    frame gets all-zero scores (probability 1/K everywhere); the evaluator does not score it.
    """

    #: Parameter-name prefixes of the visual backbones (learning-rate multiplier); never the
    #: frozen audio backbone.
    visual_backbone_prefixes = ("backbone.", "pre_sam_backbone.")
    #: Sub-modules that stay float32 in low-precision inference (``TEST.PRECISION``): the audio
    #: backbone is cheap next to the visual path, and its embedding feeds every query.
    float32_modules = ("audio_backbone",)

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        pre_sam_backbone: Backbone | None,
        scale_factor_module: SiamEncoderFusion | None,
        audio_backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_classes: int,
        freeze_audio_backbone: bool,
        audio_embedding_cache_size: int = DEFAULT_CACHE_SIZE,
        pixel_mean: List[float],
        pixel_std: List[float],
        size_divisibility: int,
        pad_value: float,
        deep_supervision: bool = True,
        ignore_label: int = 255,
    ):
        """
        Args:
            backbone: visual backbone of the frames.
            pre_sam_backbone, scale_factor_module: the Siam-Encoder (maskige backbone and its
                fusion), both None without it.
            audio_backbone: ``[N, 1, 96, 64] -> [N, A]``.
            sem_seg_head: ``(features, audio [N, 1, A]) -> decoder outputs``.
            criterion: the set criterion.
            num_classes: K (2 = background/object, binary output; more = class probabilities).
            freeze_audio_backbone: no gradient to the audio backbone (run under ``no_grad``).
            audio_embedding_cache_size: a frozen audio backbone's embeddings kept, least
                recently used dropped first (:class:`FrozenAudioEmbeddings`); 0 = none.
            pixel_mean, pixel_std: per-channel normalisation on the 0-255 scale.
            size_divisibility: frames and maskiges are padded to a multiple of this.
            pad_value: raw (0-255) padding value, applied before normalisation.
            deep_supervision: losses on the decoder's earlier predictions too.
            ignore_label: target value of unannotated pixels; padding of targets.
        """
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"COMBO classifies masks into K >= 2 classes (2 = background/object for S4 and "
                f"MS3), got MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
            )
        if (pre_sam_backbone is None) != (scale_factor_module is None):
            raise ValueError("the Siam-Encoder needs both pre_sam_backbone and its fusion")
        self.backbone = backbone
        self.pre_sam_backbone = pre_sam_backbone
        self.scale_factor_module = scale_factor_module
        self.audio_backbone = audio_backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_classes = num_classes
        self.freeze_audio_backbone = freeze_audio_backbone
        if freeze_audio_backbone:
            self.audio_backbone.requires_grad_(False)
        # A frozen audio backbone's embeddings are computed once per log-mel example.
        self.audio_embeddings = FrozenAudioEmbeddings(audio_embedding_cache_size)
        self.size_divisibility = size_divisibility
        self.pad_value = pad_value
        self.deep_supervision = deep_supervision
        self.ignore_label = ignore_label
        register_pixel_normalization(self, pixel_mean, pixel_std)

    @classmethod
    def from_config(cls, cfg):
        m, c, h = cfg.MODEL.MASK_FORMER, cfg.MODEL.COMBO, cfg.MODEL.SEM_SEG_HEAD
        if not m.TEST.SEMANTIC_ON or m.TEST.INSTANCE_ON or m.TEST.PANOPTIC_ON:
            raise ValueError(
                "COMBO only does semantic inference: MODEL.MASK_FORMER.TEST.SEMANTIC_ON must be "
                "True and INSTANCE_ON / PANOPTIC_ON False"
            )
        backbone = build_visual_backbone(cfg)
        shapes = backbone.output_shape()
        sem_seg_head = build_sem_seg_head(cfg, shapes)
        if not all(hasattr(sem_seg_head, a) for a in ("pixel_decoder", "predictor")):
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NAME={h.NAME!r} is not a COMBO head (e.g. 'COMBOHead', with "
                "the pixel decoder in MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME)"
            )
        pre_sam_backbone = scale_factor_module = None
        if c.SIAM_ENCODER:
            pre_sam_backbone = build_visual_backbone(cfg)
            names = sorted(shapes, key=lambda name: shapes[name].stride)
            scale_factor_module = SiamEncoderFusion(
                channels=[shapes[name].channels for name in names],
                feature_names=names,
                reduction=c.SIAM_REDUCTION,
            )
        size_divisibility = max(m.SIZE_DIVISIBILITY, backbone.size_divisibility, 1)
        if c.PAD_SIZE_DIVISIBILITY > 0:
            size_divisibility = math.lcm(size_divisibility, c.PAD_SIZE_DIVISIBILITY)
        criterion = SetCriterion(
            h.NUM_CLASSES,
            class_weight=m.CLASS_WEIGHT,
            mask_weight=m.MASK_WEIGHT,
            dice_weight=m.DICE_WEIGHT,
            cosine_weight=m.COSINE_WEIGHT,
            no_object_weight=m.NO_OBJECT_WEIGHT,
            num_points=m.TRAIN_NUM_POINTS,
            oversample_ratio=m.OVERSAMPLE_RATIO,
            importance_sample_ratio=m.IMPORTANCE_SAMPLE_RATIO,
            num_aux_outputs=m.DEC_LAYERS - 1,
            temporal_group_size=c.TEMPORAL_GROUP_SIZE,
            temporal_groups_by_clip=c.TEMPORAL_GROUPS_BY_CLIP,
        )
        return {
            "backbone": backbone,
            "pre_sam_backbone": pre_sam_backbone,
            "scale_factor_module": scale_factor_module,
            "audio_backbone": build_audio_backbone(cfg),
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_classes": h.NUM_CLASSES,
            "freeze_audio_backbone": cfg.MODEL.AUDIO.FREEZE,
            "audio_embedding_cache_size": cfg.MODEL.AUDIO.EMBEDDING_CACHE_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            # The original pads raw frames to 224 in its mappers, then zero-pads normalised
            # frames to 32 (a no-op, 224 = 7 x 32): one raw padding to their multiple here.
            "size_divisibility": size_divisibility,
            "pad_value": c.PAD_VALUE,
            "deep_supervision": m.DEEP_SUPERVISION,
            "ignore_label": h.IGNORE_VALUE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def uses_maskiges(self) -> bool:
        return self.pre_sam_backbone is not None

    def forward(self, batched_inputs: List[Dict]):
        """Pad and normalise -> backbones -> head -> losses (training) or per-clip probabilities.

        Args:
            batched_inputs: clip dicts, see :mod:`avsegformer.modeling.clip_io`.

        Returns:
            The weighted loss dict in training, else a list with one ``{"sem_seg": ...}`` per
            clip.
        """
        lengths = [check_clip(clip) for clip in batched_inputs]
        if self.uses_maskiges:
            for clip in batched_inputs:
                check_aligned_images(clip, "maskiges", "the config's MODEL.COMBO.SIAM_ENCODER")
        images = self._images(batched_inputs, "frames")
        maskiges = self._images(batched_inputs, "maskiges") if self.uses_maskiges else None
        log_mel = stack_log_mel(batched_inputs, self.device)
        frame_valid = stack_frame_valid(batched_inputs, lengths, self.device)
        real = None if frame_valid is None or bool(frame_valid.all()) else frame_valid.nonzero()
        real = None if real is None else real.squeeze(1)

        def real_frames(tensor):
            return tensor if tensor is None or real is None else tensor.index_select(0, real)

        frames, maskige_tensor = real_frames(images.tensor), None
        if maskiges is not None:
            maskige_tensor = real_frames(maskiges.tensor)
        real_lengths = self._real_lengths(batched_inputs, lengths)
        if self.training:
            targets = stack_targets(
                batched_inputs,
                images.tensor.shape[-2:],
                self.size_divisibility,
                self.ignore_label,
                self.device,
            )
            return self.losses(
                self.predict(frames, maskige_tensor, real_frames(log_mel), real_lengths),
                real_frames(targets),
                real_lengths,
            )
        if real is not None and real.numel() == 0:
            outputs = None
        else:
            outputs = self.predict(frames, maskige_tensor, real_frames(log_mel), real_lengths)
        return self.clip_probabilities(outputs, batched_inputs, lengths, images, real)

    def _images(self, batched_inputs, key):
        return normalize_and_pad_frames(
            batched_inputs,
            self.pixel_mean,
            self.pixel_std,
            self.size_divisibility,
            key=key,
            raw_pad_value=self.pad_value,
        )

    @staticmethod
    def _real_lengths(batched_inputs, lengths) -> List[int]:
        return [
            int(torch.as_tensor(clip["frame_valid"]).sum()) if "frame_valid" in clip else length
            for clip, length in zip(batched_inputs, lengths)
        ]

    def predict(
        self,
        frames: torch.Tensor,
        maskiges: torch.Tensor | None,
        log_mel: torch.Tensor,
        clip_lengths: List[int] | None = None,
    ) -> dict:
        """The network on normalised, padded frames.

        Args:
            frames: ``[N, 3, H, W]``.
            maskiges: ``[N, 3, H, W]`` normalised like the frames (None without Siam-Encoder).
            log_mel: ``[N, 1, 96, 64]``.
            clip_lengths: frames per clip (for a head arranging the queries' audio per clip).

        Returns:
            The decoder outputs: ``pred_logits`` ``[N, Q, K + 1]``, ``pred_masks``
            ``[N, Q, H/4, W/4]``, ``aux_outputs``, ``intermediate_mask_logits``.
        """
        features = self.backbone(frames)
        if self.uses_maskiges:
            if maskiges is None:
                raise ValueError("the Siam-Encoder is on (MODEL.COMBO.SIAM_ENCODER): pass maskiges")
            features = self.scale_factor_module(features, self.pre_sam_backbone(maskiges))
        audio = outside_autocast(
            self.audio_embeddings, self.audio_backbone, log_mel, frozen=self.freeze_audio_backbone
        )
        return self.sem_seg_head(features, audio.unsqueeze(1), clip_lengths)

    def losses(self, outputs: dict, targets: torch.Tensor, clip_lengths: List[int]) -> dict:
        """Weighted set-criterion losses.

        Args:
            outputs: :meth:`predict`'s outputs for N frames.
            targets: ``[N, H, W]`` int64 labels at the padded size, ``ignore_label`` where not
                annotated.
            clip_lengths: frames per clip (for a criterion grouping its temporal term by clip).
        """
        # The frames with ground truth, from the labels: the original keeps frames 0, 5, 10, ...
        # on S4 with an index list cached on its first call (wrong for a later batch of another
        # size) and the ground-truth flags on AVSS; annotated frames are those same frames.
        supervised = supervised_frames(targets, self.ignore_label)
        mask_targets = [
            semantic_to_mask_targets(targets[i], self.ignore_label) for i in supervised.tolist()
        ]
        if not self.deep_supervision:
            outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = outside_autocast(
            self.criterion, outputs, mask_targets, supervised, clip_lengths=clip_lengths
        )
        return self.criterion.weighted(losses)

    def clip_probabilities(self, outputs, batched_inputs, lengths, images, real=None):
        """Per-frame semantic scores -> each clip's probabilities at its output size.

        Args:
            outputs: :meth:`predict`'s outputs for the real frames (None: there are none).
            batched_inputs, lengths: the clips and their T.
            images: the padded frames (``ImageList``) of every frame of the batch.
            real: ``[n]`` indices of the frames ``outputs`` belong to (None: every frame).

        Returns:
            ``[{"sem_seg": [T, 1 or K, height, width]}]``, one per clip.
        """
        output_sizes = []
        for clip, length, start in zip(batched_inputs, lengths, _starts(lengths)):
            height, width = images.image_sizes[start]
            size = (int(clip.get("height", height)), int(clip.get("width", width)))
            output_sizes.extend([size] * length)
        frame_ids = list(range(len(output_sizes))) if real is None else real.tolist()
        scores = [None] * len(output_sizes)
        if outputs is not None:
            # float32 scores whatever the model's dtype (a no-op for a float32 model).
            decoded = semantic_segmentation(
                outputs["pred_logits"].float(),
                outputs["pred_masks"].float(),
                padded_size=tuple(images.tensor.shape[-2:]),
                image_sizes=[images.image_sizes[i] for i in frame_ids],
                output_sizes=[output_sizes[i] for i in frame_ids],
            )
            for i, frame_scores in zip(frame_ids, decoded):
                scores[i] = frame_scores
        results = []
        for length, start in zip(lengths, _starts(lengths)):
            clip_scores = torch.stack(
                [
                    s if s is not None else images.tensor.new_zeros(self.num_classes, *size)
                    for s, size in zip(
                        scores[start : start + length], output_sizes[start : start + length]
                    )
                ]
            )
            probs = (
                foreground_probability(clip_scores)
                if self.num_classes == 2
                else class_probabilities(clip_scores)
            )
            results.append({"sem_seg": probs})
        return results


def _starts(lengths: List[int]) -> List[int]:
    """Index of each clip's first frame in the batch."""
    return [sum(lengths[:i]) for i in range(len(lengths))]
