"""Config keys of the AVSegFormer meta-architecture (``MODEL.AVSEGFORMER``): queries, decoder,
mixer, prediction head and losses. The defaults are the original's (R50, S4)."""

from detectron2.config import CfgNode as CN

__all__ = ["add_avsegformer_model_config"]


# ---------------------------------------------------------------------------------------------
# meta-architecture, queries, decoder, mixer, prediction head and losses
# ---------------------------------------------------------------------------------------------
def add_avsegformer_model_config(cfg):
    """Add ``MODEL.AVSEGFORMER``, the keys of the AVSegFormer meta-architecture, in place."""
    cfg.MODEL.AVSEGFORMER = CN()
    m = cfg.MODEL.AVSEGFORMER
    # Output classes: 1 = binary "sounding object" map (S4, MS3, sigmoid); 71 = AVSS (softmax).
    m.NUM_CLASSES = 1
    # Width of every transformer token and of the mask feature (C in the paper).
    m.HIDDEN_DIM = 256
    # Number of queries. The query-map MLP takes the query axis as channels, so checkpoints are
    # tied to this number (300 in every released checkpoint).
    m.NUM_QUERIES = 300
    # Add a second, learnable set of NUM_QUERIES queries to the audio-conditioned ones.
    m.USE_LEARNABLE_QUERIES = True
    # Query generator: attention layers over the audio token (post-norm, GELU, no dropout).
    m.QUERY_GENERATOR_LAYERS = 6
    m.QUERY_GENERATOR_NHEADS = 8
    m.QUERY_GENERATOR_DIM_FEEDFORWARD = 1024
    # Transformer decoder over all encoder tokens (post-norm, GELU).
    m.DEC_LAYERS = 6
    m.NHEADS = 8
    m.DIM_FEEDFORWARD = 2048
    m.DROPOUT = 0.1
    # Audio-visual mixer: heads of the audio query attending over all mask-feature pixels.
    m.MIXER_NHEADS = 8
    # Hidden width of the 1x1-conv MLP over the query maps (NUM_QUERIES -> this -> this -> C).
    m.QUERY_MLP_DIM = 2048
    # Main loss: "dice" (S4, MS3: V-Net dice on sigmoid) or "ce" (AVSS: per-pixel cross-entropy).
    m.MASK_LOSS = "dice"
    m.MASK_LOSS_WEIGHT = 1.0
    # Weight of the dice loss on the channel mean of the mixed mask feature ("mix loss").
    m.MIX_LOSS_WEIGHT = 0.1
    # "dice" only: a frame whose target is empty gives the dice loss no gradient (1 whatever
    # the prediction). With a weight > 0 such a frame scores this times its binary cross-entropy
    # against background instead, so that empty targets (negative audio, INPUT.NEGATIVE_AUDIO,
    # or MS3's silent frames) teach the model to draw nothing. 0 = the original loss.
    m.EMPTY_FRAME_LOSS_WEIGHT = 0.0
    # Frames are padded in the model to a multiple of this (the data mapper never pads).
    m.SIZE_DIVISIBILITY = 32
