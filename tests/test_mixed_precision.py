"""Mixed-precision training (SOLVER.AMP.ENABLED) and bfloat16 inference (TEST.PRECISION) for
every meta-architecture: bfloat16 autocast on CPU with the audio backbone and the losses in
float32, float16 with gradient scaling on CUDA."""

import copy

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from engine_toy import ToyModel, toy_batches
from helpers import (
    random_clip,
    tiny_avsegformer_cfg,
    tiny_catr_cfg,
    tiny_combo_cfg,
    tiny_modat_cfg,
)

from avsegformer.engine import Trainer
from avsegformer.engine.trainer import AVSTrainLoop
from avsegformer.modeling.catr import select_referred_masks
from avsegformer.modeling.clip_io import stack_log_mel
from avsegformer.modeling.precision import apply_inference_precision, outside_autocast

MODELS = {
    "avsegformer": (lambda: tiny_avsegformer_cfg(1), False),
    "modat": (lambda: tiny_modat_cfg(1), False),
    "combo": (lambda: tiny_combo_cfg(2), True),
    "catr": (tiny_catr_cfg, False),
}


def build(name: str, *opts):
    cfg = MODELS[name][0]()
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return build_model(cfg)


def clip_frames(name: str) -> int:
    """COMBO's temporal loss takes groups of 5 frames; CATR's clips have 5 frames."""
    return 5 if name.startswith(("combo", "catr")) else 2


def batch(name: str, *, train: bool = True):
    clips = [
        random_clip(seed, frames=clip_frames(name), size=32, maskiges=MODELS[name][1])
        for seed in (4, 5)
    ]
    if not train:
        for clip in clips:
            del clip["sem_seg"]
    return clips


def floating_tensors(value):
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in floating_tensors(item)]
    return []


def record_dtypes(module, seen: list, *, outputs: bool):
    """Record the dtypes of the floating tensors ``module`` gets (or returns)."""

    def hook(_module, args, *rest):
        seen.extend(t.dtype for t in floating_tensors(rest[0] if outputs else args))

    if outputs:
        return module.register_forward_hook(hook)
    return module.register_forward_pre_hook(hook)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_training_step_is_finite_and_close_to_float32(name):
    model = build(name).train()
    clips = batch(name)
    torch.manual_seed(1)
    reference = model(clips)
    audio, criterion_inputs = [], []
    hooks = [
        record_dtypes(model.audio_backbone, audio, outputs=True),
        record_dtypes(model.criterion, criterion_inputs, outputs=False),
    ]
    # The clips' audio embeddings were kept by the first pass: run the audio backbone again.
    model.audio_embeddings.clear()
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(clips)
    for hook in hooks:
        hook.remove()
    # The audio backbone and the criterion ran in float32 under autocast.
    assert audio == [torch.float32]
    assert criterion_inputs and set(criterion_inputs) == {torch.float32}
    total, expected = sum(losses.values()), sum(reference.values())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    # bfloat16 keeps 8 bits of mantissa: a random model's total loss within a few percent.
    assert abs(total.item() - expected.item()) <= 0.03 * abs(expected.item()) + 1e-3
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_inference_is_close_to_float32(name):
    # Each masked-attention layer of COMBO's decoder attends where the previous layer's mask
    # logits are >= 0, and a random model's logits sit near 0: through 9 layers, bfloat16
    # rounding changes which pixels are attended (max difference 0.07). One layer shows the
    # numerics of the bfloat16 path itself (0.002).
    opts = ["MODEL.MASK_FORMER.DEC_LAYERS", 2] if name == "combo" else []
    model = build(name, *opts).eval()
    clips = batch(name, train=False)
    converted = apply_inference_precision(copy.deepcopy(model), "bf16")
    assert all(p.dtype == torch.float32 for p in converted.audio_backbone.parameters())
    assert any(p.dtype == torch.bfloat16 for p in converted.backbone.parameters())
    # The random draws of MoDAT's second expert are the same in both runs.
    torch.manual_seed(2)
    with torch.no_grad():
        expected = model(clips)
    torch.manual_seed(2)
    with torch.no_grad():
        outputs = converted(clips)
    for out, ref in zip(outputs, expected):
        probs = out["sem_seg"]
        assert probs.dtype == torch.float32 and probs.shape == ref["sem_seg"].shape
        assert (probs - ref["sem_seg"]).abs().max() < 0.05


def test_catr_selects_queries_on_float32_logits_in_bfloat16():
    model = build("catr").eval()
    # At random init every query attends almost uniformly and all scores lie within 1e-3;
    # sharper cross-attention (as trained) sets the queries apart.
    with torch.no_grad():
        for layer in model.transformer.decoder.layers:
            layer.multihead_attn.in_proj_weight[: model.transformer.d_model] *= 8
    clips = batch("catr", train=False)
    converted = apply_inference_precision(copy.deepcopy(model), "bf16")
    # The class head stays float32: the argmax over its logits picks each frame's query.
    assert all(p.dtype == torch.float32 for p in converted.is_referred_head.parameters())
    assert converted.transformer.decoder.norm.weight.dtype == torch.bfloat16

    def network(m):
        frames = m.preprocess_frames(clips)
        audio = m.audio_backbone(stack_log_mel(clips, m.device))
        with torch.no_grad():
            return m.predict(frames, audio, with_aux=False)

    expected, outputs = network(model), network(converted)
    assert outputs["pred_is_referred"].dtype == torch.float32
    assert outputs["pred_masks"].dtype == torch.bfloat16
    _, query, scores = select_referred_masks(expected["pred_masks"], expected["pred_is_referred"])
    _, query_bf16, scores_bf16 = select_referred_masks(
        outputs["pred_masks"], outputs["pred_is_referred"]
    )
    assert (scores_bf16 - scores).abs().max() < 0.01
    # Every frame whose best and second-best scores are apart by more than the bfloat16
    # deviation keeps its query.
    top2 = scores.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * (scores_bf16 - scores).abs().max()
    assert clear.any()
    assert torch.equal(query_bf16[clear], query[clear])


