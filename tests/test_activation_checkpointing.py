"""Activation checkpointing (MODEL.ACTIVATION_CHECKPOINTING.*): the same losses, gradients and
BatchNorm statistics as without it, fewer activations kept, recomputation in the backward."""

import pytest
import torch
from detectron2.modeling import build_model
from helpers import (
    random_clip,
    tiny_avsegformer_cfg,
    tiny_catr_cfg,
    tiny_combo_cfg,
    tiny_modat_cfg,
)
from torch import nn

from avsegformer.modeling.activation_checkpointing import (
    CheckpointedSequential,
    checkpoint_backbone,
    checkpointed,
)

SWITCHES = [
    "MODEL.ACTIVATION_CHECKPOINTING.BACKBONE", True,
    "MODEL.ACTIVATION_CHECKPOINTING.PIXEL_DECODER", True,
    "MODEL.ACTIVATION_CHECKPOINTING.TRANSFORMER_DECODER", True,
    "MODEL.ACTIVATION_CHECKPOINTING.MASK_HEAD", True,
]  # fmt: skip


def combo_resnet_cfg():
    """COMBO with ResNet-18 backbones (trainable BatchNorm) instead of PVTv2."""
    cfg = tiny_combo_cfg(2)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    return cfg


def avsegformer_pvt_cfg():
    """AVSegFormer with a one-block PVTv2 with drop-path on (random draws to replay)."""
    cfg = tiny_avsegformer_cfg(1)
    cfg.MODEL.BACKBONE.NAME = "build_pvt_v2_backbone"
    cfg.MODEL.PVT.EMBED_DIMS = [16, 32, 32, 64]
    cfg.MODEL.PVT.DEPTHS = [1, 2, 1, 1]
    cfg.MODEL.PVT.NUM_HEADS = [1, 1, 1, 1]
    cfg.MODEL.PVT.MLP_RATIOS = [1, 1, 1, 1]
    cfg.MODEL.PVT.DROP_PATH_RATE = 0.3
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DROPOUT = 0.2
    return cfg


def catr_dropout_cfg(mask_stride: int = 16):
    """CATR (trainable BatchNorm in its block gate) with dropout on in every layer; masks at
    ``mask_stride`` (8: the FPN's third level is the video memory, its second input too)."""
    cfg = tiny_catr_cfg()
    cfg.MODEL.CATR.DROPOUT = 0.2
    cfg.MODEL.CATR.MASK_STRIDE = mask_stride
    return cfg


MODELS = {
    "avsegformer_resnet": (lambda: tiny_avsegformer_cfg(1), False),
    "avsegformer_pvt_dropout": (avsegformer_pvt_cfg, False),
    "modat": (lambda: tiny_modat_cfg(1), False),
    "combo_pvt": (lambda: tiny_combo_cfg(2), True),
    "combo_resnet": (combo_resnet_cfg, True),
    "catr_dropout": (catr_dropout_cfg, False),
    "catr_stride8": (lambda: catr_dropout_cfg(mask_stride=8), False),
}


def build(name: str, checkpointing: bool, state=None):
    make_cfg, _ = MODELS[name]
    cfg = make_cfg()
    if checkpointing:
        cfg.merge_from_list(SWITCHES)
    torch.manual_seed(0)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state)  # strict: checkpointing keeps every name
    return model.train()


def clip_frames(name: str) -> int:
    """COMBO's temporal loss takes groups of 5 frames; CATR's clips have 5 frames."""
    return 5 if name.startswith(("combo", "catr")) else 2


def batch(name: str):
    maskiges = MODELS[name][1]
    return [
        random_clip(seed, frames=clip_frames(name), size=32, maskiges=maskiges) for seed in (1, 2)
    ]


def train_step(model, clips):
    """Losses, gradients and buffers after one forward/backward; autograd's saved bytes."""
    saved = []

    def pack(tensor):
        saved.append(tensor.untyped_storage().nbytes())
        return tensor

    torch.manual_seed(3)  # the same dropout / drop-path draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        losses = model(clips)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return losses, grads, buffers, sum(saved)


def counting_calls(module: nn.Module) -> list:
    """Calls started (a recomputation stops once it has what the backward needs, so it may
    never return from the module)."""
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(None))
    return calls


