"""Config keys shared by every meta-architecture: visual and audio backbones, the deformable pixel
decoder, data, solver and evaluation.

Every key is read somewhere; the defaults reproduce the original AVSegFormer (R50, S4) unless a
comment says otherwise.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_shared_config"]


def add_shared_config(cfg):
    """Add the keys every meta-architecture reads to a Detectron2 config, in place."""
    _add_backbone_config(cfg)
    _add_audio_config(cfg)
    _add_pixel_decoder_config(cfg)
    _add_activation_checkpointing_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)


# ---------------------------------------------------------------------------------------------
# visual backbones
# ---------------------------------------------------------------------------------------------
def _add_backbone_config(cfg):
    # PVTv2 (timm implementation wrapped as a Detectron2 Backbone). Defaults are PVTv2-B5.
    cfg.MODEL.PVT = CN()
    p = cfg.MODEL.PVT
    p.EMBED_DIMS = [64, 128, 320, 512]
    p.DEPTHS = [3, 6, 40, 3]
    p.NUM_HEADS = [1, 2, 5, 8]
    p.MLP_RATIOS = [4, 4, 4, 4]
    p.SR_RATIOS = [8, 4, 2, 1]
    # Stochastic depth, linearly increasing over all blocks up to this rate.
    p.DROP_PATH_RATE = 0.1
    p.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


# ---------------------------------------------------------------------------------------------
# audio backbone
# ---------------------------------------------------------------------------------------------
def _add_audio_config(cfg):
    cfg.MODEL.AUDIO = CN()
    a = cfg.MODEL.AUDIO
    # Name in AUDIO_BACKBONE_REGISTRY.
    a.NAME = "VGGish"
    # Converted torchvggish weights (tools/convert_pretrained_weights.py vggish); "" = random init.
    # Read only when MODEL.WEIGHTS (or the resumed checkpoint) holds no audio backbone, i.e. when
    # training starts from ImageNet weights or from scratch (avsegformer.checkpoint.pretrained).
    a.WEIGHTS = ""
    # No gradient to the audio backbone (the original always runs VGGish under no_grad).
    a.FREEZE = True
    # Embeddings of a frozen audio backbone kept per log-mel example, least recently used
    # dropped first (avsegformer.modeling.audio_backbone.embedding_cache); 0 = no cache.
    a.EMBEDDING_CACHE_SIZE = 4096
    # Embedding width produced by the audio backbone.
    a.OUT_DIM = 128
    # VGGish PCA + quantisation post-processing (off in every original config).
    a.PCA = False
    # File with the converted PCA parameters (postprocessor.*); "" = take them from WEIGHTS.
    a.PCA_WEIGHTS = ""


# ---------------------------------------------------------------------------------------------
# pixel decoder (multi-scale deformable encoder + stride-4 mask feature)
# ---------------------------------------------------------------------------------------------
def _add_pixel_decoder_config(cfg):
    h = cfg.MODEL.SEM_SEG_HEAD
    # Name in SEM_SEG_HEADS_REGISTRY: the pixel decoder itself (AVSegFormer), or a head that
    # holds one (Mask2Former-style models, e.g. "COMBOHead"), which then names its pixel
    # decoder in PIXEL_DECODER_NAME.
    h.NAME = "MSDeformAttnPixelDecoder"
    # "" = SEM_SEG_HEAD.NAME is the pixel decoder (avsegformer.modeling.pixel_decoder.build_pixel_decoder).
    h.PIXEL_DECODER_NAME = ""
    # Backbone features fed to the pixel decoder, finest first (the first one only feeds the
    # stride-4 lateral branch).
    h.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # The levels that go through the deformable encoder.
    h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    h.TRANSFORMER_ENC_LAYERS = 6
    h.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    h.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 2048
    h.DEFORMABLE_TRANSFORMER_ENCODER_DROPOUT = 0.1
    # Activation of the encoder FFN: "gelu" (AVSegFormer) or "relu" (Mask2Former).
    h.DEFORMABLE_TRANSFORMER_ENCODER_ACTIVATION = "gelu"
    # Sine positional encoding of positions scaled to [0, 2 pi] (True, Mask2Former) or of raw
    # 1-based row/column indices (False, AVSegFormer: the encoding then depends on the size).
    h.POSITION_ENCODING_NORMALIZE = False
    # Channels of the projected levels and of the mask feature.
    h.CONVS_DIM = 256
    h.NORM = "GN"
    # Mask2Former's variant (COMBO): encoder levels ordered coarse to fine, its module layout
    # (input projections only for the encoder levels, bias-free lateral/output convs, level
    # embedding and encoder under "transformer"), and a final 1x1 conv to MASK_DIM channels
    # (0 = none, the output conv's CONVS_DIM channels are the mask feature).
    h.COARSE_LEVELS_FIRST = False
    h.MASK2FORMER_LAYOUT = False
    h.MASK_DIM = 0
    # Multi-scale deformable attention backend: "auto" (compiled op when built, else PyTorch),
    # "pytorch", or "compiled" (an error when the op in ops/ is not built).
    h.MSDA_IMPL = "auto"


# ---------------------------------------------------------------------------------------------
# memory: activation checkpointing
# ---------------------------------------------------------------------------------------------
def _add_activation_checkpointing_config(cfg):
    # Parts that keep only their inputs in training and recompute their activations in the
    # backward pass (avsegformer.modeling.activation_checkpointing): less memory for about one
    # more forward of the part. Off by default, as each costs time; evaluation is unaffected.
    cfg.MODEL.ACTIVATION_CHECKPOINTING = CN()
    c = cfg.MODEL.ACTIVATION_CHECKPOINTING
    # Every block of the visual backbones (ResNet residual blocks, PVTv2 transformer blocks).
    c.BACKBONE = False
    # Every deformable encoder layer of the pixel decoder, and its stride-4 mask-feature branch.
    c.PIXEL_DECODER = False
    # Every layer of AVSegFormer's / MoDAT's transformer decoder (its attention weights over
    # all encoder tokens), of COMBO's masked-attention decoder, and every encoder and decoder
    # layer of CATR's transformer.
    c.TRANSFORMER_DECODER = False
    # AVSegFormer / MoDAT prediction head (query-map MLP and up-sampling convs), frame by frame;
    # CATR's FPN mask decoder.
    c.MASK_HEAD = False


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _add_input_config(cfg):
    i = cfg.INPUT
    # Frames are resized to exactly this (height, width) in training and test; the original
    # uses 512x512 for S4/MS3 (PIL bilinear up-sampling of the 224 frames) and 224x224 for AVSS.
    i.FRAME_SIZE = (512, 512)
    # AVSS training: resize the short side then centre-crop to FRAME_SIZE ("crop"), or resize
    # directly ("resize", what every split of S4/MS3 and AVSS val/test use).
    i.TRAIN_RESIZE_MODE = "resize"
    # Audio source: "log_mel" = the clip's audio as the original reads it (S4/MS3: AVSBench's
    # precomputed audio_log_mel/*.pkl; AVSS: audio.wav through the VGGish front end), or "wav" =
    # always the clip's wav through the front end.
    i.AUDIO_SOURCE = "log_mel"
    # How a clip with fewer log-mel examples than frames is completed: "repeat" the last example
    # (AVSBench S4/MS3 preprocessing) or "zero" (AVSS, AVSegFormer).
    i.AUDIO_PAD = "repeat"
    # Maskiges (COMBO's Siam-Encoder input): "" = none are read and clips have no "maskiges";
    # else the maskige folder of each AVSBench subset ("pre_SAM_mask" = the released ones, see
    # avsegformer.data.datasets.layout; an absolute path = that subset's maskige folder itself).
    # Records that carry their own maskige_file_names use those.
    i.MASKIGE_FOLDER = ""
    # Training augmentations (avsegformer.data.augmentations), drawn once per clip and replayed
    # over its frames, masks and maskiges. Off: none at all (the original AVSegFormer), whatever
    # the keys below say. On: Mask2Former's semantic recipe, each step switched by Detectron2's
    # / Mask2Former's keys: ResizeShortestEdge (MIN_SIZE_TRAIN with MIN_SIZE_TRAIN_SAMPLING,
    # MAX_SIZE_TRAIN; every size 0 = no resize), RandomCrop_CategoryAreaConstraint (CROP.*),
    # ColorAugSSDTransform (COLOR_AUG_SSD), RandomFlip (RANDOM_FLIP, "none" = no flip).
    i.AUGMENT = False
    # Largest area share of one category in a crop (1.0 = a plain random crop); the ignore
    # label does not count.
    i.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # SSD colour jitter; its own random values for every frame and maskige.
    i.COLOR_AUG_SSD = False
    # Training only, after the augmentations: pad frames and maskiges (128) and masks (ignore
    # label) at the bottom/right to this square size, cutting what lies beyond, as
    # Mask2Former's semantic mapper does (COMBO: 224 = the crop size); -1 = no padding.
    i.SIZE_DIVISIBILITY = -1


# ---------------------------------------------------------------------------------------------
# solver
# ---------------------------------------------------------------------------------------------
def _add_solver_config(cfg):
    s = cfg.SOLVER
    # "ADAMW" (the original: torch.optim.AdamW defaults but lr) or "SGD" (Detectron2's).
    s.OPTIMIZER = "ADAMW"
    s.BETAS = (0.9, 0.999)
    s.EPS = 1e-8
    # Learning-rate multiplier of the visual backbones' parameters (every visual backbone a
    # model lists in its visual_backbone_prefixes, default "backbone."; never the audio one).
    s.BACKBONE_MULTIPLIER = 1.0
    # Weight decay of nn.Embedding weights (learned queries, level and position embeddings);
    # None = WEIGHT_DECAY (the original AVSegFormer). Mask2Former / COMBO: 0.0.
    s.WEIGHT_DECAY_EMBED = None
    # LR_SCHEDULER_NAME "WarmupPolyLR" (DeepLab / Mask2Former): lr = BASE_LR * (1 - it /
    # MAX_ITER) ** POLY_LR_POWER after the warm-up, never below BASE_LR *
    # POLY_LR_CONSTANT_ENDING (0 = no floor).
    s.POLY_LR_POWER = 0.9
    s.POLY_LR_CONSTANT_ENDING = 0.0
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also takes "full_model" (Mask2Former): one
    # clip_grad_norm_(all parameters, CLIP_VALUE, NORM_TYPE) before every step, besides
    # Detectron2's per-parameter "value" and "norm".
    # The visual backbones (those of BACKBONE_MULTIPLIER) get no gradient for the first this-many
    # iterations (the original freezes its backbone for 5 / 10 / 0 epochs on S4 / MS3 / AVSS). BatchNorm statistics and drop-path
    # keep running in train mode while frozen, as in the original.
    s.FREEZE_BACKBONE_ITERS = 0


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def _add_test_config(cfg):
    # Numeric precision of inference (evaluation, demo, benchmark): "fp32", or "bf16" (weights
    # and activations in bfloat16 from the visual backbone to the mask head; see
    # avsegformer.modeling.precision). Evaluation during training always runs in float32.
    cfg.TEST.PRECISION = "fp32"
    cfg.TEST.AVS = CN()
    t = cfg.TEST.AVS
    # Size at which S4/MS3/AVSS are scored: (0, 0) = each ground truth's own size, or an
    # explicit (height, width); the original AVSegFormer scores S4/MS3 at (512, 512).
    t.EVAL_SIZE = (512, 512)
    # S4/MS3 F-score: the max over thresholds is taken per group of this many consecutive clips
    # (2 = AVSegFormer's test batch; 4 = official AVSBench test.sh; 1 = COMBO).
    t.FSCORE_GROUP_SIZE = 2
    # AVSS: score the padded frames of 5-frame clips as perfect background like the official
    # code ("official"), or score real frames only ("real").
    t.AVSS_PADDED_FRAMES = "official"
    # Write prediction PNGs (0/255 binary, AVSS in the palette) and overlays under OUTPUT_DIR.
    t.SAVE_PREDICTIONS = False
