from detectron2.utils.registry import Registry

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for the query decoders of mask-classification heads (Mask2Former style).

A registered class is built with keyword arguments only. Its forward takes the multi-scale
pixel-decoder features, the per-frame audio embedding and the mask features, and returns a dict
with at least ``pred_logits`` ``[N, Q, K + 1]``, ``pred_masks`` ``[N, Q, H, W]`` and
``aux_outputs`` (one ``{"pred_logits", "pred_masks"}`` dict per earlier prediction).
"""


def build_transformer_decoder(name: str, **kwargs):
    """Build the transformer decoder registered as ``name`` with the given keyword arguments."""
    return TRANSFORMER_DECODER_REGISTRY.get(name)(**kwargs)
