"""FrozenAudioEmbeddings: a frozen audio backbone's embeddings computed once per example."""

import pytest
import torch
from detectron2.modeling import build_model
from helpers import tiny_avsegformer_cfg, tiny_catr_cfg, tiny_combo_cfg
from torch import nn

from avsegformer.modeling.audio_backbone import DEFAULT_CACHE_SIZE, FrozenAudioEmbeddings


class CountingBackbone(nn.Module):
    """A linear audio backbone that records how many examples it was run on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 3)
        self.examples_seen = 0

    def forward(self, x):
        self.examples_seen += x.shape[0]
        return self.proj(x.flatten(1))


def frozen_backbone():
    return CountingBackbone().requires_grad_(False)


def test_cached_embeddings_equal_the_backbone_and_skip_seen_examples():
    backbone, cache = frozen_backbone(), FrozenAudioEmbeddings()
    first = torch.randn(4, 1, 2, 3)
    second = torch.cat([first[2:], torch.randn(2, 1, 2, 3)])
    out_first = cache(backbone, first, frozen=True)
    out_second = cache(backbone, second, frozen=True)
    assert backbone.examples_seen == 6  # the two examples shared by both calls ran once
    torch.testing.assert_close(out_first, backbone.proj(first.flatten(1)), rtol=0, atol=1e-6)
    torch.testing.assert_close(out_second, backbone.proj(second.flatten(1)), rtol=0, atol=1e-6)
    assert not out_second.requires_grad


def test_changed_weights_or_mode_never_return_stale_embeddings():
    backbone, cache = frozen_backbone(), FrozenAudioEmbeddings()
    x = torch.randn(3, 1, 2, 3)
    cache(backbone, x, frozen=True)
    with torch.no_grad():
        backbone.proj.bias.add_(1.0)  # in place, as load_state_dict and optimisers write
    torch.testing.assert_close(cache(backbone, x, frozen=True), backbone.proj(x.flatten(1)))
    assert backbone.examples_seen == 6
    backbone.eval()  # entries are per mode: eval-mode examples run again
    cache(backbone, x, frozen=True)
    assert backbone.examples_seen == 9
    backbone.train()
    cache(backbone, x, frozen=True)
    assert backbone.examples_seen == 9


def test_trainable_backbone_runs_every_time_with_gradients():
    backbone, cache = CountingBackbone(), FrozenAudioEmbeddings()
    x = torch.randn(2, 1, 2, 3)
    cache(backbone, x, frozen=False)
    out = cache(backbone, x, frozen=False)
    assert backbone.examples_seen == 4 and out.requires_grad
    assert len(cache) == 0


def test_least_recently_used_entries_are_dropped():
    backbone, cache = frozen_backbone(), FrozenAudioEmbeddings(max_entries=2)
    a, b, c = torch.randn(3, 1, 1, 2, 3)
    cache(backbone, a, frozen=True)
    cache(backbone, b, frozen=True)
    cache(backbone, a, frozen=True)  # a used again: b is now the oldest
    cache(backbone, c, frozen=True)
    assert len(cache) == 2
    cache(backbone, a, frozen=True)
    assert backbone.examples_seen == 3
    cache(backbone, b, frozen=True)
    assert backbone.examples_seen == 4
    with pytest.raises(ValueError, match="EMBEDDING_CACHE_SIZE must be >= 0"):
        FrozenAudioEmbeddings(max_entries=-1)


def test_fresh_audio_every_call_keeps_the_cache_at_its_cap():
    """Noise negatives drawn every iteration: the cache cycles, it does not grow."""
    backbone, cache = frozen_backbone(), FrozenAudioEmbeddings(max_entries=5)
    clip = torch.randn(2, 1, 2, 3)
    sizes = []
    for _ in range(10):
        noise = torch.randn(2, 1, 2, 3)
        batch = torch.cat([clip, noise])
        out = cache(backbone, batch, frozen=True)
        torch.testing.assert_close(out, backbone.proj(batch.flatten(1)), rtol=0, atol=1e-6)
        sizes.append(len(cache))
    assert sizes == [4, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    # The clip's own audio, used on every call, was never evicted: 2 + 10 * 2 noise examples.
    assert backbone.examples_seen == 22
    # A batch larger than the cap is still answered whole, then trimmed to the cap.
    big = torch.randn(8, 1, 2, 3)
    torch.testing.assert_close(cache(backbone, big, frozen=True), backbone.proj(big.flatten(1)))
    assert len(cache) == 5


def test_size_zero_turns_the_cache_off():
    backbone, cache = frozen_backbone(), FrozenAudioEmbeddings(max_entries=0)
    x = torch.randn(3, 1, 2, 3)
    first = cache(backbone, x, frozen=True)
    second = cache(backbone, x, frozen=True)
    assert backbone.examples_seen == 6 and len(cache) == 0
    torch.testing.assert_close(first, backbone.proj(x.flatten(1)), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert not second.requires_grad


@pytest.mark.parametrize("make_cfg", [tiny_avsegformer_cfg, tiny_combo_cfg, tiny_catr_cfg])
def test_models_take_the_cache_size_from_the_config(make_cfg):
    cfg = make_cfg()
    assert cfg.MODEL.AUDIO.EMBEDDING_CACHE_SIZE == DEFAULT_CACHE_SIZE
    cfg.MODEL.AUDIO.EMBEDDING_CACHE_SIZE = 3
    model = build_model(cfg).eval()
    assert model.audio_embeddings.max_entries == 3
    log_mel = torch.randn(5, 1, 96, 64)
    with torch.no_grad():
        out = model.audio_embeddings(model.audio_backbone, log_mel, frozen=True)
        torch.testing.assert_close(out, model.audio_backbone(log_mel), rtol=1e-5, atol=1e-6)
    assert len(model.audio_embeddings) == 3
