"""Config keys of the COMBO meta-architecture (``MODEL.COMBO``): Siam-Encoder, Bilateral-Fusion,
audio MLP, input padding and the original's quirks. The defaults are the released configs'."""

from detectron2.config import CfgNode as CN

__all__ = ["add_combo_config"]


def add_combo_config(cfg):
    """Add ``MODEL.COMBO`` in place."""
    cfg.MODEL.COMBO = CN()
    c = cfg.MODEL.COMBO
    # Siam-Encoder: a second backbone of the same type (own weights) encodes the maskiges, and
    # its channel-weighted features are added to the frame features. Clips then need "maskiges".
    c.SIAM_ENCODER = True
    # Hidden width of each Siam-Encoder channel-weight block = channels / this.
    c.SIAM_REDUCTION = 16
    # Fusion of the mask features with the audio: "MHA-B" (Bilateral-Fusion, every training
    # config) or "MHA-None" (level embedding only; the released R50-AVSS test config).
    c.FUSION_TYPE = "MHA-B"
    c.FUSION_NHEADS = 8
    # Dropout on the fusion's attention probabilities (training only).
    c.FUSION_DROPOUT = 0.1
    # Initial layer scale of both residual updates of the Bilateral-Fusion.
    c.FUSION_INIT_VALUES = 1e-4
    # Hidden width of the audio MLP (MODEL.AUDIO.OUT_DIM -> this -> this -> HIDDEN_DIM).
    c.AUDIO_MLP_DIM = 4096
    # Raw (0-255) value frames and maskiges are padded with before normalisation, at the bottom
    # and right, to a multiple of PAD_SIZE_DIVISIBILITY (the original's mappers pad to 224 with
    # 128). 0 = pad only to MODEL.MASK_FORMER.SIZE_DIVISIBILITY.
    c.PAD_VALUE = 128.0
    c.PAD_SIZE_DIVISIBILITY = 224
    # Which frame's audio each query gets. "batch" (the original's quirk): its decoder reads the
    # audio tiled as [N, Q, C] as [Q, N, C], so query q of frame n gets the audio of frame
    # (q * N + n) // Q of the *batch* (results depend on the batch composition). "clip": the
    # same arrangement within each clip (equal to the original for one clip per batch, its
    # test setting, and independent of the batch). "frame": every query of a frame gets that
    # frame's audio.
    c.QUERY_AUDIO = "batch"
    # Quirk of the original: the temporal-consistency loss groups the batch's frames in runs of
    # 5, also for 10-frame AVSS clips. True groups them by clip instead.
    c.TEMPORAL_GROUP_SIZE = 5
    c.TEMPORAL_GROUPS_BY_CLIP = False
