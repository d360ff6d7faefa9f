"""The MoDAT meta-architecture end to end on a tiny config: losses, random and deterministic
inference, padded frames, and the draws from the global generator."""

import pytest
import torch
from detectron2.modeling import build_model
from helpers import tiny_avsegformer_cfg, tiny_modat_cfg

from avsegformer.modeling.meta_arch import AVSegFormer, MoDAT
from avsegformer.modeling.moe import DualAttentionMixer
from avsegformer.modeling.transformer import EncoderDecoderQueryGenerator


def tiny_modat(num_classes: int = 1, **modat):
    cfg = tiny_modat_cfg(num_classes)
    for key, value in modat.items():
        setattr(cfg.MODEL.MODAT, key, value)
    torch.manual_seed(0)
    return build_model(cfg)


def clips(num_clips=2, frames=3, size=64, annotated_first_only=False):
    generator = torch.Generator().manual_seed(1)
    batch = []
    for _ in range(num_clips):
        sem_seg = torch.randint(0, 2, (frames, size, size), generator=generator)
        if annotated_first_only:
            sem_seg[1:] = 255
        batch.append(
            {
                "frames": torch.randint(0, 255, (frames, 3, size, size), generator=generator).to(
                    torch.uint8
                ),
                "log_mel": torch.randn(frames, 96, 64, generator=generator),
                "sem_seg": sem_seg,
            }
        )
    return batch


@pytest.fixture(scope="module")
def model():
    return tiny_modat()


def test_modat_is_avsegformer_with_its_own_generator_and_mixer(model):
    assert isinstance(model, MoDAT) and isinstance(model, AVSegFormer)
    assert isinstance(model.query_generator, EncoderDecoderQueryGenerator)
    assert isinstance(model.mixer, DualAttentionMixer)


def test_training_returns_the_balance_loss_over_every_frame(model):
    model.train()
    seen = []
    hook = model.mixer.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        losses = model(clips(annotated_first_only=True))
        assert set(losses) == {"loss_mask", "loss_mix", "loss_balance"}
        assert losses["loss_balance"].dim() == 0 and losses["loss_balance"] > 0
        sum(losses.values()).backward()
        for layer in (model.mixer.channel_attn, model.mixer.spatial_attn):
            assert layer.gate.proj.weight.grad.abs().sum() > 0
        assert model.query_generator.early_fusion.layers[0].linear1.weight.grad.abs().sum() > 0
        # With BALANCE_LOSS_ALL_FRAMES False only the 2 annotated frames run.
        model.balance_loss_all_frames = False
        with torch.no_grad():
            model(clips(annotated_first_only=True))
    finally:
        model.balance_loss_all_frames = True
        hook.remove()
        model.zero_grad()
    assert seen == [6, 2]


def test_avss_loss_as_released_by_default():
    cfg = tiny_avsegformer_cfg(71)
    assert MoDAT.from_config(cfg)["criterion"].double_main_loss
    cfg.MODEL.MODAT.AVSS_LOSS_AS_RELEASED = False
    assert not MoDAT.from_config(cfg)["criterion"].double_main_loss
    assert not MoDAT.from_config(tiny_avsegformer_cfg(1))["criterion"].double_main_loss


def test_random_inference_draws_two_tensors_per_forward_from_the_global_generator(model):
    model.eval()
    batch = clips(num_clips=1, frames=2)
    with torch.no_grad():
        torch.manual_seed(5)
        first = model(batch)[0]["sem_seg"]
        after = torch.rand(4)
        torch.manual_seed(5)
        again = model(batch)[0]["sem_seg"]
        other = model(batch)[0]["sem_seg"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # N = 2 frames, 16 x 16 mask-feature pixels: one [2, 256] draw per MoE layer, nothing else.
    torch.manual_seed(5)
    torch.rand(2, 256)
    torch.rand(2, 256)
    assert torch.equal(torch.rand(4), after)


def test_padded_frames_run_for_the_draws_and_get_zero_outputs(model):
    model.eval()
    batch = clips(num_clips=1, frames=3)
    batch[0]["frame_valid"] = torch.tensor([True, False, False])
    with torch.no_grad():
        torch.manual_seed(5)
        probs = model(batch)[0]["sem_seg"]
        after = torch.rand(1)
    torch.manual_seed(5)
    torch.rand(3, 256)
    torch.rand(3, 256)
    assert torch.equal(torch.rand(1), after), "the draws cover the padded frames too"
    assert (probs[1:] == 0.5).all(), "zero logits on padded frames"


def test_deterministic_inference_policy_draws_nothing():
    model = tiny_modat(SECOND_POLICY_EVAL="threshold").eval()
    assert model.mixer.channel_attn.gate.second_policy[False] == "threshold"
    batch = clips(num_clips=1, frames=2)
    with torch.no_grad():
        state = torch.random.get_rng_state()
        first = model(batch)[0]["sem_seg"]
        assert torch.equal(torch.random.get_rng_state(), state)
        second = model(batch)[0]["sem_seg"]
    assert torch.equal(first, second)