def record_routing_dtypes(model, seen: list) -> list:
    """Record the dtype of the gate probabilities (softmax of the logits) of MoDAT's routers."""
    gates = [model.mixer.channel_attn.gate, model.mixer.spatial_attn.gate]
    return [
        gate.register_forward_hook(lambda _m, _a, routing: seen.append(routing.raw_gates.dtype))
        for gate in gates
    ]


def test_modat_routers_run_in_float32_under_bfloat16_inference_and_amp():
    model = build("modat").eval()
    converted = apply_inference_precision(copy.deepcopy(model), "bf16")
    for name, parameter in converted.mixer.named_parameters():
        reference = model.mixer.get_parameter(name)
        if ".gate." in name:  # the routers: float32, their exact weights
            assert parameter.dtype == torch.float32 and torch.equal(parameter, reference), name
        else:
            assert parameter.dtype == torch.bfloat16, name
    seen, mixed = [], []
    hooks = record_routing_dtypes(converted, seen)
    hooks.append(record_dtypes(converted.mixer, mixed, outputs=True))
    with torch.no_grad():
        converted(batch("modat", train=False))
    assert seen == [torch.float32, torch.float32]
    assert mixed[0] == torch.bfloat16  # the mixer's output stays in the model's dtype

    # The same bfloat16 tokens: the float32 router of the converted model chooses exactly as
    # the float32 model's; a router computing in bfloat16 flips some first choices.
    gate, converted_gate = model.mixer.channel_attn.gate, converted.mixer.channel_attn.gate
    tokens = torch.randn(2, 4096, gate.proj.in_features).to(torch.bfloat16)
    with torch.no_grad():
        expected = gate(tokens.float()).expert_1
        torch.testing.assert_close(converted_gate(tokens).expert_1, expected, rtol=0, atol=0)
        bfloat16_router = copy.deepcopy(gate.proj).to(torch.bfloat16)
        bfloat16_choices = bfloat16_router(tokens).float().argmax(-1)
    assert (bfloat16_choices != expected).any()

    seen.clear()
    trained = build("modat").train()
    hooks += record_routing_dtypes(trained, seen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = trained(batch("modat"))
    for hook in hooks:
        hook.remove()
    assert seen == [torch.float32, torch.float32]
    sum(losses.values()).backward()
    assert trained.mixer.channel_attn.gate.proj.weight.grad is not None


def test_outside_autocast_runs_in_float32():
    linear = torch.nn.Linear(4, 4)
    x = {"a": [torch.randn(2, 4).to(torch.bfloat16)]}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x["a"][0].float()).dtype == torch.bfloat16
        out = outside_autocast(lambda inputs, scale: linear(inputs["a"][0]) * scale, x, scale=2)
    assert out.dtype == torch.float32


def amp_loop(cfg_device: str):
    cfg = tiny_avsegformer_cfg(1)
    cfg.SOLVER.AMP.ENABLED = True
    cfg.MODEL.DEVICE = cfg_device
    model = ToyModel().to(cfg_device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer._build_train_loop(cfg, model, toy_batches(), optimizer)


def test_amp_on_cpu_is_bfloat16_without_scaler():
    loop = amp_loop("cpu")
    assert isinstance(loop, AVSTrainLoop)
    assert loop.autocast_dtype == torch.bfloat16 and loop.grad_scaler is None


def test_grad_scaler_steps_and_checkpoints_its_state():
    """The scaled path of AVSTrainLoop, on the CPU's GradScaler."""
    model = ToyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    loop = AVSTrainLoop(model, toy_batches(), optimizer, grad_scaler=scaler)
    before = model.head.weight.detach().clone()
    with EventStorage():
        loop.iter = 0
        loop.run_step()
    assert not torch.equal(before, model.head.weight)
    assert loop.state_dict()["grad_scaler"]["scale"] == 2048.0  # grown after a finite step
    restored = AVSTrainLoop(
        ToyModel(), toy_batches(), optimizer, grad_scaler=torch.amp.GradScaler("cpu")
    )
    restored.load_state_dict(loop.state_dict())
    assert restored.grad_scaler.get_scale() == 2048.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_on_cuda_is_float16_with_scaler():
    loop = amp_loop("cuda")
    assert loop.autocast_dtype == torch.float16
    assert isinstance(loop.grad_scaler, torch.amp.GradScaler)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_float16_training_step_on_cuda_is_finite(name):
    model = build(name).cuda().train()
    with torch.autocast("cuda", dtype=torch.float16):
        losses = model(batch(name))
    total = sum(losses.values())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    scaler = torch.amp.GradScaler("cuda")
    scaler.scale(total).backward()
    scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.1))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
