"""MoDAT's mixture-of-experts layers and CSA mixer against the original code's outputs.

Fixtures: ``<repo>/../shared/reference/modat/fixtures/{moe,csa}.pt``; tolerances from their
README. Routing decisions are compared exactly.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import load_fixture
from torch.testing import assert_close

from avsegformer.checkpoint import convert_modat_mixer
from avsegformer.modeling.moe import (
    ChannelExpert,
    DualAttentionMixer,
    MixtureOfExperts,
    SpatialExpert,
    Top2Gating,
    expert_capacity,
)

ROUTING = ("expert_1", "expert_2", "second_kept_by_policy", "kept_1", "kept_2", "slot_1", "slot_2")


@pytest.fixture(scope="module")
def moe_fixture():
    return load_fixture("modat/fixtures/moe.pt")


@pytest.fixture(scope="module")
def csa_fixture():
    return load_fixture("modat/fixtures/csa.pt")


def build_csa(state_dict) -> DualAttentionMixer:
    csa = DualAttentionMixer()
    csa.load_state_dict(convert_modat_mixer(state_dict), strict=True)
    return csa.eval()


def csa_from_moe_fixture(fx) -> DualAttentionMixer:
    """The fixture holds only the MoE entries; the blending convs are not used by these cases."""
    csa = DualAttentionMixer()
    state = dict(convert_modat_mixer(fx["state_dict"]))
    state.update({k: v for k, v in csa.state_dict().items() if k.startswith("gate_")})
    csa.load_state_dict(state, strict=True)
    return csa.eval()


@pytest.mark.parametrize(
    "name", ["channel_eval", "spatial_eval", "channel_train_gate", "channel_min_capacity"]
)
def test_moe_layer_matches_reference(moe_fixture, name):
    fx = moe_fixture
    case = fx["cases"][name]
    moe: MixtureOfExperts = getattr(csa_from_moe_fixture(fx), case["module"])
    if case["mode"] == "train_gate":
        moe.gate.train()
    x = fx["inputs"][case["input"]]
    ref = case["intermediates"]
    assert (
        expert_capacity(x.shape[-2] * x.shape[-1], 16, 1.0 if moe.gate.training else 2.0)
        == (ref["capacity"])
    )
    torch.manual_seed(case["moe_seed"])
    with torch.no_grad():
        out, loss, routing = moe(x, fx["inputs"]["audio_feat"], return_routing=True)
    torch.manual_seed(case["moe_seed"])
    assert torch.equal(
        torch.rand(x.shape[0], ref["num_tokens"]), ref["second_expert_uniform_draws"]
    )

    assert routing.capacity == ref["capacity"]
    for key in ROUTING:
        assert torch.equal(getattr(routing, key), ref[key]), key
    assert_close(routing.raw_gates, ref["raw_gates"], rtol=1e-4, atol=1e-6)
    assert_close(routing.gate_1, ref["gate_1_normalised"], rtol=1e-4, atol=1e-6)
    assert_close(routing.gate_2, ref["gate_2_normalised"], rtol=1e-4, atol=1e-6)
    assert_close(routing.weight_1, ref["combine_weight_1"], rtol=1e-4, atol=1e-6)
    assert_close(routing.weight_2, ref["combine_weight_2"], rtol=1e-4, atol=1e-6)
    assert_close(routing.density_1, ref["density_1"], rtol=0, atol=1e-7)
    assert_close(routing.density_1_proxy, ref["density_1_proxy"], rtol=1e-5, atol=1e-7)
    assert_close(routing.balance_loss, ref["loss_unscaled"], rtol=1e-5, atol=1e-5)
    assert_close(loss, case["outputs"]["loss"], rtol=0, atol=1e-6)
    atol = 3e-5 if name == "channel_train_gate" else 2e-5
    assert_close(out, case["outputs"]["out"], rtol=1e-4, atol=atol)
    # A pixel with no kept assignment is exactly zero (no residual).
    unrouted = ~(routing.kept_1 | routing.kept_2)
    assert unrouted.any()
    assert (out.flatten(2).transpose(1, 2)[unrouted] == 0).all()


def test_moe_expert_outputs_match_reference(moe_fixture):
    fx = moe_fixture
    csa = csa_from_moe_fixture(fx)
    audio = fx["inputs"]["audio_feat"]
    channel = fx["cases"]["channel_eval"]
    torch.manual_seed(channel["moe_seed"])
    with torch.no_grad():
        _, _, routing = csa.channel_attn(fx["inputs"]["x"], audio, return_routing=True)
        tokens = fx["tokens_x_plus_pe"]["x"]
        # Rebuild each expert's slots from the routing (zero where unfilled).
        for e, expert in enumerate(csa.channel_attn.experts):
            slots = torch.zeros(2, routing.capacity, 256)
            for choice in (1, 2):
                experts, slot = (
                    getattr(routing, f"expert_{choice}"),
                    getattr(routing, f"slot_{choice}"),
                )
                frames, positions = ((experts == e) & (slot >= 0)).nonzero(as_tuple=True)
                slots[frames, slot[frames, positions]] = tokens[frames, positions]
            logits = expert.token_gate_logits(slots, audio)[:, 0]
            assert_close(
                logits,
                channel["intermediates"]["channel_expert_gate_logits"][e],
                rtol=1e-4,
                atol=2e-5,
            )
        spatial = fx["cases"]["spatial_eval"]["intermediates"]["spatial_expert_vectors"]
        for e, expert in enumerate(csa.spatial_attn.experts):
            assert_close(
                expert(torch.zeros(2, 3, 256), audio)[:, 1], spatial[e], atol=2e-5, rtol=1e-4
            )


def test_balance_loss_gradient_matches_reference(moe_fixture):
    fx = moe_fixture
    case = fx["cases"]["channel_eval"]
    moe = csa_from_moe_fixture(fx).channel_attn
    torch.manual_seed(case["moe_seed"])
    _, loss = moe(fx["inputs"]["x"], fx["inputs"]["audio_feat"])
    loss.backward()
    # Our gate is nn.Linear ([E, dim]); the original's w_gating is its transpose.
    assert_close(moe.gate.proj.weight.grad.t(), case["grad_w_gating_of_loss"], rtol=1e-4, atol=1e-7)


def test_csa_matches_reference(csa_fixture):
    fx = csa_fixture
    csa = build_csa(fx["state_dict"])
    torch.manual_seed(fx["moe_seed"])
    with torch.no_grad():
        output, loss = csa(fx["inputs"]["x"], fx["inputs"]["audio_feat"])
    assert_close(output, fx["outputs"]["output"], rtol=1e-4, atol=2e-5)
    assert_close(loss, fx["outputs"]["loss"], rtol=0, atol=1e-6)
    # The pixels both layers dropped are exactly zero whatever the blend.
    channel_kept = fx["intermediates"]["channel_routing"]
    spatial_kept = fx["intermediates"]["spatial_routing"]
    unrouted = ~(
        channel_kept["kept_1"]
        | channel_kept["kept_2"]
        | spatial_kept["kept_1"]
        | spatial_kept["kept_2"]
    )
    assert unrouted.sum() == 27
    assert (output.flatten(2).transpose(1, 2)[unrouted] == 0).all()


def test_random_policy_draws_channel_then_spatial_from_the_global_generator(csa_fixture):
    fx = csa_fixture
    csa = build_csa(fx["state_dict"])
    x, audio = fx["inputs"]["x"], fx["inputs"]["audio_feat"]
    with torch.no_grad():
        torch.manual_seed(fx["moe_seed"])
        first, _ = csa(x, audio)
        after = torch.rand(3)
        torch.manual_seed(fx["moe_seed"])
        again, _ = csa(x, audio)
        other_seed, _ = csa(x, audio)
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed), "random policy: another draw routes differently"
    torch.manual_seed(fx["moe_seed"])
    torch.rand(2, 64)
    torch.rand(2, 64)
    assert torch.equal(torch.rand(3), after), "exactly two [N, n] draws per CSA forward"


@pytest.mark.parametrize("policy", ["threshold", "all", "none"])
def test_deterministic_second_policies_draw_nothing(policy):
    gate = Top2Gating(8, 4, second_policy_eval=policy).eval()
    tokens = torch.randn(2, 12, 8)
    state = torch.random.get_rng_state()
    routing = gate(tokens)
    assert torch.equal(torch.random.get_rng_state(), state)
    expected = {
        "threshold": routing.gate_2 > 0.2,
        "all": torch.ones(2, 12, dtype=torch.bool),
        "none": torch.zeros(2, 12, dtype=torch.bool),
    }[policy]
    assert torch.equal(routing.second_kept_by_policy, expected)
    assert not (routing.kept_2 & ~expected).any()
    with pytest.raises(ValueError, match="unknown second-expert policy"):
        Top2Gating(8, 4, second_policy_eval="sometimes")


def test_dispatch_equals_dense_one_hot_dispatch():
    torch.manual_seed(0)
    moe = MixtureOfExperts(dim=16, num_experts=4, expert_type="channel", num_heads=2).eval()
    feature_map = torch.randn(3, 16, 5, 4)
    audio = torch.randn(3, 1, 16)
    torch.manual_seed(1)
    out, _, routing = moe(feature_map, audio, return_routing=True)
    tokens = (feature_map + moe.pe_layer(feature_map)).flatten(2).transpose(1, 2)
    capacity = routing.capacity
    combine = torch.zeros(3, 20, 4, capacity)
    for choice in (1, 2):
        weight = getattr(routing, f"weight_{choice}")
        slot = getattr(routing, f"slot_{choice}").clamp(min=0)
        one_hot = (
            F.one_hot(getattr(routing, f"expert_{choice}"), 4)[..., None]
            * F.one_hot(slot, capacity)[..., None, :]
        )
        combine += weight[..., None, None] * one_hot
    dispatch = (combine != 0).float()
    expert_in = torch.einsum("bnd,bnes->besd", tokens, dispatch)
    expert_out = torch.stack([moe.experts[e](expert_in[:, e], audio) for e in range(4)], 1)
    dense = torch.einsum("besd,bnes->bnd", expert_out, combine)
    assert_close(out.flatten(2).transpose(1, 2), dense, rtol=1e-5, atol=1e-6)


def test_single_frame_and_training_mode_run():
    torch.manual_seed(0)
    csa = DualAttentionMixer(dim=16, num_experts=4, num_heads=2)
    x = torch.rand(1, 16, 6, 6, requires_grad=True)
    out, loss = csa(x, torch.randn(1, 3, 16))
    (out.sum() + loss).backward()
    assert out.shape == (1, 16, 6, 6) and loss.shape == ()
    assert x.grad is not None and csa.channel_attn.gate.proj.weight.grad.abs().sum() > 0
    csa.eval()
    assert isinstance(csa.channel_attn.experts[0], ChannelExpert)
    assert isinstance(csa.spatial_attn.experts[0], SpatialExpert)
    assert csa(x[:1], torch.randn(1, 3, 16))[0].shape == (1, 16, 6, 6)


def test_parameter_counts_match_the_original():
    csa = DualAttentionMixer()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(csa.channel_attn) == 4_202_496
    assert count(csa.spatial_attn) == 4_198_400
    assert count(csa) == 8_401_922