@pytest.mark.parametrize(
    "name", ["avsegformer_pvt_dropout", "modat", "combo_resnet", "catr_dropout", "catr_stride8"]
)
def test_checkpointing_keeps_losses_gradients_and_statistics(name):
    plain = build(name, checkpointing=False)
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    checkpointed_model = build(name, checkpointing=True, state=state)
    clips = batch(name)

    losses, grads, buffers, saved = train_step(plain, clips)
    losses_ckpt, grads_ckpt, buffers_ckpt, saved_ckpt = train_step(checkpointed_model, clips)

    assert losses.keys() == losses_ckpt.keys()
    for key in losses:
        torch.testing.assert_close(losses_ckpt[key], losses[key], rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 50
    for key in grads:
        torch.testing.assert_close(grads_ckpt[key], grads[key], rtol=1e-4, atol=1e-6, msg=key)
    # BatchNorm running statistics moved once, not once more in the recomputation.
    for key in buffers:
        torch.testing.assert_close(buffers_ckpt[key], buffers[key], rtol=1e-5, atol=1e-6)
    # Autograd keeps fewer activations outside the checkpointed parts.
    assert saved_ckpt < saved


def recorded_parts(model):
    """One module inside each checkpointed part, with a call counter."""
    backbone_block = next(
        m for n, m in model.backbone.named_modules() if n.endswith(("res3.0", "blocks.0"))
    )
    if hasattr(model, "transformer"):  # CATR
        transformer = model.transformer
        parts = {
            "backbone block": backbone_block,
            "spatial encoder layer": transformer.spatial_encoder.layers[0],
            "temporal encoder layer": transformer.temporal_encoder.layers[0],
            "decoder layer": transformer.decoder.layers[0],
            "FPN mask decoder": model.spatial_decoder,
        }
        return {name: counting_calls(m) for name, m in parts.items()}
    decoder = getattr(model, "pixel_decoder", None) or model.sem_seg_head.pixel_decoder
    parts = {
        "backbone block": backbone_block,
        "encoder layer": decoder._transformer.encoder.layers[0],
        "stride-4 branch": decoder.layer_1 if decoder.mask2former_layout else decoder.output_conv,
    }
    if hasattr(model, "mask_head"):
        parts["mask head"] = model.mask_head.fc
        parts["decoder layer"] = model.transformer_decoder.layers[0]
    else:  # COMBO's masked-attention decoder: the last sub-layer of its first layer
        parts["decoder layer"] = model.sem_seg_head.predictor.transformer_ffn_layers[0]
    return {name: counting_calls(m) for name, m in parts.items()}


@pytest.mark.parametrize("name", ["avsegformer_resnet", "combo_pvt", "catr_dropout"])
def test_every_part_recomputes_in_backward_and_not_in_eval(name):
    model = build(name, checkpointing=True)
    calls = recorded_parts(model)
    clips = batch(name)
    sum(model(clips).values()).backward()
    # Twice: the forward and the recomputation (the mask head once per frame, each twice).
    frames = 2 * clip_frames(name)
    for part, count in calls.items():
        assert len(count) == (2 * frames if part == "mask head" else 2), part
        count.clear()
    model.eval()
    with torch.no_grad():
        model([{k: v for k, v in clip.items() if k != "sem_seg"} for clip in clips])
    for part, count in calls.items():
        assert len(count) == 1, part


def test_checkpointed_sequential_keeps_the_state_dict_keys_of_resnet_stages():
    model = build("avsegformer_resnet", checkpointing=True)
    assert all(isinstance(stage, CheckpointedSequential) for stage in model.backbone.stages)
    assert model.backbone.res2 is model.backbone.stages[0]
    assert "backbone.res2.0.conv1.weight" in model.state_dict()


def test_checkpointed_is_a_plain_call_when_off_or_without_gradients():
    layer = nn.Linear(3, 3)
    calls = counting_calls(layer)
    x = torch.randn(2, 3)
    checkpointed(layer, x, enabled=False).sum().backward()
    with torch.no_grad():
        checkpointed(layer, x)
    assert len(calls) == 2  # no recomputation
    checkpointed(layer, x).sum().backward()
    assert len(calls) == 4


def test_unsupported_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="Linear does not support activation checkpointing"):
        checkpoint_backbone(nn.Linear(2, 2))
