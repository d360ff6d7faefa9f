"""Config keys of the MoDAT meta-architecture (``MODEL.MODAT``): its query generator and its
mixture-of-experts mixer. Every other key (classes, queries, decoder, losses) is
``MODEL.AVSEGFORMER``'s. The defaults are the original's."""

from detectron2.config import CfgNode as CN

__all__ = ["add_modat_model_config"]


def add_modat_model_config(cfg):
    """Add ``MODEL.MODAT``, the keys of the MoDAT meta-architecture, in place."""
    cfg.MODEL.MODAT = CN()
    m = cfg.MODEL.MODAT
    # Query generator: the audio token attends over each projected encoder level (early fusion,
    # one component per level), then this many generator layers over the components. Heads and
    # FFN width are MODEL.AVSEGFORMER.QUERY_GENERATOR_{NHEADS,DIM_FEEDFORWARD}.
    m.GENERATOR_LAYERS = 3
    # Mixer: a channel-expert and a spatial-expert mixture-of-experts layer over the mask feature.
    m.NUM_EXPERTS = 16
    m.EXPERT_NHEADS = 8
    # Dropout inside the experts (training only).
    m.EXPERT_DROPOUT = 0.4
    # Slots per expert and frame: max(MIN_CAPACITY, min(n, floor(n * factor / NUM_EXPERTS))) for
    # n pixels; a pixel routed to a full expert is dropped (zero output from that layer).
    m.CAPACITY_FACTOR_TRAIN = 1.0
    m.CAPACITY_FACTOR_EVAL = 2.0
    m.MIN_CAPACITY = 4
    # Whether a pixel keeps its second expert: "random" (with probability gate_2 / threshold, a
    # draw from the global torch generator on every forward, in eval too: the original's),
    # "threshold" (gate_2 > threshold), "all" or "none". The last three make inference
    # deterministic.
    m.SECOND_POLICY_TRAIN = "random"
    m.SECOND_POLICY_EVAL = "random"
    m.SECOND_THRESHOLD = 0.2
    # Weight of each layer's load-balancing loss (the model's loss is the mean of both layers').
    m.BALANCE_LOSS_WEIGHT = 0.01
    # Run the head on every frame in training (the original: the balance loss averages over all
    # frames, unannotated and padded ones included) or only on the supervised ones (faster; the
    # main losses are the same).
    m.BALANCE_LOSS_ALL_FRAMES = True
    # AVSS (NUM_CLASSES > 1) as released: the main and mix losses are doubled and the balance
    # loss is not used. False: main + mix + balance loss, as on S4/MS3.
    m.AVSS_LOSS_AS_RELEASED = True
